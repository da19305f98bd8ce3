//! A small safe wrapper over the librdkafka admin calls that rdkafka's safe API lacks:
//! `ListConsumerGroups`, `DescribeConsumerGroups` (the only describe that sees KIP-848
//! groups), `ListConsumerGroupOffsets`, `ListOffsets` (earliest, latest, by time) and
//! `AlterConsumerGroupOffsets` (the commit of the reprocessing procedure).
//!
//! Every call follows librdkafka's documented pattern: create a private queue on the
//! client's native handle, issue the request with admin options (request timeout, an
//! opaque to tell replies apart), poll the queue for the result event, copy the typed
//! result into owned Rust values, and destroy what was created (RAII guards below).
//!
//! All calls **block** the calling thread for at most the given timeout; call them from
//! `spawn_blocking` or a dedicated thread.
//!
//! It deliberately does not interpret the results (no lag maths, no filtering): that is
//! the sampler's job, in plain Rust over the values returned here.
//!
//! # Timeouts and librdkafka's coordinator requests
//! The deadline of every call is ours (the poll loop), never librdkafka's. For the
//! coordinator-targeted calls (`DescribeConsumerGroups`, `ListConsumerGroupOffsets`)
//! librdkafka's own request timer is set to its maximum (one hour), because librdkafka
//! 2.12.1 (and its master as of this writing) aborts the process when that timer fires
//! while the request still waits for its group coordinator: the timed-out request drops
//! its reference to the once-only reply object, and when the coordinator lookup is
//! answered later, `rd_kafka_admin_coord_request` releases the lookup's reference (freeing
//! the object) and returns `__DESTROY`, whereupon `rd_kafka_coord_req_fail` delivers a
//! second release to the freed object: `rd_kafka_enq_once_del_source_return: Assertion
//! 'eonce->refcnt > 0' failed` (issue 13). A request whose owner is still alive takes the
//! safe path instead (sent, or failed with the client's destruction).
//!
//! So when one of our calls gives up while such requests are still outstanding, the
//! client is **retired**: replaced by a fresh one for the next call, and destroyed as soon
//! as no call uses it. Destroying a client fails its pending requests through the safe
//! path, and bounds what a hung broker can pile up to one call's worth of requests.
//!
//! # A consumer group handle that never joins
//! librdkafka 2.12.1 (and its master as of this writing, librdkafka issue #5040) crashes
//! with SIGSEGV when a `ListConsumerGroupOffsets` is answered `NOT_COORDINATOR` or
//! `COORDINATOR_NOT_AVAILABLE`, as a broker does while a group's coordinator moves (a
//! rolling restart, a new leader of `__consumer_offsets`, a broker resumed after a pause):
//! `rd_kafka_handle_OffsetFetch` asks the client's own consumer group handle to look for
//! a new coordinator, and a client without one (an admin client is created as a producer)
//! dereferences NULL. So the client here is created as a consumer with a `group.id` of
//! its own, [`ADMIN_GROUP_ID`]: librdkafka gives it a group handle, which only ever looks
//! up that group's coordinator (FindCoordinator, which needs Describe on the group where
//! ACLs apply). It never subscribes, so it never joins, commits or appears in any group
//! listing; the broker's answer reaches the caller as the group's typed error.
//! `tests/admin_timeouts.rs` has a proxy give that answer to the real broker's client.
//!
//! # Guarantees
//! - No call outlives its timeout by more than one poll slice (100 ms) plus, after a
//!   timeout of a coordinator call, the destruction of the retired client.
//! - librdkafka never times out a coordinator request by itself while its client lives
//!   (callers' timeouts are far below its hour: `sample_timeout` is at most 10m).
//! - Per-item errors (one group, one partition) are returned per item; only a failure of
//!   the whole request is an `Err`.
//! - Nothing borrowed from librdkafka escapes: strings and lists are copied before the
//!   owning event is destroyed.
//!
//! Longer than most files on purpose: every call is an `unsafe` block with its SAFETY
//! note next to the RAII guards it relies on; split apart, the guards and their users
//! would drift.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaType;
use super::kafka_context::{ClientEvents, KafkaContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// Errors of the admin wrapper.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    /// The client could not be created (bad librdkafka property, for example).
    #[error("cannot create Kafka client: {0}")]
    Client(String),
    /// No answer within the timeout.
    #[error("{op} timed out after {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    /// The broker or librdkafka answered with an error. The code is typed, so retry and
    /// cause decisions never depend on message text.
    #[error("{op} failed: {code:?}: {message}")]
    Kafka { op: &'static str, code: RDKafkaErrorCode, message: String },
    /// librdkafka answered without the result the call asks for.
    #[error("{op} failed: librdkafka returned no result")]
    NoResult { op: &'static str },
    /// A name handed to librdkafka contained a NUL byte.
    #[error("invalid name {0:?}: contains a NUL byte")]
    InvalidName(String),
}

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Consumer group state as reported by the group coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum GroupState {
    Unknown,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
    Empty,
}

impl GroupState {
    /// Every state, in a fixed order (used to emit one series per state).
    pub const ALL: [GroupState; 6] = [
        GroupState::Unknown,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
        GroupState::Empty,
    ];

    /// The name Kafka's own tools print.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Unknown => "Unknown",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Empty => "Empty",
        }
    }

    fn from_native(s: rd::rd_kafka_consumer_group_state_t) -> Self {
        use rd::rd_kafka_consumer_group_state_t as S;
        match s {
            S::RD_KAFKA_CONSUMER_GROUP_STATE_PREPARING_REBALANCE => GroupState::PreparingRebalance,
            S::RD_KAFKA_CONSUMER_GROUP_STATE_COMPLETING_REBALANCE => GroupState::CompletingRebalance,
            S::RD_KAFKA_CONSUMER_GROUP_STATE_STABLE => GroupState::Stable,
            S::RD_KAFKA_CONSUMER_GROUP_STATE_DEAD => GroupState::Dead,
            S::RD_KAFKA_CONSUMER_GROUP_STATE_EMPTY => GroupState::Empty,
            _ => GroupState::Unknown,
        }
    }
}

