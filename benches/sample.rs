//! One full Kafka lag sample at scale, against the real broker of `stack/up`:
//! G groups × P partitions, for each G the sample's wall time, agent CPU-s, broker CPU-s,
//! peak RSS and requests by API, next to the floor (the fewest requests possible with the
//! same client: `ListGroups`, batched `OffsetFetch`, one `ListOffsets` per leader), the
//! ratio to the floor, and the slope (cost per group). Min/median over `--runs` runs.
//!
//! ```text
//! eval "$(stack/env)"
//! cargo bench --bench sample                                  # G = 1000, 5000, 20000
//! cargo bench --bench sample -- --groups 200,1000 --runs 3    # a quick run
//! cargo bench --bench sample -- --librdkafka 5000             # also time librdkafka, G ≤ 5000
//! cargo bench --bench sample -- --active 200                  # 200 groups with a member (default 100)
//! ```
//!
//! Setup is idempotent and reused between runs: topics `sg-bench-t0..t9` (P partitions,
//! 100 records each) and groups `sg-bench-<G>-<i>` whose offsets (50 on every partition
//! of topic i % 10) are committed once from a non-member, as Empty groups. Groups of
//! other sizes stay on the broker, so `ListGroups` returns all of them: the listed count
//! is printed.
//!
//! Besides the G Empty groups, each size samples `--active` classic groups that have a
//! member (`sg-bench-<G>-active-<pid>-<i>`, joined with JoinGroup/SyncGroup by this
//! process, session timeout 5 min, so no heartbeat costs CPU while measuring): a cold
//! sample describes them, a warm one reuses their cached descriptions (the
//! `DescribeGroups` count per warm sample shows it).
//!
//! Each run samples twice with a new sampler: `cold` (connections, coordinators and
//! metadata to find) and `warm` (an agent's steady cycle). The broker's pid is read from
//! `$STACK_DIR/kafka/kafka.pid`; CPU from `/proc/<pid>/stat`; the peak RSS is reset
//! before each measurement through `/proc/self/clear_refs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use streamguard::config::kafka_wire::WireConfig;
use streamguard::config::{ClusterConfig, DlqConfig};
use streamguard::sample::kafka::KafkaSampler;
use streamguard::sample::kafka_admin::TopicPartition;
use streamguard::sample::kafka_wire::client::Client;
use streamguard::sample::kafka_wire::{groups, offsets};

const TOPICS: usize = 10;
const RECORDS: usize = 100;
const COMMITTED: i64 = 50;

struct Args {
    groups: Vec<usize>,
    partitions: usize,
    runs: usize,
    /// Also time the librdkafka path, for G up to this.
    librdkafka: usize,
    /// Classic groups with a member, sampled with each size.
    active: usize,
}

fn args() -> Args {
    let mut a = Args { groups: vec![1000, 5000, 20000], partitions: 10, runs: 3, librdkafka: 0, active: 100 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--groups" => a.groups = it.next().unwrap_or_default().split(',').filter_map(|g| g.trim().parse().ok()).collect(),
            "--partitions" => a.partitions = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.partitions),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.runs).max(1),
            "--active" => a.active = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.active),
            "--librdkafka" => a.librdkafka = it.next().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// user + system CPU seconds of a process, from /proc/<pid>/stat (clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn reset_peak_rss() {
    // Writing 5 resets VmHWM to the current RSS (Linux 4.0+).
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("bench: cannot reset the peak RSS ({e}); peak values include setup");
    }
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

