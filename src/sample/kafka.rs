//! The Kafka source: one sample of every watched consumer group's lag on one cluster.
//!
//! Two clients can take the sample, chosen per cluster by `sampler`:
//! - **direct** ([`super::kafka_direct`], the default where it can serve): the Kafka
//!   protocol spoken directly, many groups per `OffsetFetch`, describes only for groups
//!   with members, metadata only for consumed topics;
//! - **librdkafka** (the admin API): `ListConsumerGroups`, `DescribeConsumerGroups`,
//!   `ListConsumerGroupOffsets` one group per request (librdkafka has no KIP-709) with a
//!   bounded number in flight, `ListOffsets` per leader. It serves what the direct client
//!   cannot (GSSAPI, OAUTHBEARER, properties it does not honour, brokers without
//!   `OffsetFetch` v8): with `sampler = "auto"` the switch is automatic, logged, and shown
//!   in the cluster target's detail and `streamguard_kafka_sampler_info{path}`.
//!
//! Then the exact time-lag probe ([`super::kafka_probe`], always librdkafka) runs within
//! its own, shorter budget. Both paths' answers are assembled by the same pure
//! [`super::kafka_plan::assemble`]: lag per partition is `log_end − committed`, a
//! partition with no committed offset has *no* lag (`None`), never 0, and a committed
//! offset outside the log is flagged per partition, never hidden behind a lag of 0.
//!
//! The librdkafka admin client is made only when librdkafka samples the cluster (chosen,
//! or fallen back to): on the direct path no idle admin client keeps connections, threads
//! and buffers. What only librdkafka does stays on it, made on first use: the time-lag
//! probe's consumer (it fetches records; the direct client has no `Fetch`), and the
//! offsets procedure's and remediation's own clients (they commit and alter offsets). The
//! live librdkafka clients of the sampler are counted in the snapshot
//! (`streamguard_kafka_librdkafka_clients`, the target's `librdkafka_clients`).
//!
//! This module does not schedule or decide anything: the agent loop calls
//! [`KafkaSampler::sample`] (blocking) on its interval and the store keeps the result.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use super::kafka_admin::{Admin, AdminError, GroupListing, OffsetSpec};
use super::kafka_context::{ClientEvents, ClientFault, FaultKind, KafkaContext};
use super::kafka_direct::{DirectError, DirectSampler};
use super::kafka_plan::{assemble, consumed_topics, dlq_partitions, failed_partitions, Raw};
pub use super::kafka_plan::{partitions_to_query, resolve_dlq};
use super::kafka_probe::Probe;
pub use super::kafka_snapshot::{
    build_snapshot, PARTIAL_CAUSES, offset_range, partition_lag, GroupLag, KafkaSnapshot, OffsetRange, PartitionLag, PartitionOffsets, ProbeCoverage,
    ResolvedDlq,
};
use crate::config::{ClusterConfig, DlqConfig, GroupFilter, SamplerChoice};
use crate::signal::DlqLink;

/// Why a sample failed as a whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SampleError {
    #[error("cluster {cluster}: {stage}: {source}")]
    Admin {
        cluster: String,
        /// Which step failed: `list_groups`, `describe_groups` or `list_offsets`.
        stage: &'static str,
        #[source]
        source: AdminError,
    },
    /// The client could not authenticate or complete the TLS handshake (librdkafka
    /// retries those, so the request itself only times out; the direct client reports
    /// them as such).
    #[error("cluster {cluster}: {stage}: {fault}")]
    Client {
        cluster: String,
        stage: &'static str,
        fault: ClientFault,
    },
}

impl SampleError {
    /// A bounded label value for the error counter.
    pub fn kind(&self) -> &'static str {
        match self {
            SampleError::Client { fault, .. } => fault.kind.as_str(),
            SampleError::Admin { source: AdminError::Timeout { .. }, .. } => "timeout",
            SampleError::Admin {
                source:
                    AdminError::Kafka {
                        code: rdkafka::types::RDKafkaErrorCode::OperationTimedOut | rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                        ..
                    },
                ..
            } => {
                "timeout"
            }
            SampleError::Admin { stage, .. } => stage,
        }
    }
}

