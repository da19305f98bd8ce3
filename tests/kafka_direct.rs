//! The direct protocol client and librdkafka give the same numbers, partition by
//! partition, on the real broker of `stack/up`: empty groups, groups with a member that
//! has not committed, KIP-848 groups, an open transaction (LSO below the log end),
//! commits beyond the log end and below the log start, a DLQ topic. And the path each
//! cluster uses is visible (`/api/v1/targets`, `streamguard_kafka_sampler_info`), with an
//! automatic fallback to librdkafka for properties the direct client cannot honour.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use streamguard::config::ClusterConfig;
use streamguard::sample::kafka::{KafkaSampler, KafkaSnapshot};

/// The cluster config of `sampler` for groups matching `regex`, through the real loader.
fn cluster(bootstrap: &str, sampler: &str, regex: &str, extra: &str) -> ClusterConfig {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[[clusters]]\nname = \"local\"\nbootstrap_servers = \"{bootstrap}\"\nsampler = \"{sampler}\"\nprobe_budget = 0\nsample_timeout = \"10s\"\nsample_interval = \"10s\"\n{extra}\n[clusters.groups]\ninclude = [\"{regex}\"]\n\n[dlq]\npatterns = [\"{{topic}}.dlq\"]\n"
    );
    let path = write_config(dir.path(), &body);
    let mut c = streamguard::config::load(&path).unwrap_or_else(|e| panic!("config: {e}\n{body}"));
    c.clusters.remove(0)
}

fn sample(c: &ClusterConfig) -> KafkaSnapshot {
    let s = KafkaSampler::new(c).expect("sampler");
    let dlq = (streamguard::config::DlqConfig { patterns: vec!["{topic}.dlq".into()], topics: Vec::new() }, Vec::new());
    s.sample(&dlq).expect("sample")
}

/// Everything a user sees of a snapshot, keyed for a readable diff.
fn rows(s: &KafkaSnapshot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for g in &s.groups {
        out.insert(
            format!("group {}", g.group),
            format!("state={:?} type={:?} members={} lag={:?} uncommitted={} error={}", g.state, g.kind, g.members, g.lag_offsets, g.uncommitted_partitions, g.error.is_some()),
        );
        for p in &g.partitions {
            out.insert(
                format!("group {} {}/{}", g.group, p.topic, p.partition),
                format!(
                    "committed={:?} start={:?} end={:?} lso={:?} lag={:?} out_of_range={:?} lost={:?} client={:?}",
                    p.committed_offset, p.log_start_offset, p.log_end_offset, p.last_stable_offset, p.lag_offsets, p.out_of_range, p.lost_records, p.client_id
                ),
            );
        }
    }
    for (tp, o) in &s.partitions {
        out.insert(format!("partition {}/{}", tp.topic, tp.partition), format!("{o:?}"));
    }
    for d in &s.dlq {
        out.insert(format!("dlq {} <- {}", d.dlq_topic, d.source_topic), format!("{:?} {}", d.group, d.origin));
    }
    out
}

