//! The `[[scale]]` tables: scaling targets, validated by `crate::scale::config` (all
//! problems at once, each with its origin and key) and checked against the clusters.

use std::path::Path;

use figment::value::{Dict, Value};

use super::validate::Validator;
use super::{ClusterConfig, ConfigError};
use crate::scale::config::{validate, ActuatorConfig, RawScaleTarget, ScaleTarget};

impl Validator<'_> {
    pub(super) fn scale(&mut self, dict: &Dict, base: &Path, clusters: &[ClusterConfig]) -> Vec<ScaleTarget> {
        let Some(v) = dict.get("scale") else { return Vec::new() };
        let Value::Array(_, items) = v else {
            self.error(Some(v), "scale", "expected an array of tables ([[scale]])");
            return Vec::new();
        };
        let mut out: Vec<ScaleTarget> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("scale[{i}]");
            let raw: RawScaleTarget = match item.deserialize() {
                Ok(r) => r,
                Err(e) => {
                    self.error(Some(item), &key, e.to_string());
                    continue;
                }
            };
            let origin = self.origin(Some(item));
            // Checked whatever else is wrong with the target, so all errors show at once.
            match &raw.cluster {
                Some(c) if !clusters.iter().any(|k| &k.name == c) => self.error(Some(item), &format!("{key}.cluster"), format!("no [[clusters]] named {c:?}")),
                None if clusters.len() > 1 => self.error(Some(item), &format!("{key}.cluster"), "required when more than one cluster is configured"),
                _ => {}
            }
            if out.iter().any(|o| o.name == raw.name) {
                self.error(Some(item), &format!("{key}.name"), format!("duplicate scale target {:?}", raw.name));
            }
            match validate(&raw, &origin, &key) {
                Ok(mut t) => {
                    if t.cluster.is_none() {
                        t.cluster = clusters.first().map(|c| c.name.clone());
                    }
                    // Relative paths are relative to the config file, like every other path.
                    match &mut t.actuator {
                        ActuatorConfig::Process(p) => p.log_dir = p.log_dir.take().map(|d| base.join(d)),
                        ActuatorConfig::Kubernetes(k) => {
                            if let crate::scale::actuators::kubernetes::KubeAuth::Kubeconfig { path, .. } = &mut k.auth {
                                *path = base.join(&*path);
                            }
                        }
                        ActuatorConfig::Command(_) => {}
                    }
                    out.push(t);
                }
                Err(errs) => self.errors.extend(errs.into_iter().map(|e| ConfigError { origin: e.origin, key: e.key, message: e.message })),
            }
        }
        out
    }
}