/// Samples one cluster.
#[derive(Debug)]
pub struct KafkaSampler {
    cluster: String,
    /// The librdkafka admin client: made when librdkafka samples the cluster (see
    /// [`KafkaSampler::admin`]), never on the direct path.
    admin: OnceLock<Admin>,
    /// What the admin client is made from (validated by librdkafka in `new`).
    client_config: ClientConfig,
    filter: GroupFilter,
    timeout: Duration,
    offset_fetch_concurrency: usize,
    probe: Probe,
    choice: SamplerChoice,
    /// The direct client, when the configuration allows it.
    direct: Option<DirectSampler>,
    /// Why librdkafka samples this cluster (`None` while the direct client does).
    fallback: Mutex<Option<String>>,
    /// What librdkafka reported outside of results (authentication, TLS).
    events: std::sync::Arc<ClientEvents>,
    /// What it was built from (to rebuild it with rotated secrets).
    config: ClusterConfig,
}


/// librdkafka properties the sampler sets itself unless the user overrides them.
pub fn client_config(bootstrap: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "streamguard")
        // A broker outage is reported once per sample by us, not every second by librdkafka.
        .set("log.connection.close", "false")
        .set("reconnect.backoff.max.ms", "2000")
        .set_log_level(RDKafkaLogLevel::Error);
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

impl KafkaSampler {
    /// Creates the sampler and its client (no connection is made yet).
    pub fn new(cluster: &ClusterConfig) -> Result<Self, AdminError> {
        let config = client_config(&cluster.bootstrap_servers, &cluster.properties);
        let events = ClientEvents::new(&cluster.name, &config);
        // librdkafka checks every property here, without making a client (no threads,
        // no connections): a bad configuration fails now on either path.
        config.create_native_config().map_err(|e| AdminError::Client(events.scrub(&e.to_string())))?;
        let (direct, fallback) = match cluster.sampler {
            SamplerChoice::Librdkafka => (None, Some("sampler = \"librdkafka\"".to_string())),
            // `check` refused properties the direct client cannot honour; what is left
            // is a CA or client certificate that cannot be read.
            SamplerChoice::Direct => (Some(DirectSampler::new(cluster).map_err(AdminError::Client)?), None),
            SamplerChoice::Auto => match DirectSampler::new(cluster) {
                Ok(d) => (Some(d), None),
                Err(reason) => (None, Some(reason)),
            },
        };
        let path = if fallback.is_none() { "direct" } else { "librdkafka" };
        let admin = OnceLock::new();
        if fallback.is_some() {
            // librdkafka samples this cluster from the start: make its client now, so a
            // client that cannot be made fails construction as it always did.
            let made = Admin::new(&config, KafkaContext { events: events.clone() })?;
            admin.get_or_init(|| made);
        }
        // `run` logs the path at INFO (see agent.rs); `lag` keeps stderr for its errors.
        tracing::debug!(cluster = %cluster.name, path, sampler = cluster.sampler.as_str(), reason = fallback.as_deref().unwrap_or(""), "kafka sampler path");
        Ok(KafkaSampler {
            cluster: cluster.name.clone(),
            admin,
            client_config: config.clone(),
            filter: cluster.groups.clone(),
            timeout: cluster.sample_timeout,
            offset_fetch_concurrency: cluster.offset_fetch_concurrency,
            probe: Probe::new(config, cluster.probe_budget, cluster.probe_timeout, events.clone()),
            choice: cluster.sampler,
            direct,
            fallback: Mutex::new(fallback),
            events,
            config: cluster.clone(),
        })
    }

