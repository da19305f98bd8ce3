//! The `kubernetes` actuator: the `scale` subresource of a Deployment or StatefulSet,
//! `GET`/`PATCH /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}/scale`
//! (an `autoscaling/v1` `Scale`: `metadata.resourceVersion`, `spec.replicas`,
//! `status.replicas`).
//!
//! Auth, kept minimal on purpose:
//! - in-cluster: the service account's token and CA
//!   (`/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`) and
//!   `KUBERNETES_SERVICE_HOST`/`_PORT`; the token is re-read on every call (projected
//!   tokens rotate);
//! - a kubeconfig: the current (or named) context's cluster `server`,
//!   `certificate-authority(-data)`, `insecure-skip-tls-verify`, and the user's `token` or
//!   `tokenFile`. Client certificates and exec plugins are refused with a clear error.
//!
//! # Guarantees
//! - Optimistic concurrency: the PATCH carries the `resourceVersion` read by the GET, so a
//!   concurrent change answers 409 Conflict; the actuator re-reads and retries up to
//!   `max_conflict_retries` times, then fails with [`ActuatorError::Conflict`].
//! - 403 (a missing RBAC verb) → [`ActuatorError::Forbidden`], 401 → `Unauthorized`,
//!   404 → `NotFound`, each with the API's `Status.message`; the token never appears in
//!   an error.
//! - Least privilege: needs only `get` and `patch` on `deployments/scale` (or
//!   `statefulsets/scale`); see `deploy/rbac-scale.yaml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{Actuator, ActuatorError, BoxFuture, ScaleOutcome, ScaleRequest};

pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum KubeAuth {
    InCluster,
    Kubeconfig { path: PathBuf, context: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    pub kind: WorkloadKind,
    /// Absent: the kubeconfig context's namespace, the service account's, or `default`.
    pub namespace: Option<String>,
    pub name: String,
    pub auth: KubeAuth,
    pub timeout: Duration,
    pub max_conflict_retries: u32,
}

/// How to reach the API server, resolved from the auth settings.
#[derive(Clone)]
pub struct Endpoint {
    pub server: String,
    pub namespace: String,
    token: Token,
    client: reqwest::Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("server", &self.server).field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Token {
    None,
    Inline(String),
    File(PathBuf),
}

impl Token {
    fn read(&self) -> Result<Option<String>, ActuatorError> {
        match self {
            Token::None => Ok(None),
            Token::Inline(t) => Ok(Some(t.clone())),
            Token::File(p) => std::fs::read_to_string(p).map(|t| Some(t.trim().to_string())).map_err(|e| ActuatorError::Config(format!("token file {}: {e}", p.display()))),
        }
    }
}

fn client(timeout: Duration, ca_pem: Option<&[u8]>, insecure: bool) -> Result<reqwest::Client, ActuatorError> {
    let mut b = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).user_agent(concat!("streamguard/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| ActuatorError::Config(format!("CA certificate: {e}")))?;
        b = b.add_root_certificate(cert);
    }
    if insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| ActuatorError::Config(format!("HTTP client: {e}")))
}

fn yaml_str<'a>(node: &'a saphyr::Yaml<'a>, key: &str) -> Option<&'a str> {
    node.as_mapping_get(key).and_then(|v| v.as_str())
}

/// The named entry of a kubeconfig list (`clusters`, `contexts`, `users`).
fn named<'a>(doc: &'a saphyr::Yaml<'a>, list: &str, name: &str) -> Option<&'a saphyr::Yaml<'a>> {
    doc.as_mapping_get(list)?.as_sequence()?.iter().find(|e| yaml_str(e, "name") == Some(name))?.as_mapping_get(list.trim_end_matches('s'))
}