/// Which rebalance protocol a group uses: `classic` or KIP-848 `consumer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupType {
    Unknown,
    Classic,
    Consumer,
}

impl GroupType {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::Unknown => "unknown",
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }

    fn from_native(t: rd::rd_kafka_consumer_group_type_t) -> Self {
        use rd::rd_kafka_consumer_group_type_t as T;
        match t {
            T::RD_KAFKA_CONSUMER_GROUP_TYPE_CLASSIC => GroupType::Classic,
            T::RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER => GroupType::Consumer,
            _ => GroupType::Unknown,
        }
    }
}

/// One entry of `ListConsumerGroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub state: GroupState,
    pub kind: GroupType,
    pub simple: bool,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub client_id: String,
    pub consumer_id: String,
    pub host: String,
    pub assignment: Vec<TopicPartition>,
}

/// One entry of `DescribeConsumerGroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub kind: GroupType,
    pub members: Vec<Member>,
    /// Set when the coordinator answered with an error for this group only.
    pub error: Option<AdminError>,
}

/// Offsets of many partitions from one `ListOffsets` spec, each with its own outcome.
pub type PartitionOffsetMap = HashMap<TopicPartition, Result<i64, AdminError>>;

/// One partition's answer to a write (`AlterConsumerGroupOffsets`).
pub type PartitionOutcome = (TopicPartition, Result<(), AdminError>);

/// A committed offset, `None` when the group has no commit for that partition.
pub type Committed = (TopicPartition, Option<i64>);

/// Which offset `ListOffsets` should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (read_uncommitted), as `kafka-consumer-groups` and Burrow use.
    Latest,
    /// The last stable offset: the latest offset with read_committed isolation. Below
    /// the high watermark while a transaction is open.
    LastStable,
    /// The earliest offset whose record timestamp is at or after this time (Unix
    /// milliseconds, >= 0); `-1` when no such record exists (past the end).
    Timestamp(i64),
}

impl OffsetSpec {
    fn native(self) -> i64 {
        match self {
            OffsetSpec::Earliest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_EARLIEST as i64,
            OffsetSpec::Latest | OffsetSpec::LastStable => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_LATEST as i64,
            OffsetSpec::Timestamp(ms) => ms.max(0),
        }
    }

