//! Many sources, isolated: a dead Kafka cluster, a dead Connect worker and a dead Flink
//! REST endpoint next to the real cluster never delay it; each carries its own quality.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn dead_sources_never_delay_a_live_cluster_and_each_carries_its_own_quality() {
    let b = bootstrap();
    let topic = unique("iso-topic");
    let group = unique("iso-group");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[4], None);
    consume_and_commit(&b, &group, &topic, &[1]);
    let (dead_kafka, dead_http) = (free_port(), free_port());
    let port = free_port();
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
sample_interval = "1s"
sample_timeout = "1s"
backoff_max = "4s"
groups = {{ include = ["^{group}$"] }}
[[clusters]]
name = "live"
bootstrap_servers = "{b}"
[[clusters]]
name = "dead"
bootstrap_servers = "127.0.0.1:{dead_kafka}"
[[connect]]
name = "dead-connect"
url = "http://127.0.0.1:{dead_http}"
[[flink]]
name = "dead-flink"
url = "http://127.0.0.1:{dead_http}"
"#
    );
    let agent = Agent::start_with(port, &config);
    wait_until(Duration::from_secs(20), "live cluster fresh", || {
        agent.metrics().get("streamguard_source_quality", &[("source", "live"), ("quality", "fresh")]) == Some(1.0)
    });
    let samples = || agent.metrics().get("streamguard_samples_total", &[("source", "live")]).unwrap_or(0.0);
    let (n0, t0) = (samples(), Instant::now());
    std::thread::sleep(Duration::from_secs(6));
    let per_second = (samples() - n0) / t0.elapsed().as_secs_f64();
    assert!(per_second >= 0.75, "the live cluster kept its 1 s schedule: {per_second:.2} samples/s");

    let m = agent.metrics();
    assert_eq!(m.get("streamguard_kafka_group_lag_offsets", &[("cluster", "live"), ("group", &group)]), Some(3.0));
    for dead in ["dead", "dead-connect", "dead-flink"] {
        assert_eq!(m.get("streamguard_source_up", &[("source", dead)]), Some(0.0), "{dead}");
        assert_eq!(m.get("streamguard_source_quality", &[("source", dead), ("quality", "missing")]), Some(1.0), "{dead}");
    }
    let (status, body) = agent.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("kafka dead: missing") && !body.contains("kafka live"), "{body}");
    let (_, targets) = agent.get("/api/v1/targets");
    let v: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let dead = v["sources"].as_array().unwrap().iter().find(|s| s["name"] == "dead-connect").unwrap().clone();
    assert!(dead["last_error"].as_str().unwrap().contains(&dead_http.to_string()), "{dead}");
    assert!(dead["consecutive_failures"].as_u64().unwrap() >= 1);
}