fn broker_pid() -> String {
    if let Ok(p) = std::env::var("BENCH_BROKER_PID") {
        return p;
    }
    let dir = std::env::var("STACK_DIR").unwrap_or_else(|_| format!("{}/stack/.run", env!("CARGO_MANIFEST_DIR")));
    std::fs::read_to_string(format!("{dir}/kafka/kafka.pid")).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// One measurement.
#[derive(Default, Clone)]
struct M {
    wall: f64,
    cpu: f64,
    broker: f64,
    rss: f64,
    requests: BTreeMap<&'static str, u64>,
}

fn measure<T>(broker: &str, f: impl FnOnce() -> T) -> (M, T) {
    reset_peak_rss();
    let (c0, b0, t0) = (cpu_seconds("self"), cpu_seconds(broker), Instant::now());
    let out = f();
    let m = M { wall: t0.elapsed().as_secs_f64(), cpu: cpu_seconds("self") - c0, broker: cpu_seconds(broker) - b0, rss: peak_rss_mb(), requests: BTreeMap::new() };
    (m, out)
}

fn diff(after: &BTreeMap<&'static str, u64>, before: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    after.iter().map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

fn cluster(bootstrap: &str, sampler: &str, g: usize) -> ClusterConfig {
    // This size's groups, and the groups with a member this process joined (not those
    // an earlier run joined, which stay members until their session times out).
    let pid = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let body = format!(
        "[[clusters]]\nname = \"bench\"\nbootstrap_servers = \"{bootstrap}\"\nsampler = \"{sampler}\"\nprobe_budget = 0\nsample_interval = \"60s\"\nsample_timeout = \"60s\"\n[clusters.groups]\ninclude = [\"^sg-bench-{g}-([0-9]{{5}}|active-{pid}-[0-9]+)$\"]\n"
    );
    let path = dir.path().join("streamguard.toml");
    std::fs::write(&path, body).expect("write config");
    let mut c = streamguard::config::load(&path).unwrap_or_else(|e| panic!("bench config: {e}"));
    c.clusters.remove(0)
}

fn setup_topics(rt: &tokio::runtime::Runtime, bootstrap: &str, partitions: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin");
    let md = admin.inner().fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
    let have: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    let names: Vec<String> = (0..TOPICS).map(|k| format!("sg-bench-t{k}")).filter(|t| !have.contains(t)).collect();
    if names.is_empty() {
        return;
    }
    eprintln!("bench: creating {} topics × {partitions} partitions", names.len());
    let new: Vec<NewTopic> = names.iter().map(|t| NewTopic::new(t, partitions as i32, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in rt.block_on(admin.create_topics(&new, &opts)).expect("create_topics") {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create().expect("producer");
    for t in &names {
        for p in 0..partitions {
            for i in 0..RECORDS {
                let payload = format!("{i}");
                while let Err((e, _)) = producer.send(BaseRecord::<(), str>::to(t).partition(p as i32).payload(&payload)) {
                    assert!(matches!(e, rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)), "{e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Coordinators of `names`, asking again for a while those not available yet (a fresh
/// broker creates `__consumer_offsets` on the first look-up).
fn coordinators(rt: &tokio::runtime::Runtime, client: &Client, names: &[&str]) -> std::collections::HashMap<String, i32> {
    let mut found = std::collections::HashMap::new();
    for _ in 0..30 {
        let todo: Vec<&str> = names.iter().copied().filter(|n| !found.contains_key(*n)).collect();
        if todo.is_empty() {
            break;
        }
        for (g, r) in rt.block_on(groups::coordinators(client, &todo, Instant::now() + Duration::from_secs(30))) {
            if let Ok(node) = r {
                found.insert(g, node);
            }
        }
        if found.len() < names.len() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    assert_eq!(found.len(), names.len(), "coordinators not found");
    found
}

/// Commits offsets for the groups of size `g` that do not exist yet (non-member commits).
fn setup_groups(rt: &tokio::runtime::Runtime, client: &Client, g: usize, partitions: usize) {
    let deadline = || Instant::now() + Duration::from_secs(120);
    let listed = rt.block_on(groups::list_groups(client, deadline())).expect("list groups");
    let prefix = format!("sg-bench-{g}-");
    let have: std::collections::HashSet<String> = listed.into_iter().map(|l| l.group_id).filter(|n| n.starts_with(&prefix)).collect();
    let missing: Vec<(usize, String)> = (0..g).map(|i| (i, format!("{prefix}{i:05}"))).filter(|(_, n)| !have.contains(n)).collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("bench: committing offsets for {} groups of G={g}", missing.len());
    let names: Vec<&str> = missing.iter().map(|(_, n)| n.as_str()).collect();
    let coords = coordinators(rt, client, &names);
    rt.block_on(async {
        for chunk in missing.chunks(256) {
            let calls = chunk.iter().map(|(i, name)| {
                let node = coords[name.as_str()];
                let mut topic = OffsetCommitRequestTopic::default();
                topic.name = TopicName(StrBytes::from_string(format!("sg-bench-t{}", i % TOPICS)));
                topic.partitions = (0..partitions as i32)
                    .map(|p| {
                        let mut x = OffsetCommitRequestPartition::default();
                        x.partition_index = p;
                        x.committed_offset = COMMITTED;
                        x
                    })
                    .collect();
                let mut req = OffsetCommitRequest::default();
                req.group_id = GroupId(StrBytes::from_string(name.clone()));
                req.generation_id_or_member_epoch = -1;
                req.topics = vec![topic];
                async move { client.call(node, &req, 2, 8, deadline()).await }
            });
            for r in groups::futures_join(calls).await {
                let resp = r.expect("OffsetCommit");
                for t in resp.topics {
                    for p in t.partitions {
                        assert_eq!(p.error_code, 0, "OffsetCommit error {}", p.error_code);
                    }
                }
            }
        }
    });
}

/// Joins `n` fresh classic groups as their only member (JoinGroup, then SyncGroup as the
/// leader with every partition of one bench topic), with a 5-minute session: they stay
/// Stable with one member for the size's runs without a heartbeat.
fn setup_active(rt: &tokio::runtime::Runtime, client: &Client, g: usize, n: usize, partitions: usize) {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription, JoinGroupRequest, SyncGroupRequest};
    use kafka_protocol::protocol::Encodable;
    if n == 0 {
        return;
    }
    let deadline = || Instant::now() + Duration::from_secs(60);
    let names: Vec<String> = (0..n).map(|i| format!("sg-bench-{g}-active-{}-{i:04}", std::process::id())).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let coords = coordinators(rt, client, &refs);
    let versioned = |v: i16, f: &dyn Fn(&mut bytes::BytesMut)| {
        let mut buf = bytes::BytesMut::new();
        bytes::BufMut::put_i16(&mut buf, v);
        f(&mut buf);
        buf.freeze()
    };
    rt.block_on(async {
        let calls = names.iter().enumerate().map(|(i, name)| {
            let node = coords[name.as_str()];
            let topic = format!("sg-bench-t{}", i % TOPICS);
            async move {
                let mut sub = ConsumerProtocolSubscription::default();
                sub.topics = vec![StrBytes::from_string(topic.clone())];
                let mut proto = JoinGroupRequestProtocol::default();
                proto.name = StrBytes::from_static_str("range");
                proto.metadata = versioned(0, &|b| sub.encode(b, 0).expect("subscription"));
                let mut join = JoinGroupRequest::default();
                join.group_id = GroupId(StrBytes::from_string(name.clone()));
                join.session_timeout_ms = 300_000;
                join.rebalance_timeout_ms = 60_000;
                join.protocol_type = StrBytes::from_static_str("consumer");
                join.protocols = vec![proto];
                // v4+: the first join only hands out a member id (MEMBER_ID_REQUIRED).
                let mut resp = client.call(node, &join, 5, 9, deadline()).await.expect("JoinGroup");
                if resp.error_code == 79 {
                    join.member_id = resp.member_id.clone();
                    resp = client.call(node, &join, 5, 9, deadline()).await.expect("JoinGroup");
                }
                assert_eq!(resp.error_code, 0, "JoinGroup {name}: error {}", resp.error_code);
                let mut tp = consumer_protocol_assignment::TopicPartition::default();
                tp.topic = TopicName(StrBytes::from_string(topic));
                tp.partitions = (0..partitions as i32).collect();
                let mut asg = ConsumerProtocolAssignment::default();
                asg.assigned_partitions = vec![tp];
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = resp.member_id.clone();
                a.assignment = versioned(0, &|b| asg.encode(b, 0).expect("assignment"));
                let mut sync = SyncGroupRequest::default();
                sync.group_id = GroupId(StrBytes::from_string(name.clone()));
                sync.generation_id = resp.generation_id;
                sync.member_id = resp.member_id.clone();
                sync.protocol_type = Some(StrBytes::from_static_str("consumer"));
                sync.protocol_name = Some(StrBytes::from_static_str("range"));
                sync.assignments = vec![a];
                let r = client.call(node, &sync, 3, 5, deadline()).await.expect("SyncGroup");
                assert_eq!(r.error_code, 0, "SyncGroup {name}: error {}", r.error_code);
            }
        });
        groups::futures_join(calls).await;
    });
}

/// The floor: ListGroups, batched OffsetFetch, ListOffsets (latest) per leader.
fn floor(rt: &tokio::runtime::Runtime, client: &Client, g: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    rt.block_on(async {
        let prefix = format!("sg-bench-{g}-");
        let listed = groups::list_groups(client, deadline).await.expect("list");
        let names: Vec<&str> = listed.iter().map(|l| l.group_id.as_str()).filter(|n| n.starts_with(&prefix)).collect();
        let fetched = groups::offset_fetch(client, &names, deadline).await;
        let mut parts: Vec<TopicPartition> = fetched.values().filter_map(|r| r.as_ref().ok()).flatten().map(|(tp, _)| tp.clone()).collect();
        parts.sort();
        parts.dedup();
        let n = fetched.values().filter_map(|r| r.as_ref().ok()).map(Vec::len).sum();
        offsets::latest(client, &parts, deadline).await.expect("list offsets");
        n
    })
}

fn stats(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let min = s.first().copied().unwrap_or(0.0);
    let med = if s.is_empty() { 0.0 } else if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    format!("{min:.3}/{med:.3}")
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

fn main() {
    let a = args();
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let broker = broker_pid();
    assert!(std::path::Path::new(&format!("/proc/{broker}/stat")).exists(), "broker pid {broker:?} not found: eval \"$(stack/env)\" or set BENCH_BROKER_PID");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    setup_topics(&rt, &bootstrap, a.partitions);
    let wire = WireConfig::from_properties(&bootstrap, &Default::default()).expect("wire config");
    let setup_client = Client::new(wire.clone(), 8, Duration::from_secs(60)).expect("client");
    for g in &a.groups {
        setup_groups(&rt, &setup_client, *g, a.partitions);
    }
    let listed = rt.block_on(groups::list_groups(&setup_client, Instant::now() + Duration::from_secs(60))).map(|l| l.len()).unwrap_or(0);
    let dlq = (DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());

    println!(
        "\nstreamguard sample benchmark: P = {} partitions per group, {} runs per size, {} groups with a member per size, broker lists {listed} groups",
        a.partitions, a.runs, a.active
    );
    println!("{:>6} {:>8} {:<16} {:>15} {:>15} {:>15} {:>15}  requests per sample", "groups", "series", "path", "wall s min/med", "cpu s min/med", "broker s min/med", "rss MB min/med");
    let mut slope_points: Vec<(usize, f64, f64, f64)> = Vec::new();
    for g in &a.groups {
        let g = *g;
        setup_active(&rt, &setup_client, g, a.active, a.partitions);
        let mut rows: BTreeMap<&str, Vec<M>> = BTreeMap::new();
        let mut series = 0usize;
        for _ in 0..a.runs {
            let c = cluster(&bootstrap, "direct", g);
            let s = Arc::new(KafkaSampler::new(&c).expect("sampler"));
            // As the agent runs it: on the runtime's blocking pool.
            let run = |s: &Arc<KafkaSampler>| {
                let (s, dlq) = (s.clone(), dlq.clone());
                rt.block_on(rt.spawn_blocking(move || s.sample(&dlq))).expect("join").expect("sample")
            };
            let before = s.direct_request_counts();
            let (mut cold, snap) = measure(&broker, || run(&s));
            assert_eq!(snap.groups.len(), g + a.active, "every group sampled");
            let with_members = snap.groups.iter().filter(|x| x.members == 1).count();
            assert_eq!(with_members, a.active, "the active groups have their member");
            assert!(snap.partial_errors.is_empty(), "{:?}", snap.partial_errors.first());
            series = snap.groups.iter().map(|x| x.partitions.len()).sum();
            let committed = snap.groups.iter().flat_map(|x| &x.partitions).filter(|p| p.committed_offset.is_some()).count();
            let mid = s.direct_request_counts();
            cold.requests = diff(&mid, &before);
            let (mut warm, _) = measure(&broker, || run(&s));
            warm.requests = diff(&s.direct_request_counts(), &mid);
            rows.entry("direct cold").or_default().push(cold);
            rows.entry("direct warm").or_default().push(warm);
            drop(snap);
            drop(s);

            let fc = Client::new(wire.clone(), streamguard::sample::kafka_direct::MAX_IN_FLIGHT, Duration::from_secs(60)).expect("client");
            floor(&rt, &fc, g); // connections, coordinators, metadata: as warm as the sampler's
            let before = fc.request_counts();
            let (mut fm, n) = measure(&broker, || floor(&rt, &fc, g));
            assert_eq!(n, committed, "the floor reads every committed partition");
            fm.requests = diff(&fc.request_counts(), &before);
            rows.entry("floor").or_default().push(fm);

            if g <= a.librdkafka {
                let c = cluster(&bootstrap, "librdkafka", g);
                let s = Arc::new(KafkaSampler::new(&c).expect("sampler"));
                let (s2, dlq2) = (s.clone(), dlq.clone());
                let (lm, snap) = measure(&broker, || rt.block_on(rt.spawn_blocking(move || s2.sample(&dlq2))).expect("join").expect("sample"));
                assert_eq!(snap.groups.len(), g + a.active);
                rows.entry("librdkafka").or_default().push(lm);
            }
        }
        for (path, ms) in &rows {
            let col = |f: fn(&M) -> f64| ms.iter().map(f).collect::<Vec<_>>();
            let req = ms.last().map(|m| m.requests.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")).unwrap_or_default();
            println!(
                "{g:>6} {series:>8} {path:<16} {:>15} {:>15} {:>15} {:>15}  {req}",
                stats(&col(|m| m.wall)),
                stats(&col(|m| m.cpu)),
                stats(&col(|m| m.broker)),
                stats(&col(|m| m.rss))
            );
        }
        let med = |path: &str, f: fn(&M) -> f64| median(&rows.get(path).map(|ms| ms.iter().map(f).collect::<Vec<_>>()).unwrap_or_default());
        let ratio = |x: f64, y: f64| if y > 0.0 { format!("{:.2}", x / y) } else { "-".into() };
        println!(
            "{g:>6} {series:>8} {:<16} wall ×{}  cpu ×{}  broker ×{}  (warm median / floor median)",
            "ratio to floor",
            ratio(med("direct warm", |m| m.wall), med("floor", |m| m.wall)),
            ratio(med("direct warm", |m| m.cpu), med("floor", |m| m.cpu)),
            ratio(med("direct warm", |m| m.broker), med("floor", |m| m.broker)),
        );
        slope_points.push((g, med("direct warm", |m| m.wall), med("direct warm", |m| m.cpu), med("direct warm", |m| m.broker)));
    }
    if let (Some(lo), Some(hi)) = (slope_points.first(), slope_points.last()) {
        if hi.0 > lo.0 {
            let dg = (hi.0 - lo.0) as f64;
            println!(
                "\nslope (direct warm, G {}→{}): {:.1} µs wall, {:.1} µs agent CPU, {:.1} µs broker CPU per group ({} partitions each)",
                lo.0,
                hi.0,
                (hi.1 - lo.1) / dg * 1e6,
                (hi.2 - lo.2) / dg * 1e6,
                (hi.3 - lo.3) / dg * 1e6,
                a.partitions
            );
        }
    }
}