/// Resolves a kubeconfig (minimal parsing, see the module doc).
pub fn from_kubeconfig(path: &Path, context: Option<&str>, namespace: Option<&str>, timeout: Duration) -> Result<Endpoint, ActuatorError> {
    use saphyr::LoadableYamlNode;
    let bad = |m: String| ActuatorError::Config(format!("kubeconfig {}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let docs = saphyr::Yaml::load_from_str(&text).map_err(|e| bad(e.to_string()))?;
    let doc = docs.first().ok_or_else(|| bad("empty".to_string()))?;
    let ctx_name = match context {
        Some(c) => c.to_string(),
        None => yaml_str(doc, "current-context").ok_or_else(|| bad("no current-context and no context configured".to_string()))?.to_string(),
    };
    let ctx = named(doc, "contexts", &ctx_name).ok_or_else(|| bad(format!("context {ctx_name:?} not found")))?;
    let cluster_name = yaml_str(ctx, "cluster").ok_or_else(|| bad(format!("context {ctx_name:?} names no cluster")))?;
    let cluster = named(doc, "clusters", cluster_name).ok_or_else(|| bad(format!("cluster {cluster_name:?} not found")))?;
    let server = yaml_str(cluster, "server").ok_or_else(|| bad(format!("cluster {cluster_name:?} has no server")))?.trim_end_matches('/').to_string();
    let ca = if let Some(data) = yaml_str(cluster, "certificate-authority-data") {
        Some(base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| bad(format!("certificate-authority-data: {e}")))?)
    } else if let Some(file) = yaml_str(cluster, "certificate-authority") {
        let p = path.parent().unwrap_or(Path::new(".")).join(file);
        Some(std::fs::read(&p).map_err(|e| bad(format!("certificate-authority {}: {e}", p.display())))?)
    } else {
        None
    };
    let insecure = cluster.as_mapping_get("insecure-skip-tls-verify").and_then(|v| v.as_bool()).unwrap_or(false);
    let token = match yaml_str(ctx, "user").and_then(|u| named(doc, "users", u)) {
        None => Token::None,
        Some(user) => {
            if user.as_mapping_get("client-certificate-data").is_some() || user.as_mapping_get("client-certificate").is_some() || user.as_mapping_get("exec").is_some() || user.as_mapping_get("auth-provider").is_some() {
                return Err(bad("only token auth is supported (client certificates, exec and auth-provider users are not); use a service-account token".to_string()));
            }
            match (yaml_str(user, "token"), yaml_str(user, "tokenFile")) {
                (Some(t), _) => Token::Inline(t.to_string()),
                (None, Some(f)) => Token::File(path.parent().unwrap_or(Path::new(".")).join(f)),
                (None, None) => Token::None,
            }
        }
    };
    let ns = namespace.map(str::to_string).or_else(|| yaml_str(ctx, "namespace").map(str::to_string)).unwrap_or_else(|| "default".to_string());
    Ok(Endpoint { server, namespace: ns, token, client: client(timeout, ca.as_deref(), insecure)? })
}

/// Resolves the in-cluster service account.
pub fn in_cluster(namespace: Option<&str>, timeout: Duration) -> Result<Endpoint, ActuatorError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| ActuatorError::Config("not in a cluster: KUBERNETES_SERVICE_HOST is unset (configure `kubeconfig`)".to_string()))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_string());
    let dir = Path::new(SERVICE_ACCOUNT_DIR);
    let ca = std::fs::read(dir.join("ca.crt")).map_err(|e| ActuatorError::Config(format!("{}/ca.crt: {e}", dir.display())))?;
    let ns = match namespace {
        Some(n) => n.to_string(),
        None => std::fs::read_to_string(dir.join("namespace")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "default".to_string()),
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Ok(Endpoint { server: format!("https://{host}:{port}"), namespace: ns, token: Token::File(dir.join("token")), client: client(timeout, Some(&ca), false)? })
}

