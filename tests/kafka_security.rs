//! Every security mode the stack's broker runs, sampled through both paths on the real
//! broker (`stack/up kafka`; addresses, CA, client certificate and credentials from
//! `stack/env`):
//! - SASL PLAIN over TLS (the SASL_SSL listener, `KAFKA_SASL_SSL_BOOTSTRAP`);
//! - mutual TLS (the MTLS listener, `KAFKA_MTLS_BOOTSTRAP`, `ssl.client.auth=required`,
//!   client certificate `KAFKA_SSL_CLIENT_CERT` / `KAFKA_SSL_CLIENT_KEY` signed by the
//!   stack's CA), and the same listener refusing a client without a certificate;
//! - OAUTHBEARER (Kafka's unsecured-JWS validator on the SASL_SSL listener): the direct
//!   client does not speak it, so `sampler = "auto"` falls back to librdkafka (with the
//!   reason shown) and `sampler = "direct"` is refused by the loader, as `check` refuses it.
//!
//! Each mode must give the same numbers, group by group and partition by partition, as
//! the direct client over PLAINTEXT (SCRAM is covered by `tests/kafka_direct.rs`).

mod common;

use std::collections::BTreeMap;

use common::*;
use streamguard::config::ClusterConfig;
use streamguard::sample::kafka::{KafkaSampler, KafkaSnapshot};

fn var(k: &str) -> String {
    let v = std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through scripts/test (or eval \"$(stack/env)\" after stack/up kafka)"));
    assert!(!v.is_empty(), "{k} is empty: stack/up kafka first");
    v
}

fn cluster(bootstrap: &str, sampler: &str, regex: &str, props: &str) -> Result<ClusterConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[[clusters]]\nname = \"local\"\nbootstrap_servers = \"{bootstrap}\"\nsampler = \"{sampler}\"\nprobe_budget = 0\nsample_timeout = \"10s\"\nsample_interval = \"10s\"\n[clusters.groups]\ninclude = [\"{regex}\"]\n[clusters.properties]\n{props}"
    );
    let path = write_config(dir.path(), &body);
    streamguard::config::load(&path).map(|mut c| c.clusters.remove(0)).map_err(|e| e.to_string())
}

fn sample(c: &ClusterConfig) -> KafkaSnapshot {
    let s = KafkaSampler::new(c).expect("sampler");
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    s.sample(&dlq).unwrap_or_else(|e| panic!("sample through {}: {e}", c.bootstrap_servers))
}

/// What a user sees of each group and partition.
fn rows(s: &KafkaSnapshot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for g in &s.groups {
        out.insert(format!("group {}", g.group), format!("state={:?} members={} lag={:?} error={}", g.state, g.members, g.lag_offsets, g.error.is_some()));
        for p in &g.partitions {
            out.insert(
                format!("group {} {}/{}", g.group, p.topic, p.partition),
                format!("committed={:?} start={:?} end={:?} lso={:?} lag={:?}", p.committed_offset, p.log_start_offset, p.log_end_offset, p.last_stable_offset, p.lag_offsets),
            );
        }
    }
    out
}

/// Three Empty groups with commits on a fresh two-partition topic (over PLAINTEXT), and
/// the direct PLAINTEXT sample every mode must equal. Group i lags 7-i + 9-2i.
fn groups(prefix: &str) -> (String, BTreeMap<String, String>) {
    let b = bootstrap();
    let topic = format!("{prefix}-t");
    create_topic(&b, &topic, 2);
    produce(&b, &topic, &[7, 9], None);
    for i in 0..3 {
        commit_offsets(&b, &format!("{prefix}-{i}"), &topic, &[(0, i), (1, 2 * i)]);
    }
    let regex = format!("^{prefix}-");
    let plain = sample(&cluster(&b, "direct", &regex, "").unwrap());
    assert_eq!(plain.groups.len(), 3, "{:?}", plain.groups);
    assert_eq!(plain.groups[2].lag_offsets, Some(5 + 5), "{:?}", plain.groups[2]);
    (regex, rows(&plain))
}

fn sasl_props(mechanism: &str) -> String {
    format!(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"{mechanism}\"\n\"sasl.username\" = \"{}\"\n\"sasl.password\" = \"{}\"\n\"ssl.ca.location\" = \"{}\"\n",
        var("KAFKA_SASL_USERNAME"),
        var("KAFKA_SASL_PASSWORD"),
        var("KAFKA_SSL_CA_LOCATION")
    )
}