    fn isolation(self) -> rd::rd_kafka_IsolationLevel_t {
        match self {
            OffsetSpec::LastStable => rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_COMMITTED,
            _ => rd::rd_kafka_IsolationLevel_t::RD_KAFKA_ISOLATION_LEVEL_READ_UNCOMMITTED,
        }
    }
}

type Client = Arc<rdkafka::client::Client<KafkaContext>>;

/// The `group.id` of every admin client: a consumer group handle that never joins (see
/// the module documentation). `group.id` is reserved in a cluster's `properties`.
pub const ADMIN_GROUP_ID: &str = "streamguard-admin";

/// A Kafka admin connection to one cluster.
pub struct Admin {
    config: ClientConfig,
    /// Where librdkafka's log lines and errors go; a retired client's replacement gets
    /// the same.
    events: Arc<ClientEvents>,
    /// The current client; replaced (retired) after a coordinator call gave up on
    /// outstanding requests. Each call holds its own `Arc` for its whole duration, so a
    /// retired client is destroyed only after the last call using it returned.
    client: Mutex<Client>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

const POLL_SLICE: Duration = Duration::from_millis(100);

/// librdkafka's own timer for coordinator-targeted requests: its maximum, so it never
/// fires while the client lives (see the module documentation).
const COORDINATOR_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

fn create(config: &ClientConfig, context: KafkaContext) -> Result<Client, AdminError> {
    let events = context.events.clone();
    let mut config = config.clone();
    config.set("group.id", ADMIN_GROUP_ID);
    config
        .create_native_config()
        .and_then(|native| rdkafka::client::Client::new(&config, native, RDKafkaType::RD_KAFKA_CONSUMER, context))
        .map(Arc::new)
        .map_err(|e| AdminError::Client(events.scrub(&e.to_string())))
}

/// A client held for the duration of one call. Declared first in every call, so it is
/// dropped after the call's queue, options and events.
struct Handle(Client);

impl Handle {
    fn rk(&self) -> *mut rd::rd_kafka_t {
        self.0.native_ptr()
    }
}

impl Admin {
    /// Creates the client. librdkafka connects lazily, so this succeeds while the
    /// cluster is down; it fails only on bad configuration. The error never quotes a
    /// secret property value.
    pub fn new(config: &ClientConfig, context: KafkaContext) -> Result<Self, AdminError> {
        let events = context.events.clone();
        let client = create(config, context)?;
        Ok(Admin { config: config.clone(), events, client: Mutex::new(client) })
    }

    /// A client whose log lines and errors are collected under `cluster` (a client of
    /// its own, e.g. for the offsets procedure or a test).
    pub fn for_cluster(cluster: &str, config: &ClientConfig) -> Result<Self, AdminError> {
        Admin::new(config, KafkaContext { events: ClientEvents::new(cluster, config) })
    }

    /// Hands librdkafka's pending log lines and errors to the client context (see
    /// [`super::kafka_context::drain_main_queue`]).
    pub fn drain_events(&self) {
        let h = self.handle();
        // SAFETY: the handle keeps the client alive for the call.
        unsafe { super::kafka_context::drain_main_queue(h.rk(), h.0.context()) };
    }

