//! Configuration of one scaling target: the policy, the shared constraints, the
//! ineffective-scale detector and the actuator. Two layers (STYLE.md 6): `Raw*` serde
//! structs with `deny_unknown_fields`, turned by [`validate`] into the typed values the
//! policies and actuators take, with every problem reported at once and located
//! (`origin: key: message`, as the agent's config reports; `crate::config` turns these
//! into its own errors, so this module does not depend on it).
//!
//! The agent reads them from `[[scale]]` tables; runbook `scale` steps name them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::actuators::command::CommandConfig;
use super::actuators::kubernetes::{KubeAuth, KubernetesConfig, WorkloadKind};
use super::actuators::process::ProcessConfig;
use super::effectiveness::Effectiveness;
use super::lag_policy::{LagPolicy, OffsetResetPolicy};
use super::policy::Constraints;
use super::throughput_policy::ThroughputPolicy;

/// One problem, located like the agent's config errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// Upper bound of `max_replicas` (a typo like 10000 is an error, not a fork bomb).
pub const MAX_REPLICAS: u32 = 1000;

/// One scaling target as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaleTarget {
    /// Unique name (used in the audit and as a bounded metric label).
    pub name: String,
    /// The Kafka cluster (`[[clusters]]` name) of the group; default: the only one.
    pub cluster: Option<String>,
    /// The consumer group whose signals drive the policy.
    pub group: String,
    /// The consumed topic.
    pub topic: String,
    pub policy: RawPolicy,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    /// Most replicas added or removed by one change.
    pub max_step: Option<u32>,
    /// Round up to a divisor of the partition count.
    pub align_to_partitions: Option<bool>,
    /// e.g. "60s".
    pub min_interval: Option<String>,
    pub rebalance_cost_factor: Option<f64>,
    /// e.g. "300s" (the HPA's default).
    pub scale_down_stabilization: Option<String>,
    pub max_data_age: Option<String>,
    pub effectiveness: Option<RawEffectiveness>,
    pub actuator: RawActuator,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawPolicy {
    Lag {
        lag_threshold: Option<u64>,
        activation_lag_threshold: Option<u64>,
        allow_idle_consumers: Option<bool>,
        limit_to_partitions_with_lag: Option<bool>,
        offset_reset_policy: Option<OffsetResetPolicy>,
        scale_to_zero_on_invalid_offset: Option<bool>,
    },
    Throughput {
        /// From the SLO: the backlog must drain within this, e.g. "10m".
        catch_up_within: String,
        headroom: Option<f64>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEffectiveness {
    pub min_rise: Option<f64>,
    pub verify_within: Option<String>,
    pub cooldown: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawActuator {
    Process {
        /// Program and arguments; `{group}`, `{topic}`, `{index}` are substituted.
        command: Vec<String>,
        env: Option<BTreeMap<String, String>>,
        stop_grace: Option<String>,
        restart_backoff: Option<String>,
        log_dir: Option<PathBuf>,
    },
    Kubernetes {
        /// `deployment` or `statefulset`.
        kind: String,
        namespace: Option<String>,
        name: String,
        /// A kubeconfig file; absent: in-cluster service account.
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        timeout: Option<String>,
    },
    Command {
        command: Vec<String>,
        /// Prints the current replica count on stdout; optional.
        current_command: Option<Vec<String>>,
        timeout: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub enum PolicyConfig {
    Lag(LagPolicy),
    Throughput(ThroughputPolicy),
}

#[derive(Debug, Clone)]
pub enum ActuatorConfig {
    Process(ProcessConfig),
    Kubernetes(KubernetesConfig),
    Command(CommandConfig),
}

/// A validated scaling target.
#[derive(Debug, Clone)]
pub struct ScaleTarget {
    pub name: String,
    pub cluster: Option<String>,
    pub group: String,
    pub topic: String,
    pub policy: PolicyConfig,
    pub constraints: Constraints,
    pub effectiveness: Effectiveness,
    pub actuator: ActuatorConfig,
}

struct Errs<'a> {
    origin: &'a str,
    prefix: &'a str,
    list: Vec<ConfigError>,
}

impl Errs<'_> {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        let key = if self.prefix.is_empty() { key.to_string() } else { format!("{}.{key}", self.prefix) };
        self.list.push(ConfigError { origin: self.origin.to_string(), key, message: message.into() });
    }

    fn duration(&mut self, key: &str, v: Option<&str>, default: Duration, allow_zero: bool) -> Duration {
        let Some(s) = v else { return default };
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.push(key, "must be > 0");
                default
            }
            Ok(d) if d > crate::limits::MAX_DURATION => {
                self.push(key, format!("must be at most {}", humantime::format_duration(crate::limits::MAX_DURATION)));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.push(key, format!("invalid duration {s:?}: {e}"));
                default
            }
        }
    }

    fn command(&mut self, key: &str, c: &[String]) {
        if c.is_empty() || c[0].trim().is_empty() {
            self.push(key, "must name a program");
        }
    }
}