    /// After an authentication failure: re-reads the secrets that come from files or
    /// variables and, if one changed, returns a sampler built with the new values (a
    /// Kubernetes secret rotated under a running agent). `None` when nothing changed or
    /// the sources cannot be read (logged without the value).
    pub fn with_reloaded_secrets(&self) -> Option<Result<KafkaSampler, AdminError>> {
        if self.config.secret_sources.is_empty() {
            return None;
        }
        match crate::config::secrets::reread(&self.config.properties, &self.config.secret_sources) {
            Ok(Some(properties)) => {
                let mut cfg = self.config.clone();
                cfg.properties = properties;
                Some(KafkaSampler::new(&cfg))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "cannot re-read a secret");
                None
            }
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Takes one sample. Blocks for at most about the configured timeout.
    ///
    /// `dlq` is the configured DLQ matching and the links other sources discovered; the
    /// DLQ topics it resolves to are sampled too.
    pub fn sample(&self, dlq: &(DlqConfig, Vec<DlqLink>)) -> Result<KafkaSnapshot, SampleError> {
        self.drain_events();
        let started = Instant::now();
        let deadline = started + self.timeout;
        let raw = match self.direct_active() {
            Some(direct) => match direct.read_blocking(dlq, deadline) {
                Ok(raw) => raw,
                Err(DirectError::Stage { stage, source }) => return Err(self.fail(stage, source)),
                Err(DirectError::Unsupported(e)) if self.choice == SamplerChoice::Auto => {
                    let reason = format!("direct client unsupported by the brokers: {e}");
                    tracing::warn!(cluster = %self.cluster, path = "librdkafka", reason = %reason, "kafka sampler path");
                    *self.fallback.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    self.read_librdkafka(dlq, deadline)?
                }
                Err(DirectError::Unsupported(e)) => return Err(self.fail("unsupported", super::kafka_wire::to_admin(e))),
            },
            None => self.read_librdkafka(dlq, deadline)?,
        };
        // The moment the offsets were read: lag and time lag are as of now.
        let taken_at = SystemTime::now();
        let mut snapshot = assemble(&self.cluster, &raw);
        let (path, note) = self.path();
        snapshot.sampler = path;
        snapshot.sampler_note = note;
        snapshot.taken_at = taken_at;
        // The exact time-lag probe has its own budget, shorter than the sample's.
        let probe = self.probe.run(&snapshot.groups, deadline, taken_at);
        for ((tp, offset), v) in probe.values {
            snapshot.record_times.entry(tp).or_default().insert(offset, v);
        }
        for e in probe.errors {
            tracing::debug!(cluster = %self.cluster, error = %e, "time-lag probe incomplete");
            snapshot.add_partial_error(e.cause(), e.to_string());
        }
        snapshot.librdkafka_clients = Some(self.librdkafka_clients());
        snapshot.duration_seconds = started.elapsed().as_secs_f64();
        self.events.clear_fault();
        Ok(snapshot)
    }

    /// The admin client, made on first use (librdkafka samples the cluster).
    fn admin(&self) -> Result<&Admin, AdminError> {
        if let Some(a) = self.admin.get() {
            return Ok(a);
        }
        let made = Admin::new(&self.client_config, KafkaContext { events: self.events.clone() })?;
        tracing::debug!(cluster = %self.cluster, "librdkafka admin client made");
        Ok(self.admin.get_or_init(|| made))
    }

    /// librdkafka's pending log lines and errors, when its admin client exists.
    fn drain_events(&self) {
        if let Some(a) = self.admin.get() {
            a.drain_events();
        }
    }

    /// Live librdkafka clients of this sampler: the admin client and the probe's
    /// consumer, each counted once it has been made (0 on the direct path with no
    /// lagging partition to probe).
    pub fn librdkafka_clients(&self) -> u32 {
        u32::from(self.admin.get().is_some()) + u32::from(self.probe.has_consumer())
    }

    /// The direct client, unless librdkafka serves this cluster.
    fn direct_active(&self) -> Option<&DirectSampler> {
        let fell_back = self.fallback.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        self.direct.as_ref().filter(|_| !fell_back)
    }

    /// Which client samples this cluster, and why librdkafka when it does.
    pub fn path(&self) -> (&'static str, Option<String>) {
        let note = self.fallback.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (if note.is_none() && self.direct.is_some() { "direct" } else { "librdkafka" }, note)
    }

    /// Requests the direct client sent, by API name (empty on the librdkafka path).
    pub fn direct_request_counts(&self) -> BTreeMap<&'static str, u64> {
        self.direct.as_ref().map(DirectSampler::request_counts).unwrap_or_default()
    }