    fn handle(&self) -> Handle {
        Handle(self.client.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Replaces `used` by a fresh client when a coordinator call gave up while requests
    /// were outstanding on it. `used` is destroyed when its last call returns.
    fn retire(&self, used: &Handle, op: &'static str, outstanding: usize) {
        let mut current = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, &used.0) {
            return; // another call retired it already
        }
        match create(&self.config, KafkaContext { events: self.events.clone() }) {
            Ok(fresh) => {
                *current = fresh;
                tracing::warn!(op, outstanding, "admin client retired after a timeout with requests outstanding");
            }
            // Not expected with a configuration that created a client before. The old
            // client stays; its abandoned requests are safe only while their coordinator
            // stays away or answers within librdkafka's hour, hence ERROR.
            Err(error) => tracing::error!(op, %error, "cannot replace the admin client after a timeout"),
        }
    }

    /// Lists every consumer group the cluster knows (classic and KIP-848).
    /// Returns the valid listings and the per-broker errors librdkafka collected.
    pub fn list_groups(&self, timeout: Duration) -> Result<(Vec<GroupListing>, Vec<AdminError>), AdminError> {
        const OP: &str = "ListConsumerGroups";
        let h = self.handle();
        let queue = Queue::new(h.rk());
        let opts = Options::new(h.rk(), rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS, timeout, 0)?;
        // SAFETY: rk, options and queue are valid for the call; librdkafka copies the options.
        unsafe { rd::rd_kafka_ListConsumerGroups(h.rk(), opts.0, queue.0) };
        let ev = queue.poll_one(OP, timeout)?;
        ev.check(OP)?;
        // SAFETY: the event is a ListConsumerGroups result (checked by type below);
        // everything read is copied before `ev` is dropped.
        unsafe {
            let res = rd::rd_kafka_event_ListConsumerGroups_result(ev.0);
            if res.is_null() {
                return Err(unexpected(OP));
            }
            let mut n = 0usize;
            let items = rd::rd_kafka_ListConsumerGroups_result_valid(res, &mut n);
            let mut listings = Vec::with_capacity(n);
            for i in 0..n {
                let g = *items.add(i);
                listings.push(GroupListing {
                    group_id: cstr(rd::rd_kafka_ConsumerGroupListing_group_id(g)),
                    state: GroupState::from_native(rd::rd_kafka_ConsumerGroupListing_state(g)),
                    kind: GroupType::from_native(rd::rd_kafka_ConsumerGroupListing_type(g)),
                    simple: rd::rd_kafka_ConsumerGroupListing_is_simple_consumer_group(g) != 0,
                });
            }
            let mut m = 0usize;
            let errs = rd::rd_kafka_ListConsumerGroups_result_errors(res, &mut m);
            let errors = (0..m).map(|i| error_from(OP, *errs.add(i))).collect();
            Ok((listings, errors))
        }
    }

    /// Describes many groups in one call (librdkafka batches per coordinator).
    pub fn describe_groups(&self, groups: &[String], timeout: Duration) -> Result<Vec<GroupDescription>, AdminError> {
        const OP: &str = "DescribeConsumerGroups";
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let names = groups
            .iter()
            .map(|g| CString::new(g.as_str()).map_err(|_| AdminError::InvalidName(g.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const std::os::raw::c_char> = names.iter().map(|c| c.as_ptr()).collect();
        let h = self.handle();
        let queue = Queue::new(h.rk());
        let opts = Options::new(h.rk(), rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS, COORDINATOR_REQUEST_TIMEOUT, 0)?;
        // SAFETY: `ptrs` points into `names`, both alive for the call; librdkafka copies them.
        unsafe { rd::rd_kafka_DescribeConsumerGroups(h.rk(), ptrs.as_mut_ptr(), ptrs.len(), opts.0, queue.0) };
        let ev = queue.poll_one(OP, timeout).inspect_err(|_| self.retire(&h, OP, groups.len()))?;
        ev.check(OP)?;
        // SAFETY: as in list_groups.
        unsafe {
            let res = rd::rd_kafka_event_DescribeConsumerGroups_result(ev.0);
            if res.is_null() {
                return Err(unexpected(OP));
            }
            let mut n = 0usize;
            let items = rd::rd_kafka_DescribeConsumerGroups_result_groups(res, &mut n);
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let d = *items.add(i);
                let err = rd::rd_kafka_ConsumerGroupDescription_error(d);
                let error = if err.is_null() { None } else { Some(error_from(OP, err)) };
                let count = rd::rd_kafka_ConsumerGroupDescription_member_count(d);
                let mut members = Vec::with_capacity(count);
                for j in 0..count {
                    let m = rd::rd_kafka_ConsumerGroupDescription_member(d, j);
                    if m.is_null() {
                        continue;
                    }
                    let a = rd::rd_kafka_MemberDescription_assignment(m);
                    let assignment = if a.is_null() {
                        Vec::new()
                    } else {
                        tpl_entries(rd::rd_kafka_MemberAssignment_partitions(a))
                            .into_iter()
                            .map(|(tp, _, _)| tp)
                            .collect()
                    };
                    members.push(Member {
                        client_id: cstr(rd::rd_kafka_MemberDescription_client_id(m)),
                        consumer_id: cstr(rd::rd_kafka_MemberDescription_consumer_id(m)),
                        host: cstr(rd::rd_kafka_MemberDescription_host(m)),
                        assignment,
                    });
                }
                out.push(GroupDescription {
                    group_id: cstr(rd::rd_kafka_ConsumerGroupDescription_group_id(d)),
                    state: GroupState::from_native(rd::rd_kafka_ConsumerGroupDescription_state(d)),
                    kind: GroupType::from_native(rd::rd_kafka_ConsumerGroupDescription_type(d)),
                    members,
                    error,
                });
            }
            Ok(out)
        }
    }

    /// Fetches the committed offsets of every partition of each group.
    ///
    /// librdkafka accepts one group per `ListConsumerGroupOffsets` request, so up to
    /// `window` requests are kept in flight on one queue and matched by opaque: one
    /// thread, bounded concurrency, no per-partition round trip. The result has one
    /// entry per requested group, in request order.
    pub fn list_group_offsets(
        &self,
        groups: &[String],
        window: usize,
        timeout: Duration,
    ) -> Vec<(String, Result<Vec<Committed>, AdminError>)> {
        const OP: &str = "ListConsumerGroupOffsets";
        let window = window.max(1);
        let mut results: Vec<Option<Result<Vec<Committed>, AdminError>>> = vec![None; groups.len()];
        let h = self.handle();
        let queue = Queue::new(h.rk());
        let deadline = Instant::now() + timeout;
        let mut next = 0usize;
        let mut in_flight = 0usize;
        loop {
            while in_flight < window && next < groups.len() {
                match issue_group_offsets(&h, &queue, &groups[next], next) {
                    Ok(()) => in_flight += 1,
                    Err(e) => results[next] = Some(Err(e)),
                }
                next += 1;
            }
            if in_flight == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = match queue.poll_one(OP, left) {
                Ok(ev) => ev,
                Err(e) => {
                    for r in results.iter_mut().filter(|r| r.is_none()) {
                        *r = Some(Err(e.clone()));
                    }
                    self.retire(&h, OP, in_flight);
                    break;
                }
            };
            in_flight -= 1;
            // SAFETY: the opaque was set to the request index (+1, never null) by
            // issue_group_offsets; the result is copied before `ev` drops.
            let idx = unsafe { rd::rd_kafka_event_opaque(ev.0) as usize }.wrapping_sub(1);
            if idx >= groups.len() {
                continue;
            }
            results[idx] = Some(ev.check(OP).and_then(|()| unsafe { read_group_offsets(&ev) }));
        }
        groups
            .iter()
            .cloned()
            .zip(results.into_iter().map(|r| r.unwrap_or_else(|| Err(unexpected(OP)))))
            .collect()
    }


    /// Every topic and its partition count, from a metadata request for all topics.
    ///
    /// This also refreshes librdkafka's cached leaders and leader epochs, which
    /// `ListOffsets` relies on: librdkafka 2.12.1 sends the cached leader epoch and does
    /// not refresh it on `FENCED_LEADER_EPOCH`, so after a broker restart every partition
    /// kept failing until something else refreshed the cache (seen against Kafka 4.1).
    pub fn topics(&self, timeout: Duration) -> Result<std::collections::BTreeMap<String, i32>, AdminError> {
        let md = self
            .handle()
            .0
            .fetch_metadata(None, timeout)
            .map_err(|e| AdminError::Kafka {
                op: "Metadata",
                code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
                message: e.to_string(),
            })?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }

    /// Earliest or latest offsets of many partitions in one call (librdkafka groups the
    /// partitions by leader and sends one request per broker). Several specs are
    /// issued concurrently on one queue.
    pub fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        specs: &[OffsetSpec],
        timeout: Duration,
    ) -> Result<Vec<PartitionOffsetMap>, AdminError> {
        const OP: &str = "ListOffsets";
        let mut out: Vec<Option<PartitionOffsetMap>> = vec![None; specs.len()];
        if partitions.is_empty() {
            return Ok(specs.iter().map(|_| HashMap::new()).collect());
        }
        let h = self.handle();
        let queue = Queue::new(h.rk());
        for (i, spec) in specs.iter().enumerate() {
            let list = TplList::new(partitions, spec.native())?;
            let opts = Options::new(h.rk(), rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS, timeout, i + 1)?;
            opts.set_isolation(spec.isolation())?;
            // SAFETY: the list and options are valid for the call and copied by librdkafka.
            unsafe { rd::rd_kafka_ListOffsets(h.rk(), list.0, opts.0, queue.0) };
        }
        let deadline = Instant::now() + timeout;
        for _ in 0..specs.len() {
            let ev = queue.poll_one(OP, deadline.saturating_duration_since(Instant::now()))?;
            ev.check(OP)?;
            // SAFETY: opaque is the spec index + 1; results are copied before `ev` drops.
            unsafe {
                let idx = (rd::rd_kafka_event_opaque(ev.0) as usize).wrapping_sub(1);
                let res = rd::rd_kafka_event_ListOffsets_result(ev.0);
                if res.is_null() || idx >= specs.len() {
                    return Err(unexpected(OP));
                }
                let mut n = 0usize;
                let infos = rd::rd_kafka_ListOffsets_result_infos(res, &mut n);
                let mut map = HashMap::with_capacity(n);
                for i in 0..n {
                    let tp = rd::rd_kafka_ListOffsetsResultInfo_topic_partition(*infos.add(i));
                    if tp.is_null() {
                        continue;
                    }
                    let (key, offset, err) = tp_entry(&*tp);
                    let value = if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        Ok(offset)
                    } else {
                        Err(code_error(OP, err))
                    };
                    map.insert(key, value);
                }
                out[idx] = Some(map);
            }
        }
        out.into_iter().map(|m| m.ok_or_else(|| unexpected(OP))).collect()
    }
}

impl Admin {
    /// Commits `offsets` for `group` as a non-member (`AlterConsumerGroupOffsets`).
    ///
    /// The broker accepts it only while the group has no members: for a group with
    /// members each partition fails (`UNKNOWN_MEMBER_ID` for a classic group), which is
    /// returned per partition, typed, never hidden. The caller must check every entry.
    /// A coordinator call: on timeout the client is retired (see the module docs), and
    /// whether the commit happened is then unknown: read the committed offsets back.
    pub fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
        timeout: Duration,
    ) -> Result<Vec<PartitionOutcome>, AdminError> {
        const OP: &str = "AlterConsumerGroupOffsets";
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let name = CString::new(group).map_err(|_| AdminError::InvalidName(group.to_string()))?;
        let list = TplList::new(&offsets.iter().map(|(tp, _)| tp.clone()).collect::<Vec<_>>(), 0)?;
        list.set_offsets(offsets.iter().map(|(_, o)| *o));
        let h = self.handle();
        let queue = Queue::new(h.rk());
        let opts = Options::new(h.rk(), rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS, COORDINATOR_REQUEST_TIMEOUT, 1)?;
        // SAFETY: name and list are alive for the call; the request object copies them and
        // is destroyed right after the call (librdkafka copies it again).
        unsafe {
            let mut req = rd::rd_kafka_AlterConsumerGroupOffsets_new(name.as_ptr(), list.0);
            rd::rd_kafka_AlterConsumerGroupOffsets(h.rk(), &mut req, 1, opts.0, queue.0);
            rd::rd_kafka_AlterConsumerGroupOffsets_destroy(req);
        }
        let ev = queue.poll_one(OP, timeout).inspect_err(|_| self.retire(&h, OP, 1))?;
        ev.check(OP)?;
        // SAFETY: the event is an AlterConsumerGroupOffsets result (checked non-null);
        // everything is copied before `ev` drops.
        unsafe {
            let res = rd::rd_kafka_event_AlterConsumerGroupOffsets_result(ev.0);
            if res.is_null() {
                return Err(unexpected(OP));
            }
            let mut n = 0usize;
            let groups = rd::rd_kafka_AlterConsumerGroupOffsets_result_groups(res, &mut n);
            Ok(tpl_entries(only_group_partitions(OP, groups, n)?)
                .into_iter()
                .map(|(tp, _, err)| {
                    let r = if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR { Ok(()) } else { Err(code_error(OP, err)) };
                    (tp, r)
                })
                .collect())
        }
    }
}

fn issue_group_offsets(h: &Handle, queue: &Queue, group: &str, idx: usize) -> Result<(), AdminError> {
    let name = CString::new(group).map_err(|_| AdminError::InvalidName(group.to_string()))?;
    let opts = Options::new(h.rk(), rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS, COORDINATOR_REQUEST_TIMEOUT, idx + 1)?;
    // SAFETY: a NULL partition list asks for every committed partition; the request
    // object is copied by librdkafka and destroyed right after the call.
    unsafe {
        let mut req = rd::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), ptr::null());
        rd::rd_kafka_ListConsumerGroupOffsets(h.rk(), &mut req, 1, opts.0, queue.0);
        rd::rd_kafka_ListConsumerGroupOffsets_destroy(req);
    }
    Ok(())
}

