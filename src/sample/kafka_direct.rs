//! The direct path of the Kafka source: one sample's answers read with the protocol
//! client of [`super::kafka_wire`], as the [`Raw`] both paths assemble into the same
//! snapshot.
//!
//! Per sample, on a warm cache: one `ListGroups` per broker, one `OffsetFetch` per 200
//! groups per coordinator, one describe per 100 groups that have members and no cached
//! description (an `Empty` group's listing already is its description; a `Stable`
//! group's description stands while it stays `Stable`, up to [`DESCRIBE_MAX_AGE`]), three `ListOffsets` per partition
//! leader, and `Metadata` only for topics that are new or older than the refresh age.
//!
//! It does not decide the path: `kafka::KafkaSampler` does, and falls back to librdkafka
//! on [`DirectError::Unsupported`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::kafka_admin::{AdminError, GroupType, PartitionOffsetMap, TopicPartition};
use super::kafka_plan::{consumed_topics, dlq_candidates, dlq_partitions, partitions_to_query, resolve_dlq, Raw};
use super::kafka_wire::client::Client;
use super::kafka_wire::describe_cache::DescribeCache;
use super::kafka_wire::{groups, offsets, to_admin, WireError};
use crate::config::kafka_wire::WireConfig;
use crate::config::{ClusterConfig, DlqConfig, GroupFilter};
use crate::signal::DlqLink;

/// Requests in flight per broker.
pub const MAX_IN_FLIGHT: usize = 4;
/// Topic metadata older than this is fetched again (and at once on a leader error).
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(60);
/// A `Stable` group's cached description is refreshed after between half this and this
/// (see [`super::kafka_wire::describe_cache`]): how late a rebalance that begins and
/// ends between two samples can be seen.
pub const DESCRIBE_MAX_AGE: Duration = Duration::from_secs(30);

/// Why a direct sample failed.
#[derive(Debug)]
pub enum DirectError {
    /// The cluster needs something the direct client does not speak (old broker).
    Unsupported(WireError),
    /// A step failed as a whole.
    Stage { stage: &'static str, source: AdminError },
}

/// Reads one cluster with the direct client.
pub struct DirectSampler {
    cluster: String,
    client: Client,
    filter: GroupFilter,
    /// Descriptions of settled groups from earlier samples.
    describes: Mutex<DescribeCache>,
    /// Used only when the caller runs outside any tokio runtime (the benchmark's
    /// single-threaded mode, tools); the agent calls from its blocking pool.
    runtime: OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for DirectSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSampler").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl DirectSampler {
    /// The sampler, or why the direct client cannot serve this cluster's properties.
    pub fn new(cluster: &ClusterConfig) -> Result<Self, String> {
        let cfg = WireConfig::from_properties(&cluster.bootstrap_servers, &cluster.properties).map_err(|e| e.to_string())?;
        let client = Client::new(cfg, MAX_IN_FLIGHT, METADATA_MAX_AGE).map_err(|e| e.to_string())?;
        Ok(DirectSampler { cluster: cluster.name.clone(), client, filter: cluster.groups.clone(), describes: Mutex::new(DescribeCache::default()), runtime: OnceLock::new() })
    }

    /// Requests sent since the sampler was created, by API name.
    pub fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        self.client.request_counts()
    }

    /// [`Self::read`], blocking the calling thread (call from `spawn_blocking`).
    pub fn read_blocking(&self, dlq: &(DlqConfig, Vec<DlqLink>), deadline: Instant) -> Result<Raw, DirectError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(self.read(dlq, deadline)),
            Err(_) => {
                let rt = match self.runtime.get() {
                    Some(rt) => rt,
                    None => {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| DirectError::Stage {
                            stage: "runtime",
                            source: AdminError::Client(e.to_string()),
                        })?;
                        self.runtime.get_or_init(|| rt)
                    }
                };
                rt.block_on(self.read(dlq, deadline))
            }
        }
    }

    /// One sample's answers.
    pub async fn read(&self, dlq: &(DlqConfig, Vec<DlqLink>), deadline: Instant) -> Result<Raw, DirectError> {
        let stage = |stage: &'static str| {
            move |e: WireError| match e {
                WireError::Unsupported { .. } => DirectError::Unsupported(e),
                other => DirectError::Stage { stage, source: to_admin(other) },
            }
        };
        let all = groups::list_groups(&self.client, deadline).await.map_err(stage("list_groups"))?;
        self.client.retain_coordinators(&all.iter().map(|g| g.group_id.as_str()).collect());
        let listings: Vec<_> = all.into_iter().filter(|g| self.filter.matches(&g.group_id)).collect();
        let names: Vec<&str> = listings.iter().map(|g| g.group_id.as_str()).collect();
        // An Empty group has no members to describe: its listing is its description. A
        // settled group's description from an earlier sample stands (see DescribeCache).
        let plan = {
            let mut cache = self.describes.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(&listings);
            cache.plan(&listings, Instant::now(), DESCRIBE_MAX_AGE)
        };
        let to_describe: Vec<(&str, GroupType)> = plan.describe.iter().map(|(g, k)| (g.as_str(), *k)).collect();
        let (fresh, mut fetched) =
            tokio::join!(groups::describe(&self.client, &to_describe, deadline), groups::offset_fetch(&self.client, &names, deadline));
        self.describes.lock().unwrap_or_else(|e| e.into_inner()).store(&fresh, Instant::now());
        let mut descriptions = plan.cached;
        descriptions.extend(fresh);
        let mut committed = Vec::with_capacity(listings.len());
        for g in &names {
            let r = fetched.remove(*g).unwrap_or_else(|| Err(WireError::Protocol { op: "OffsetFetch", message: "group missing".into() }));
            if let Err(e @ WireError::Unsupported { .. }) = r {
                return Err(DirectError::Unsupported(e));
            }
            committed.push((g.to_string(), r.map_err(to_admin)));
        }

        let mut wanted = partitions_to_query(&descriptions, &committed);
        let consumed = consumed_topics(&descriptions, &committed);
        let mut names: BTreeSet<String> = consumed.iter().map(|(_, t)| t.clone()).collect();
        names.extend(dlq_candidates(&self.cluster, &dlq.0, &dlq.1, &consumed));
        let meta = self.client.topics(&names, deadline).await.map_err(stage("metadata"))?;
        let topics: BTreeMap<String, i32> =
            meta.iter().filter_map(|(t, m)| m.as_ref().ok().map(|p| (t.clone(), i32::try_from(p.len()).unwrap_or(i32::MAX)))).collect();
        let dlqs = resolve_dlq(&self.cluster, &dlq.0, &dlq.1, &consumed, &topics);
        let dlq_parts = dlq_partitions(&dlqs, &topics);
        wanted.extend(dlq_parts.iter().cloned());
        wanted.sort();
        wanted.dedup();

        let [starts, ends, stable] = offsets::list_offsets(&self.client, &wanted, deadline).await.map_err(stage("list_offsets"))?;
        let admin = |m: HashMap<TopicPartition, Result<i64, WireError>>| -> PartitionOffsetMap { m.into_iter().map(|(tp, r)| (tp, r.map_err(to_admin))).collect() };
        Ok(Raw {
            listings,
            descriptions,
            committed,
            dlqs,
            dlq_partitions: dlq_parts,
            starts: admin(starts),
            ends: admin(ends),
            stable: admin(stable),
        })
    }
}