/// Validates `raw` (read from `origin`, at key path `prefix`), reporting every problem.
pub fn validate(raw: &RawScaleTarget, origin: &str, prefix: &str) -> Result<ScaleTarget, Vec<ConfigError>> {
    let mut e = Errs { origin, prefix, list: Vec::new() };
    for (k, v) in [("name", &raw.name), ("group", &raw.group), ("topic", &raw.topic)] {
        if v.trim().is_empty() {
            e.push(k, "must not be empty");
        }
    }
    let d = Constraints::default();
    let min_replicas = raw.min_replicas.unwrap_or(d.min_replicas);
    let max_replicas = raw.max_replicas.unwrap_or(d.max_replicas);
    if max_replicas == 0 || max_replicas > MAX_REPLICAS {
        e.push("max_replicas", format!("must be in 1..={MAX_REPLICAS}"));
    }
    if min_replicas > max_replicas {
        e.push("min_replicas", format!("must be ≤ max_replicas ({max_replicas})"));
    }
    let max_step = raw.max_step.unwrap_or(d.max_step);
    if max_step == 0 {
        e.push("max_step", "must be ≥ 1");
    }
    let factor = raw.rebalance_cost_factor.unwrap_or(d.rebalance_cost_factor);
    if !(factor.is_finite() && (0.0..=100.0).contains(&factor)) {
        e.push("rebalance_cost_factor", "must be a number in [0, 100]");
    }
    let constraints = Constraints {
        min_replicas,
        max_replicas,
        max_step,
        align_to_partitions: raw.align_to_partitions.unwrap_or(false),
        min_interval: e.duration("min_interval", raw.min_interval.as_deref(), d.min_interval, true),
        rebalance_cost_factor: factor,
        scale_down_stabilization: e.duration("scale_down_stabilization", raw.scale_down_stabilization.as_deref(), d.scale_down_stabilization, true),
        max_data_age: e.duration("max_data_age", raw.max_data_age.as_deref(), d.max_data_age, false),
    };
    let policy = match &raw.policy {
        RawPolicy::Lag { lag_threshold, activation_lag_threshold, allow_idle_consumers, limit_to_partitions_with_lag, offset_reset_policy, scale_to_zero_on_invalid_offset } => {
            let d = LagPolicy::default();
            let thr = lag_threshold.unwrap_or(d.lag_threshold);
            if thr == 0 {
                e.push("policy.lag_threshold", "must be > 0");
            }
            PolicyConfig::Lag(LagPolicy {
                lag_threshold: thr.max(1),
                activation_lag_threshold: activation_lag_threshold.unwrap_or(d.activation_lag_threshold),
                allow_idle_consumers: allow_idle_consumers.unwrap_or(d.allow_idle_consumers),
                limit_to_partitions_with_lag: limit_to_partitions_with_lag.unwrap_or(d.limit_to_partitions_with_lag),
                offset_reset_policy: offset_reset_policy.unwrap_or_default(),
                scale_to_zero_on_invalid_offset: scale_to_zero_on_invalid_offset.unwrap_or(d.scale_to_zero_on_invalid_offset),
            })
        }
        RawPolicy::Throughput { catch_up_within, headroom } => {
            let d = ThroughputPolicy::default();
            let h = headroom.unwrap_or(d.headroom);
            if !(h.is_finite() && (0.0..=10.0).contains(&h)) {
                e.push("policy.headroom", "must be a number in [0, 10]");
            }
            let c = e.duration("policy.catch_up_within", Some(catch_up_within), d.catch_up_within, false);
            PolicyConfig::Throughput(ThroughputPolicy { catch_up_within: c, headroom: h, ..d })
        }
    };
    let de = Effectiveness::default();
    let effectiveness = match &raw.effectiveness {
        None => de,
        Some(r) => {
            let min_rise = r.min_rise.unwrap_or(de.min_rise);
            if !(min_rise.is_finite() && min_rise > 0.0 && min_rise <= 10.0) {
                e.push("effectiveness.min_rise", "must be a number in (0, 10]");
            }
            Effectiveness {
                min_rise,
                verify_within: e.duration("effectiveness.verify_within", r.verify_within.as_deref(), de.verify_within, false),
                cooldown: e.duration("effectiveness.cooldown", r.cooldown.as_deref(), de.cooldown, true),
            }
        }
    };
    let actuator = match &raw.actuator {
        RawActuator::Process { command, env, stop_grace, restart_backoff, log_dir } => {
            e.command("actuator.command", command);
            let d = ProcessConfig::new(Vec::new(), "", "");
            ActuatorConfig::Process(ProcessConfig {
                command: command.clone(),
                group: raw.group.clone(),
                topic: raw.topic.clone(),
                env: env.clone().unwrap_or_default(),
                stop_grace: e.duration("actuator.stop_grace", stop_grace.as_deref(), d.stop_grace, true),
                restart_backoff: e.duration("actuator.restart_backoff", restart_backoff.as_deref(), d.restart_backoff, false),
                log_dir: log_dir.clone(),
            })
        }
        RawActuator::Kubernetes { kind, namespace, name, kubeconfig, context, timeout } => {
            let kind = match kind.as_str() {
                "deployment" | "deployments" => WorkloadKind::Deployment,
                "statefulset" | "statefulsets" => WorkloadKind::StatefulSet,
                other => {
                    e.push("actuator.kind", format!("unknown kind {other:?} (deployment or statefulset)"));
                    WorkloadKind::Deployment
                }
            };
            if name.trim().is_empty() {
                e.push("actuator.name", "must not be empty");
            }
            let auth = match kubeconfig {
                Some(path) => KubeAuth::Kubeconfig { path: path.clone(), context: context.clone() },
                None => {
                    if context.is_some() {
                        e.push("actuator.context", "needs `kubeconfig`");
                    }
                    KubeAuth::InCluster
                }
            };
            ActuatorConfig::Kubernetes(KubernetesConfig {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
                auth,
                timeout: e.duration("actuator.timeout", timeout.as_deref(), Duration::from_secs(10), false),
                max_conflict_retries: 3,
            })
        }
        RawActuator::Command { command, current_command, timeout } => {
            e.command("actuator.command", command);
            if let Some(c) = current_command {
                e.command("actuator.current_command", c);
            }
            ActuatorConfig::Command(CommandConfig {
                command: command.clone(),
                current_command: current_command.clone(),
                timeout: e.duration("actuator.timeout", timeout.as_deref(), Duration::from_secs(60), false),
                target: raw.name.clone(),
            })
        }
    };
    if !e.list.is_empty() {
        return Err(e.list);
    }
    Ok(ScaleTarget { name: raw.name.clone(), cluster: raw.cluster.clone(), group: raw.group.clone(), topic: raw.topic.clone(), policy, constraints, effectiveness, actuator })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: serde_json::Value) -> RawScaleTarget {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_valid_target_gets_defaults() {
        let t = validate(
            &raw(serde_json::json!({"name": "orders", "group": "g", "topic": "t", "policy": {"type": "throughput", "catch_up_within": "10m"}, "actuator": {"type": "process", "command": ["consumer", "--index", "{index}"]}})),
            "scale.toml",
            "scale[0]",
        )
        .unwrap();
        assert_eq!(t.constraints.scale_down_stabilization, Duration::from_secs(300));
        assert!(matches!(t.policy, PolicyConfig::Throughput(ref p) if p.catch_up_within == Duration::from_secs(600)));
        assert!(matches!(t.actuator, ActuatorConfig::Process(ref p) if p.group == "g" && p.topic == "t"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let errs = validate(
            &raw(serde_json::json!({"name": "x", "group": "", "topic": "t", "min_replicas": 5, "max_replicas": 2, "max_step": 0, "min_interval": "soon",
                "policy": {"type": "lag", "lag_threshold": 0}, "effectiveness": {"min_rise": -1.0},
                "actuator": {"type": "kubernetes", "kind": "pod", "name": "c", "context": "prod"}})),
            "scale.toml",
            "scale[1]",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for want in [
            "scale.toml: scale[1].group: must not be empty",
            "scale.toml: scale[1].min_replicas: must be ≤ max_replicas (2)",
            "scale.toml: scale[1].max_step: must be ≥ 1",
            "scale.toml: scale[1].min_interval: invalid duration \"soon\"",
            "scale.toml: scale[1].policy.lag_threshold: must be > 0",
            "scale.toml: scale[1].effectiveness.min_rise: must be a number in (0, 10]",
            "scale.toml: scale[1].actuator.kind: unknown kind \"pod\"",
            "scale.toml: scale[1].actuator.context: needs `kubeconfig`",
        ] {
            assert!(text.iter().any(|t| t.starts_with(want)), "missing {want:?} in {text:#?}");
        }
    }

    /// The README's example, as written there.
    #[test]
    fn the_readme_example_is_valid_toml_for_a_target() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme.find("```toml\n[[scale]]\nname = \"orders-consumers\"").expect("README example") + "```toml\n".len();
        let body = &readme[start..start + readme[start..].find("```").unwrap()];
        #[derive(Deserialize)]
        struct File {
            scale: Vec<RawScaleTarget>,
        }
        use figment::providers::Format;
        let file: File = figment::Figment::from(figment::providers::Toml::string(body)).extract().unwrap();
        let raw = &file.scale[0];
        let t = validate(raw, "README.md", "").unwrap();
        assert_eq!((t.constraints.max_replicas, t.constraints.max_step), (8, 2));
        assert!(matches!(t.policy, PolicyConfig::Throughput(ref p) if p.headroom == 0.2));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_value::<RawScaleTarget>(serde_json::json!({"name": "x", "group": "g", "topic": "t", "policy": {"type": "lag", "lagThreshold": 5}, "actuator": {"type": "command", "command": ["x"]}}));
        assert!(e.unwrap_err().to_string().contains("unknown field `lagThreshold`"));
    }
}