/// SAFETY: `ev` must hold a ListConsumerGroupOffsets result event.
unsafe fn read_group_offsets(ev: &Event) -> Result<Vec<Committed>, AdminError> {
    const OP: &str = "ListConsumerGroupOffsets";
    let res = rd::rd_kafka_event_ListConsumerGroupOffsets_result(ev.0);
    if res.is_null() {
        return Err(unexpected(OP));
    }
    let mut n = 0usize;
    let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(res, &mut n);
    Ok(tpl_entries(only_group_partitions(OP, groups, n)?)
        .into_iter()
        .map(|(tp, offset, err)| {
            // librdkafka reports "no commit" as RD_KAFKA_OFFSET_INVALID (-1001).
            let ok = err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && offset >= 0;
            (tp, ok.then_some(offset))
        })
        .collect())
}

/// The partitions of the one group result of a group-offsets call (one group per
/// request), or that group's error.
///
/// SAFETY: `groups` must point at `n` group results owned by a live result event; the
/// list returned lives as long as that event.
unsafe fn only_group_partitions(
    op: &'static str,
    groups: *mut *const rd::rd_kafka_group_result_t,
    n: usize,
) -> Result<*const rd::rd_kafka_topic_partition_list_t, AdminError> {
    if n == 0 || groups.is_null() {
        return Err(unexpected(op));
    }
    let g = *groups;
    let err = rd::rd_kafka_group_result_error(g);
    if !err.is_null() {
        return Err(error_from(op, err));
    }
    Ok(rd::rd_kafka_group_result_partitions(g))
}

