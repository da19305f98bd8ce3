//! The catalog of built-in signals: every name a rule, the API or a dashboard can use,
//! with its metric name, type and labels, one file per source.
//!
//! Data only, depending on nothing but [`crate::signal`]: the samplers that produce the
//! signals and the rules, export and `/metrics` that read them all depend on the catalog,
//! never the other way round.

pub mod connect;
pub mod flink;
pub mod kafka;

use crate::signal::SignalDef;

/// Every built-in signal.
pub fn all() -> impl Iterator<Item = &'static SignalDef> {
    kafka::SIGNALS.iter().chain(connect::SIGNALS).chain(flink::SIGNALS)
}

/// The built-in signal named `name`.
pub fn find(name: &str) -> Option<&'static SignalDef> {
    all().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_and_metric_names_are_unique_and_well_formed() {
        let mut names = std::collections::BTreeSet::new();
        let mut metrics = std::collections::BTreeSet::new();
        for d in all() {
            assert!(names.insert(d.name), "duplicate signal {}", d.name);
            assert!(metrics.insert(d.metric), "duplicate metric {}", d.metric);
            let ok = |s: &str| s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            assert!(ok(d.name) && ok(d.metric), "{d:?}");
            assert!(!d.metric.ends_with("_total"), "counters are registered without _total: {}", d.metric);
        }
    }

    #[test]
    fn no_signal_declares_a_label_prometheus_reserves_for_its_targets() {
        // With the default `honor_labels: false` Prometheus renames an exported `job` or
        // `instance` to `exported_job`/`exported_instance`, so queries grouping by it
        // would silently merge unrelated series.
        for d in all() {
            for reserved in ["job", "instance"] {
                assert!(!d.labels.contains(&reserved), "signal {} declares the reserved label {reserved:?}", d.name);
            }
        }
    }
}