    /// A timeout is reported against the sample's budget, not the time that happened
    /// to be left for the call: the same failure reads the same every time.
    ///
    /// An authentication or TLS failure is reported as such: the failing call's own
    /// (the direct client's), else librdkafka's since the last success (it is the cause
    /// of whatever the request then reports, usually a timeout).
    fn fail(&self, stage: &'static str, source: AdminError) -> SampleError {
        if let AdminError::Kafka { code, message, .. } = &source {
            use rdkafka::types::RDKafkaErrorCode as C;
            let kind = match code {
                C::Authentication | C::SaslAuthenticationFailed => Some(FaultKind::Authentication),
                C::SSL => Some(FaultKind::Tls),
                _ => None,
            };
            if let Some(kind) = kind {
                let fault = ClientFault { kind, message: self.events.scrub(message) };
                return SampleError::Client { cluster: self.cluster.clone(), stage, fault };
            }
        }
        self.drain_events();
        if let Some(fault) = self.events.fault() {
            return SampleError::Client { cluster: self.cluster.clone(), stage, fault };
        }
        let source = match source {
            AdminError::Timeout { op, .. } => AdminError::Timeout { op, timeout: self.timeout },
            other => other,
        };
        SampleError::Admin { cluster: self.cluster.clone(), stage, source }
    }

    /// One sample's answers through librdkafka's admin API.
    fn read_librdkafka(&self, dlq: &(DlqConfig, Vec<DlqLink>), deadline: Instant) -> Result<Raw, SampleError> {
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let fail = |stage, source| self.fail(stage, source);
        let admin = self.admin().map_err(|e| fail("client", e))?;
        let (listings, list_errors) = admin.list_groups(left()).map_err(|e| fail("list_groups", e))?;
        // librdkafka answers ListConsumerGroups with per-broker errors and whatever the
        // other brokers listed: with the cluster down that is "no groups", with one broker
        // down it is a list missing that broker's groups. Either way the group set is
        // unknown, so the sample fails rather than report groups as gone.
        if let Some(first) = list_errors.into_iter().next() {
            return Err(fail("list_groups", first));
        }
        let listings: Vec<GroupListing> = listings.into_iter().filter(|g| self.filter.matches(&g.group_id)).collect();
        let names: Vec<String> = listings.iter().map(|g| g.group_id.clone()).collect();

        let descriptions = admin.describe_groups(&names, left()).map_err(|e| fail("describe_groups", e))?;
        let committed = admin.list_group_offsets(&names, self.offset_fetch_concurrency, left());
        let topics = admin.topics(left()).map_err(|e| fail("metadata", e))?;

        let mut wanted = partitions_to_query(&descriptions, &committed);
        let consumed = consumed_topics(&descriptions, &committed);
        let dlqs = resolve_dlq(&self.cluster, &dlq.0, &dlq.1, &consumed, &topics);
        let dlq_parts = dlq_partitions(&dlqs, &topics);
        wanted.extend(dlq_parts.iter().cloned());
        wanted.sort();
        wanted.dedup();

        let specs = [OffsetSpec::Earliest, OffsetSpec::Latest, OffsetSpec::LastStable];
        let mut offsets = admin.list_offsets(&wanted, &specs, left()).map_err(|e| fail("list_offsets", e))?;
        let failed = failed_partitions(&offsets);
        if !failed.is_empty() {
            // Stale leader metadata fails every affected partition until the cache is
            // refreshed (see Admin::topics): refresh once more, retry only those.
            if admin.topics(left()).is_ok() {
                if let Ok(retry) = admin.list_offsets(&failed, &specs, left()) {
                    for (all, again) in offsets.iter_mut().zip(retry) {
                        all.extend(again);
                    }
                }
            }
        }
        let mut specs = offsets.into_iter();
        let (starts, ends, stable) = (specs.next().unwrap_or_default(), specs.next().unwrap_or_default(), specs.next().unwrap_or_default());
        Ok(Raw { listings, descriptions, committed, dlqs, dlq_partitions: dlq_parts, starts, ends, stable })
    }
}