#[test]
fn direct_and_librdkafka_samples_agree_partition_by_partition_on_every_edge_case() {
    let b = bootstrap();
    let prefix = unique("cmp");
    let topic = format!("{prefix}-t");
    let dlq = format!("{topic}.dlq");
    let txn_topic = format!("{prefix}-txn");
    create_topic(&b, &topic, 3);
    create_topic(&b, &dlq, 2);
    create_topic(&b, &txn_topic, 1);
    produce(&b, &topic, &[10, 20, 30], None);
    produce(&b, &dlq, &[1, 0], None);
    produce(&b, &txn_topic, &[5], None);

    // Empty groups with commits: in range, beyond the log end, and (after delete_records)
    // below the log start.
    for i in 0..12 {
        commit_offsets(&b, &format!("{prefix}-empty-{i:02}"), &topic, &[(0, i), (1, 2 * i), (2, 3)]);
    }
    commit_offsets(&b, &format!("{prefix}-beyond"), &topic, &[(0, 50)]);
    commit_offsets(&b, &format!("{prefix}-lost"), &topic, &[(1, 2)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(5)).unwrap();
    block_on(admin(&b).delete_records(&tpl, &rdkafka::admin::AdminOptions::new())).expect("delete_records");
    // An open transaction: LSO 5, log end 8.
    commit_offsets(&b, &format!("{prefix}-txn-group"), &txn_topic, &[(0, 5)]);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("transactional.id", unique("cmp-txn-id"))
        .set("transaction.timeout.ms", "120000")
        .create()
        .expect("transactional producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    producer.begin_transaction().expect("begin");
    for i in 0..3 {
        producer.send(BaseRecord::<(), str>::to(&txn_topic).partition(0).payload(&format!("open-{i}"))).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    // Members that have not committed: a classic group and a KIP-848 group.
    let classic = format!("{prefix}-classic");
    let kip848 = format!("{prefix}-kip848");
    let _m1 = Member::join(&b, &classic, &topic, "classic");
    let _m2 = Member::join(&b, &kip848, &topic, "consumer");

    let regex = format!("^{prefix}-");
    let direct = cluster(&b, "direct", &regex, "");
    let classic_lib = cluster(&b, "librdkafka", &regex, "");
    let stable = |s: &KafkaSnapshot, g: &str| s.groups.iter().any(|x| x.group == g && x.members == 1 && x.partitions.iter().any(|p| p.client_id.is_some()));
    wait_until(Duration::from_secs(60), "both members assigned", || {
        let s = sample(&classic_lib);
        stable(&s, &classic) && stable(&s, &kip848)
    });

    // Offsets do not move while both sample; compare, retrying only if a member's
    // rebalance happened in between.
    let mut last = None;
    for _ in 0..5 {
        let a = rows(&sample(&direct));
        let c = rows(&sample(&classic_lib));
        if a == c {
            last = None;
            // What was compared covers every case (a trivially empty sample cannot pass).
            assert_eq!(a.keys().filter(|k| k.starts_with("group ") && !k.contains('/')).count(), 17, "{a:#?}");
            let g = |k: &str| a.get(&format!("group {prefix}-{k}")).cloned().unwrap_or_default();
            assert!(g("kip848").contains("type=Consumer members=1"), "{}", g("kip848"));
            assert!(g("classic").contains("type=Classic members=1") && g("classic").contains("uncommitted=3"), "{}", g("classic"));
            assert!(g(&format!("beyond {topic}/0")).contains("out_of_range=Some(true)"), "{a:#?}");
            assert!(g(&format!("lost {topic}/1")).contains("lost=Some(3)"), "{a:#?}");
            assert!(g(&format!("txn-group {txn_topic}/0")).contains("end=Some(8) lso=Some(5)"), "{a:#?}");
            assert!(a.contains_key(&format!("dlq {dlq} <- {topic}")), "{a:#?}");
            assert!(a.contains_key(&format!("partition {dlq}/1")), "DLQ partitions are sampled: {a:#?}");
            break;
        }
        last = Some((a, c));
        std::thread::sleep(Duration::from_secs(2));
    }
    if let Some((a, c)) = last {
        let diff: Vec<_> = a.iter().filter(|(k, v)| c.get(*k) != Some(v)).map(|(k, v)| format!("{k}: direct {v} / librdkafka {:?}", c.get(k))).collect();
        let only: Vec<_> = c.keys().filter(|k| !a.contains_key(*k)).collect();
        panic!("the paths disagree:\n{}\nonly in librdkafka: {only:?}", diff.join("\n"));
    }
    producer.abort_transaction(Duration::from_secs(30)).expect("abort");
}

#[test]
fn many_groups_are_fetched_in_a_few_batched_requests_not_one_per_group() {
    let b = bootstrap();
    let prefix = unique("batch");
    let topic = format!("{prefix}-t");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[5, 5], None);
    for i in 0..40 {
        commit_offsets(&b, &format!("{prefix}-{i:02}"), &topic, &[(0, 1), (1, 2)]);
    }
    let c = cluster(&b, "direct", &format!("^{prefix}-"), "");
    let s = KafkaSampler::new(&c).unwrap();
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    let snap = s.sample(&dlq).unwrap();
    assert_eq!(snap.groups.len(), 40);
    assert!(snap.groups.iter().all(|g| g.lag_offsets == Some(7)), "{:?}", snap.groups[0]);
    assert_eq!(snap.sampler, "direct");
    let n = s.direct_request_counts();
    // 40 Empty groups: one OffsetFetch, no describe, one FindCoordinator for all of them.
    assert_eq!(n.get("OffsetFetch"), Some(&1), "{n:?}");
    assert_eq!(n.get("FindCoordinator"), Some(&1), "{n:?}");
    assert_eq!(n.get("DescribeGroups"), None, "{n:?}");
    assert_eq!(n.get("ListOffsets"), Some(&3), "earliest, latest, read_committed: {n:?}");
    // A second sample reuses the coordinators and the metadata.
    s.sample(&dlq).unwrap();
    let m = s.direct_request_counts();
    assert_eq!(m.get("FindCoordinator"), Some(&1), "{m:?}");
    assert_eq!(m.get("Metadata"), n.get("Metadata"), "{m:?}");
    assert_eq!(m.get("OffsetFetch"), Some(&2), "{m:?}");
    // Connections are reused. A pool opens one only when none is idle, so the second
    // sample may add up to two, when its three ListOffsets overlap more than the first
    // sample's did (a fresh-clone CI run under load saw one more); without reuse each
    // of its five requests would open its own.
    let versions = |c: &std::collections::BTreeMap<&'static str, u64>| c.get("ApiVersions").copied().unwrap_or(0);
    let opened = versions(&m) - versions(&n);
    assert!(opened <= 2, "connections are reused: {opened} opened by the second sample: {n:?} then {m:?}");
}

#[test]
fn the_agent_says_which_path_samples_each_cluster_and_falls_back_for_properties_the_direct_client_cannot_honour() {
    let b = bootstrap();
    let group = unique("path-group");
    let topic = unique("path-topic");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[4], None);
    commit_offsets(&b, &group, &topic, &[(0, 1)]);
    for (extra, path, note) in [
        ("", "direct", None),
        // A librdkafka property the direct client does not honour.
        ("\n[clusters.properties]\n\"message.max.bytes\" = \"2000000\"\n", "librdkafka", Some("message.max.bytes")),
    ] {
        let port = free_port();
        let cfg = format!(
            "listen = \"127.0.0.1:{port}\"\nsample_interval = \"1s\"\nsample_timeout = \"1s\"\n[[clusters]]\nname = \"local\"\nbootstrap_servers = \"{b}\"\nprobe_budget = 0\n[clusters.groups]\ninclude = [\"^{group}$\"]\n{extra}"
        );
        let agent = Agent::start_with(port, &cfg);
        wait_until(Duration::from_secs(30), "group lag", || agent.metrics().get("streamguard_kafka_group_lag_offsets", &[("group", group.as_str())]) == Some(3.0));
        let m = agent.metrics();
        assert_eq!(m.get("streamguard_kafka_sampler_info", &[("cluster", "local"), ("path", path)]), Some(1.0));
        let (_, body) = agent.get("/api/v1/targets");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let cluster = v["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["targets"].as_array().into_iter().flatten())
            .find(|t| t["kind"] == "kafka_cluster")
            .cloned()
            .unwrap_or_else(|| panic!("no cluster target in {v}"));
        assert_eq!(cluster["detail"]["sampler"], path, "{cluster}");
        match note {
            None => assert!(cluster["detail"]["sampler_note"].is_null(), "{cluster}"),
            Some(n) => assert!(cluster["detail"]["sampler_note"].as_str().unwrap_or("").contains(n), "{cluster}"),
        }
        assert!(agent.log().contains(&format!("path=\"{path}\"")), "the path is logged");
    }
}

/// The stack's SASL/SCRAM + TLS listener (`stack/up kafka`, exported by `stack/env`).
fn scram_properties(mechanism: &str, password: &str) -> (String, String) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: eval \"$(stack/env)\" after stack/up kafka"));
    let bootstrap = var("KAFKA_SASL_SSL_BOOTSTRAP");
    let props = format!(
        "[clusters.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"{mechanism}\"\n\"sasl.username\" = \"{}\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n",
        var("KAFKA_SASL_USERNAME"),
        var("KAFKA_SSL_CA_LOCATION")
    );
    (bootstrap, props)
}