/// SAFETY: `list` is null or a valid topic partition list.
unsafe fn tpl_entries(list: *const rd::rd_kafka_topic_partition_list_t) -> Vec<(TopicPartition, i64, rd::rd_kafka_resp_err_t)> {
    if list.is_null() {
        return Vec::new();
    }
    let l = &*list;
    (0..l.cnt.max(0) as usize).map(|i| tp_entry(&*l.elems.add(i))).collect()
}

/// SAFETY: `e.topic` is a valid C string.
unsafe fn tp_entry(e: &rd::rd_kafka_topic_partition_t) -> (TopicPartition, i64, rd::rd_kafka_resp_err_t) {
    (TopicPartition { topic: cstr(e.topic), partition: e.partition }, e.offset, e.err)
}

/// SAFETY: `p` is null or a valid NUL-terminated string.
unsafe fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// SAFETY: `e` is a valid rd_kafka_error_t.
unsafe fn error_from(op: &'static str, e: *const rd::rd_kafka_error_t) -> AdminError {
    AdminError::Kafka { op, code: RDKafkaErrorCode::from(rd::rd_kafka_error_code(e)), message: cstr(rd::rd_kafka_error_string(e)) }
}

fn code_error(op: &'static str, err: rd::rd_kafka_resp_err_t) -> AdminError {
    let code = RDKafkaErrorCode::from(err);
    AdminError::Kafka { op, code, message: code.to_string() }
}

