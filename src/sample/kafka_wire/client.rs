//! The cluster-level client: connection pools per broker (bounded in-flight requests),
//! broker addresses, the topic metadata cache, the coordinator cache and the request
//! counters the benchmark prints.
//!
//! Caches:
//! - topic metadata (leaders, epochs, partition counts) only for the topics asked for,
//!   refreshed when older than `metadata_max_age` and invalidated on a leader error;
//! - group coordinators, kept until a response says the coordinator moved.
//!
//! No std lock is held across an `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Semaphore;

use crate::config::kafka_wire::WireConfig;
use super::conn::{Call, Conn};
use super::{codes, tls, WireError};

/// Leader and epoch of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMeta {
    pub leader: i32,
    pub epoch: i32,
}

/// A topic's partitions (index = partition), or the error metadata gave for it.
pub type TopicMeta = Result<Vec<Option<PartitionMeta>>, i16>;

struct Pool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

#[derive(Default)]
struct TopicCache {
    fetched: HashMap<String, (Instant, TopicMeta)>,
}

/// One cluster.
pub struct Client {
    cfg: WireConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_in_flight: usize,
    metadata_max_age: Duration,
    bootstrap: Vec<Arc<Pool>>,
    brokers: Mutex<BTreeMap<i32, Arc<Pool>>>,
    coordinators: Mutex<HashMap<String, i32>>,
    topics: Mutex<TopicCache>,
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("bootstrap", &self.cfg.bootstrap).finish_non_exhaustive()
    }
}