#[test]
fn over_sasl_scram_and_tls_both_mechanisms_give_the_same_numbers_as_librdkafka() {
    let b = bootstrap();
    let prefix = unique("scram");
    let topic = format!("{prefix}-t");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[7, 9], None);
    for i in 0..3 {
        commit_offsets(&b, &format!("{prefix}-{i}"), &topic, &[(0, i), (1, 2 * i)]);
    }
    let password = std::env::var("KAFKA_SASL_PASSWORD").expect("KAFKA_SASL_PASSWORD");
    assert!(!password.is_empty(), "KAFKA_SASL_PASSWORD is empty: stack/up kafka first");
    let regex = format!("^{prefix}-");
    for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
        let (bs, props) = scram_properties(mechanism, &password);
        let direct = cluster(&bs, "direct", &regex, &props);
        let lib = cluster(&bs, "librdkafka", &regex, &props);
        let a = sample(&direct);
        assert_eq!(a.sampler, "direct");
        assert_eq!(a.groups.len(), 3, "{mechanism}");
        assert_eq!(a.groups[2].lag_offsets, Some(5 + 5), "{mechanism}: {:?}", a.groups[2]);
        assert_eq!(rows(&a), rows(&sample(&lib)), "{mechanism}");
    }
}

#[test]
fn a_wrong_scram_password_fails_the_direct_sample_as_authentication_without_printing_the_password() {
    let (bs, props) = scram_properties("SCRAM-SHA-512", "not-the-password-4711");
    let c = cluster(&bs, "direct", "^nothing$", &props);
    let s = KafkaSampler::new(&c).expect("sampler");
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    let e = s.sample(&dlq).expect_err("a wrong password cannot sample");
    let text = format!("{e} {e:?}");
    assert!(text.contains("authentication failed") && text.contains("SaslAuthenticationFailed"), "{text}");
    assert!(!text.contains("not-the-password-4711"), "{text}");
}

#[test]
fn a_tls_listener_with_an_unknown_ca_is_refused_by_certificate_verification() {
    let password = std::env::var("KAFKA_SASL_PASSWORD").unwrap_or_default();
    let (bs, props) = scram_properties("SCRAM-SHA-512", &password);
    // The webpki roots do not know the stack's self-signed CA.
    let props: String = props.lines().filter(|l| !l.starts_with("\"ssl.ca.location\"")).map(|l| format!("{l}\n")).collect();
    let c = cluster(&bs, "direct", "^nothing$", &props);
    let s = KafkaSampler::new(&c).expect("sampler");
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    let e = s.sample(&dlq).expect_err("an unverified broker cannot be sampled");
    assert!(e.to_string().contains("UnknownIssuer") || e.to_string().contains("certificate"), "{e}");
}