fn unexpected(op: &'static str) -> AdminError {
    AdminError::NoResult { op }
}

/// An owned librdkafka queue.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Queue {
    fn new(rk: *mut rd::rd_kafka_t) -> Self {
        // SAFETY: rk is a live client handle owned by `Admin`.
        Queue(unsafe { rd::rd_kafka_queue_new(rk) })
    }

    /// Polls for the next event until `timeout` (in slices, so a long wait does not
    /// hold one long C call).
    fn poll_one(&self, op: &'static str, timeout: Duration) -> Result<Event, AdminError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(POLL_SLICE);
            // SAFETY: the queue is alive; the returned event is owned by us.
            let ev = unsafe { rd::rd_kafka_queue_poll(self.0, slice.as_millis() as i32) };
            if !ev.is_null() {
                return Ok(Event(ev));
            }
            if left.is_zero() {
                return Err(AdminError::Timeout { op, timeout });
            }
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new; librdkafka refcounts queues, so replies
        // still in flight after a timeout are discarded safely.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

/// An owned result event.
struct Event(*mut rd::rd_kafka_event_t);

impl Event {
    fn check(&self, op: &'static str) -> Result<(), AdminError> {
        // SAFETY: the event is alive.
        unsafe {
            let err = rd::rd_kafka_event_error(self.0);
            if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Ok(());
            }
            let code = RDKafkaErrorCode::from(err);
            Err(AdminError::Kafka { op, code, message: cstr(rd::rd_kafka_event_error_string(self.0)) })
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: owned event from rd_kafka_queue_poll.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

/// Owned admin options.
struct Options(*mut rd::rd_kafka_AdminOptions_t);

impl Options {
    fn new(rk: *mut rd::rd_kafka_t, op: rd::rd_kafka_admin_op_t, timeout: Duration, opaque: usize) -> Result<Self, AdminError> {
        // SAFETY: rk is alive; the error buffer is large enough and NUL-terminated.
        unsafe {
            let o = Options(rd::rd_kafka_AdminOptions_new(rk, op));
            let mut buf = [0 as std::os::raw::c_char; 256];
            let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
            let err = rd::rd_kafka_AdminOptions_set_request_timeout(o.0, ms, buf.as_mut_ptr(), buf.len());
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(AdminError::Client(cstr(buf.as_ptr())));
            }
            rd::rd_kafka_AdminOptions_set_opaque(o.0, opaque as *mut c_void);
            Ok(o)
        }
    }
}

impl Options {
    fn set_isolation(&self, level: rd::rd_kafka_IsolationLevel_t) -> Result<(), AdminError> {
        // SAFETY: the options are alive; a returned error object is owned by us.
        unsafe {
            let err = rd::rd_kafka_AdminOptions_set_isolation_level(self.0, level);
            if err.is_null() {
                return Ok(());
            }
            let e = error_from("ListOffsets", err);
            rd::rd_kafka_error_destroy(err);
            Err(e)
        }
    }
}

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) }
    }
}