/// The parts of an `autoscaling/v1` `Scale` this needs.
#[derive(Debug, Clone, Deserialize)]
struct Scale {
    metadata: ScaleMeta,
    #[serde(default)]
    spec: ScaleSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleMeta {
    resource_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ScaleSpec {
    #[serde(default)]
    replicas: u32,
}

/// A `Status` error body.
#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Clone)]
pub struct KubernetesActuator {
    cfg: KubernetesConfig,
    endpoint: Endpoint,
}

impl KubernetesActuator {
    /// Resolves the auth now, so a bad kubeconfig fails at startup, not at the first scale.
    pub fn new(cfg: KubernetesConfig) -> Result<KubernetesActuator, ActuatorError> {
        let endpoint = match &cfg.auth {
            KubeAuth::InCluster => in_cluster(cfg.namespace.as_deref(), cfg.timeout)?,
            KubeAuth::Kubeconfig { path, context } => from_kubeconfig(path, context.as_deref(), cfg.namespace.as_deref(), cfg.timeout)?,
        };
        Ok(KubernetesActuator { cfg, endpoint })
    }

    fn url(&self) -> String {
        format!("{}/apis/apps/v1/namespaces/{}/{}/{}/scale", self.endpoint.server, self.endpoint.namespace, self.cfg.kind.resource(), self.cfg.name)
    }

    fn what(&self) -> String {
        format!("{}/{} in namespace {}", self.cfg.kind.resource(), self.cfg.name, self.endpoint.namespace)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, bytes_body::Body), ActuatorError> {
        let req = match self.endpoint.token.read()? {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                ActuatorError::Timeout { what: self.what(), secs: self.cfg.timeout.as_secs_f64() }
            } else {
                // reqwest's error names the URL (no credentials in it) and the cause.
                let mut m = e.to_string();
                let mut s = std::error::Error::source(&e);
                while let Some(x) = s {
                    m = format!("{m}: {x}");
                    s = x.source();
                }
                ActuatorError::Unreachable { what: self.endpoint.server.clone(), message: m }
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| ActuatorError::Unreachable { what: self.endpoint.server.clone(), message: e.to_string() })?;
        Ok((status, bytes_body::Body(body.to_vec())))
    }

    fn error(&self, status: u16, body: &[u8], verb: &str) -> ActuatorError {
        let mut message = serde_json::from_slice::<Status>(body).map(|s| s.message).unwrap_or_else(|_| super::tail_text(body, 300));
        message.truncate(500);
        match status {
            401 => ActuatorError::Unauthorized { message },
            403 => ActuatorError::Forbidden { message: format!("{verb} {}/scale: {message}", self.cfg.kind.resource()) },
            404 => ActuatorError::NotFound { what: self.what() },
            409 => ActuatorError::Conflict { what: self.what(), attempts: 1 },
            _ => ActuatorError::Status { what: format!("{verb} {}", self.what()), status, message },
        }
    }

    async fn get(&self) -> Result<Scale, ActuatorError> {
        let (status, body) = self.send(self.endpoint.client.get(self.url())).await?;
        if status != 200 {
            return Err(self.error(status, &body.0, "get"));
        }
        serde_json::from_slice(&body.0).map_err(|e| ActuatorError::Decode { what: self.what(), message: e.to_string() })
    }

    async fn set(&self, n: u32, dry_run: bool) -> Result<ScaleOutcome, ActuatorError> {
        let attempts = self.cfg.max_conflict_retries.saturating_add(1);
        for _ in 0..attempts {
            let scale = self.get().await?;
            let from = scale.spec.replicas;
            if from == n {
                return Ok(ScaleOutcome::Unchanged { replicas: n });
            }
            let patch = serde_json::json!({"metadata": {"resourceVersion": scale.metadata.resource_version}, "spec": {"replicas": n}});
            let mut url = self.url();
            if dry_run {
                url.push_str("?dryRun=All");
            }
            let req = self.endpoint.client.patch(url).header(reqwest::header::CONTENT_TYPE, "application/merge-patch+json").body(patch.to_string());
            let (status, body) = self.send(req).await?;
            match status {
                200 => return Ok(ScaleOutcome::Scaled { from: Some(from), to: n }),
                409 => continue,
                _ => return Err(self.error(status, &body.0, "patch")),
            }
        }
        Err(ActuatorError::Conflict { what: self.what(), attempts })
    }
}

mod bytes_body {
    /// A response body (kept as bytes so a non-JSON error page still shows).
    pub struct Body(pub Vec<u8>);
}

impl Actuator for KubernetesActuator {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn current(&self) -> BoxFuture<'_, Result<Option<u32>, ActuatorError>> {
        Box::pin(async move { Ok(Some(self.get().await?.spec.replicas)) })
    }

    fn scale_to<'a>(&'a self, req: &'a ScaleRequest) -> BoxFuture<'a, Result<ScaleOutcome, ActuatorError>> {
        Box::pin(self.set(req.to, req.dry_run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_gives_server_namespace_and_token_and_refuses_client_certs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(&p, "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c1\n  cluster:\n    server: http://127.0.0.1:1/\ncontexts:\n- name: dev\n  context:\n    cluster: c1\n    user: u1\n    namespace: streaming\nusers:\n- name: u1\n  user:\n    token: s3cr3t\n- name: u2\n  user:\n    client-certificate-data: AAAA\n").unwrap();
        let e = from_kubeconfig(&p, None, None, Duration::from_secs(1)).unwrap();
        assert_eq!((e.server.as_str(), e.namespace.as_str()), ("http://127.0.0.1:1", "streaming"));
        assert!(matches!(e.token, Token::Inline(ref t) if t == "s3cr3t"));
        assert!(!format!("{e:?}").contains("s3cr3t"), "the token must not show in Debug");
        let e = from_kubeconfig(&p, Some("nope"), None, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("context \"nope\" not found"), "{e}");
        std::fs::write(&p, "current-context: dev\nclusters:\n- name: c1\n  cluster:\n    server: https://k\ncontexts:\n- name: dev\n  context:\n    cluster: c1\n    user: u2\nusers:\n- name: u2\n  user:\n    client-certificate-data: AAAA\n").unwrap();
        let e = from_kubeconfig(&p, None, Some("ns"), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("only token auth is supported"), "{e}");
    }

    #[test]
    fn outside_a_cluster_in_cluster_auth_says_so() {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            let e = in_cluster(None, Duration::from_secs(1)).unwrap_err();
            assert!(e.to_string().contains("KUBERNETES_SERVICE_HOST is unset"), "{e}");
        }
    }
}