/// A poisoned lock only means another task panicked mid-update of a cache; the data
/// is still a valid cache (at worst stale), so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// Prepares the client (TLS configuration read here); connects lazily.
    pub fn new(cfg: WireConfig, max_in_flight: usize, metadata_max_age: Duration) -> Result<Self, WireError> {
        let tls = cfg.tls.as_ref().map(tls::client_config).transpose()?;
        let max_in_flight = max_in_flight.max(1);
        let bootstrap = cfg.bootstrap.iter().map(|a| Arc::new(Pool::new(a.clone(), max_in_flight))).collect();
        Ok(Client {
            cfg,
            tls,
            max_in_flight,
            metadata_max_age,
            bootstrap,
            brokers: Mutex::new(BTreeMap::new()),
            coordinators: Mutex::new(HashMap::new()),
            topics: Mutex::new(TopicCache::default()),
            counts: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Requests sent so far, by API name.
    pub fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.counts).clone()
    }

    fn count(&self, api: &'static str) {
        *lock(&self.counts).entry(api).or_default() += 1;
    }

    /// Known broker ids (from the last metadata).
    pub fn broker_ids(&self) -> Vec<i32> {
        lock(&self.brokers).keys().copied().collect()
    }

    /// Records a broker's address (from metadata or a coordinator answer).
    pub fn learn_broker(&self, id: i32, host: &str, port: i32) {
        let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let mut b = lock(&self.brokers);
        if b.get(&id).is_none_or(|p| p.addr != addr) {
            b.insert(id, Arc::new(Pool::new(addr, self.max_in_flight)));
        }
    }

    /// Sends `req` to broker `node`, with a version in `min..=max`.
    pub async fn call<R: Call>(&self, node: i32, req: &R, min: i16, max: i16, deadline: Instant) -> Result<R::Response, WireError> {
        let pool = lock(&self.brokers).get(&node).cloned().ok_or(WireError::UnknownBroker(node))?;
        self.call_pool(&pool, req, min, max, deadline).await
    }

    /// Sends `req` to the first broker that answers: known brokers, then bootstrap.
    pub async fn call_any<R: Call>(&self, req: &R, min: i16, max: i16, deadline: Instant) -> Result<R::Response, WireError> {
        let mut pools: Vec<Arc<Pool>> = lock(&self.brokers).values().cloned().collect();
        pools.extend(self.bootstrap.iter().cloned());
        let mut last = WireError::Transport { broker: self.cfg.bootstrap.join(","), message: "no broker to ask".into() };
        for pool in pools {
            match self.call_pool(&pool, req, min, max, deadline).await {
                Ok(r) => return Ok(r),
                Err(e @ (WireError::Transport { .. } | WireError::Auth { .. } | WireError::Tls(_))) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn call_pool<R: Call>(&self, pool: &Pool, req: &R, min: i16, max: i16, deadline: Instant) -> Result<R::Response, WireError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let work = async {
            let _permit = pool.permits.acquire().await.map_err(|_| WireError::Transport { broker: pool.addr.clone(), message: "pool closed".into() })?;
            // A pooled connection may have been closed by the broker since (restart,
            // idle timeout): one retry on a fresh connection.
            for attempt in 0..2 {
                let pooled = lock(&pool.idle).pop();
                let reused = pooled.is_some();
                let mut conn = match pooled {
                    Some(c) => c,
                    None => Conn::connect(&pool.addr, &self.cfg, self.tls.as_ref(), &|api| self.count(api)).await?,
                };
                let v = match conn.version(R::KEY, R::NAME, min, max) {
                    Ok(v) => v,
                    Err(e) => {
                        lock(&pool.idle).push(conn);
                        return Err(e);
                    }
                };
                self.count(R::NAME);
                match conn.call(req, v).await {
                    Ok(resp) => {
                        lock(&pool.idle).push(conn);
                        return Ok(resp);
                    }
                    Err(WireError::Transport { .. }) if reused && attempt == 0 => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(WireError::Transport { broker: pool.addr.clone(), message: "connection lost twice".into() })
        };
        tokio::time::timeout(budget, work).await.map_err(|_| WireError::Timeout { op: R::NAME, timeout: budget })?
    }

    /// Metadata of `topics` (cached; fetched when missing or older than the max age),
    /// and the brokers. Never asks for topics nobody named.
    pub async fn topics(&self, topics: &BTreeSet<String>, deadline: Instant) -> Result<HashMap<String, TopicMeta>, WireError> {
        let now = Instant::now();
        let missing: Vec<String> = {
            let c = lock(&self.topics);
            topics
                .iter()
                .filter(|t| c.fetched.get(*t).is_none_or(|(at, _)| now.duration_since(*at) > self.metadata_max_age))
                .cloned()
                .collect()
        };
        if !missing.is_empty() || lock(&self.brokers).is_empty() {
            let resp = self.metadata(Some(&missing), deadline).await?;
            let mut c = lock(&self.topics);
            for t in resp.topics {
                let Some(name) = t.name else { continue };
                let meta: TopicMeta = if t.error_code != codes::NONE {
                    Err(t.error_code)
                } else {
                    // A topic of n partitions numbers them 0..n: an index outside is
                    // ignored, never used to size anything.
                    let mut parts = vec![None; t.partitions.len()];
                    for p in &t.partitions {
                        if let Some(slot) = usize::try_from(p.partition_index).ok().and_then(|i| parts.get_mut(i)) {
                            *slot = (p.error_code == codes::NONE || p.leader_id.0 >= 0).then_some(PartitionMeta { leader: p.leader_id.0, epoch: p.leader_epoch });
                        }
                    }
                    Ok(parts)
                };
                c.fetched.insert(name.0.to_string(), (now, meta));
            }
            // Bounded by what is still asked for: forget topics no group consumes any more.
            c.fetched.retain(|t, _| topics.contains(t));
        }
        let c = lock(&self.topics);
        Ok(topics.iter().filter_map(|t| c.fetched.get(t).map(|(_, m)| (t.clone(), m.clone()))).collect())
    }

    /// Forgets cached metadata of these topics (a leader moved).
    pub fn invalidate_topics<'a>(&self, topics: impl IntoIterator<Item = &'a str>) {
        let mut c = lock(&self.topics);
        for t in topics {
            c.fetched.remove(t);
        }
    }

    /// Fetches metadata for `topics` (`Some(&[])`: brokers only) and learns the brokers.
    pub async fn metadata(&self, topics: Option<&[String]>, deadline: Instant) -> Result<MetadataResponse, WireError> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut r = MetadataRequestTopic::default();
                    r.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    r
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let resp = self.call_any(&req, 4, 12, deadline).await?;
        // The brokers are exactly those of the answer: a removed broker is forgotten (its
        // pool dropped), so ListGroups never keeps asking a broker that is gone.
        let ids: BTreeSet<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
        lock(&self.brokers).retain(|id, _| ids.contains(id));
        for b in &resp.brokers {
            self.learn_broker(b.node_id.0, b.host.as_str(), b.port);
        }
        Ok(resp)
    }

    /// The cached coordinator of `group`.
    pub fn coordinator(&self, group: &str) -> Option<i32> {
        lock(&self.coordinators).get(group).copied()
    }

    pub fn set_coordinator(&self, group: &str, node: i32) {
        lock(&self.coordinators).insert(group.to_string(), node);
    }

    pub fn forget_coordinator(&self, group: &str) {
        lock(&self.coordinators).remove(group);
    }

    /// Keeps the coordinator cache bounded by the groups that still exist.
    pub fn retain_coordinators(&self, groups: &BTreeSet<&str>) {
        lock(&self.coordinators).retain(|g, _| groups.contains(g.as_str()));
    }
}

impl Pool {
    fn new(addr: String, max_in_flight: usize) -> Self {
        Pool { addr, idle: Mutex::new(Vec::new()), permits: Semaphore::new(max_in_flight) }
    }
}