/// An owned topic partition list.
struct TplList(*mut rd::rd_kafka_topic_partition_list_t);

impl TplList {
    fn new(partitions: &[TopicPartition], offset: i64) -> Result<Self, AdminError> {
        let size = i32::try_from(partitions.len()).unwrap_or(i32::MAX);
        // SAFETY: the list is created here and freed on drop; topic strings are copied.
        unsafe {
            let l = TplList(rd::rd_kafka_topic_partition_list_new(size));
            for tp in partitions {
                let topic = CString::new(tp.topic.as_str()).map_err(|_| AdminError::InvalidName(tp.topic.clone()))?;
                let e = rd::rd_kafka_topic_partition_list_add(l.0, topic.as_ptr(), tp.partition);
                (*e).offset = offset;
            }
            Ok(l)
        }
    }
}

impl TplList {
    /// Sets each entry's offset, in list order.
    fn set_offsets(&self, offsets: impl Iterator<Item = i64>) {
        // SAFETY: the list is alive and owned; at most `cnt` entries are written.
        unsafe {
            let l = &mut *self.0;
            for (i, o) in offsets.take(l.cnt.max(0) as usize).enumerate() {
                (*l.elems.add(i)).offset = o;
            }
        }
    }
}

impl Drop for TplList {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_partition_list_new.
        unsafe { rd::rd_kafka_topic_partition_list_destroy(self.0) }
    }
}