fn mtls_props(with_cert: bool) -> String {
    let mut p = format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n", var("KAFKA_SSL_CA_LOCATION"));
    if with_cert {
        p += &format!("\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"\n", var("KAFKA_SSL_CLIENT_CERT"), var("KAFKA_SSL_CLIENT_KEY"));
    }
    p
}

#[test]
fn over_sasl_plain_and_tls_both_paths_give_the_plaintext_numbers() {
    let prefix = unique("sec-plain");
    let (regex, want) = groups(&prefix);
    let bs = var("KAFKA_SASL_SSL_BOOTSTRAP");
    for sampler in ["direct", "librdkafka"] {
        let s = sample(&cluster(&bs, sampler, &regex, &sasl_props("PLAIN")).unwrap());
        assert_eq!(s.sampler, sampler);
        assert_eq!(rows(&s), want, "{sampler} over SASL PLAIN");
    }
}

#[test]
fn a_wrong_plain_password_fails_the_direct_sample_as_authentication_without_printing_it() {
    let props = sasl_props("PLAIN").replace(&var("KAFKA_SASL_PASSWORD"), "wrong-plain-password-0815");
    let c = cluster(&var("KAFKA_SASL_SSL_BOOTSTRAP"), "direct", "^nothing$", &props).unwrap();
    let s = KafkaSampler::new(&c).expect("sampler");
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    let e = s.sample(&dlq).expect_err("a wrong password cannot sample");
    let text = format!("{e} {e:?}");
    assert_eq!(e.kind(), "authentication", "{text}");
    assert!(!text.contains("wrong-plain-password-0815"), "{text}");
}

#[test]
fn over_mutual_tls_both_paths_give_the_plaintext_numbers() {
    let prefix = unique("sec-mtls");
    let (regex, want) = groups(&prefix);
    let bs = var("KAFKA_MTLS_BOOTSTRAP");
    for sampler in ["direct", "librdkafka"] {
        let s = sample(&cluster(&bs, sampler, &regex, &mtls_props(true)).unwrap());
        assert_eq!(s.sampler, sampler);
        assert_eq!(rows(&s), want, "{sampler} over mutual TLS");
    }
}

#[test]
fn the_mutual_tls_listener_refuses_the_direct_client_without_a_client_certificate() {
    // Same CA, no client certificate: the broker ends the handshake. The sample fails
    // and says so (it is not "no groups").
    let c = cluster(&var("KAFKA_MTLS_BOOTSTRAP"), "direct", "^nothing$", &mtls_props(false)).unwrap();
    let s = KafkaSampler::new(&c).expect("sampler");
    let dlq = (streamguard::config::DlqConfig { patterns: Vec::new(), topics: Vec::new() }, Vec::new());
    let e = s.sample(&dlq).expect_err("no client certificate, no sample");
    assert!(matches!(e.kind(), "tls" | "list_groups"), "{e} (kind {})", e.kind());
}

fn oauth_props() -> String {
    // librdkafka builds an unsecured JWS itself; the broker's default validator accepts it.
    format!(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"enable.sasl.oauthbearer.unsecure.jwt\" = \"true\"\n\"sasl.oauthbearer.config\" = \"principal={}\"\n\"ssl.ca.location\" = \"{}\"\n",
        var("KAFKA_SASL_USERNAME"),
        var("KAFKA_SSL_CA_LOCATION")
    )
}

#[test]
fn oauthbearer_falls_back_to_librdkafka_with_the_reason_shown_and_gives_the_plaintext_numbers() {
    let prefix = unique("sec-oauth");
    let (regex, want) = groups(&prefix);
    let bs = var("KAFKA_SASL_SSL_BOOTSTRAP");
    let c = cluster(&bs, "auto", &regex, &oauth_props()).unwrap();
    let s = sample(&c);
    assert_eq!(s.sampler, "librdkafka", "the direct client does not speak OAUTHBEARER");
    let note = s.sampler_note.clone().unwrap_or_default();
    assert!(note.contains("OAUTHBEARER"), "the fallback says why: {note:?}");
    assert_eq!(rows(&s), want, "librdkafka over OAUTHBEARER");
    // `sampler = "direct"` cannot serve it: refused at load, as `check` refuses it.
    let e = cluster(&bs, "direct", &regex, &oauth_props()).expect_err("direct cannot speak OAUTHBEARER");
    assert!(e.contains("OAUTHBEARER"), "{e}");
}
