//! Test (e): the `kubernetes` scaling actuator against a **contract server**, a stand-in
//! for the Kubernetes API server. No API server can run on these machines (no
//! containers, no kubelet), so this one small server, on 127.0.0.1 only, follows the
//! documented contract of the `scale` subresource
//! (`/apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}/scale`,
//! an `autoscaling/v1` `Scale`):
//! - GET → 200 with `metadata.resourceVersion`, `spec.replicas`, `status.replicas`;
//! - PATCH with `application/merge-patch+json` → 200 with the updated `Scale`; a
//!   `metadata.resourceVersion` in the patch is a precondition: a stale one → **409
//!   Conflict** (`reason: Conflict`, "the object has been modified; please apply your
//!   changes to the latest version and try again"); other content types → 415;
//!   `?dryRun=All` validates without persisting;
//! - an unknown object → 404 (`reason: NotFound`); no or a bad bearer token → 401; a
//!   token whose RBAC lacks the verb → **403** (`reason: Forbidden`, "cannot patch
//!   resource \"deployments/scale\" in API group \"apps\"…").
//!
//! The actuator reaches it through a kubeconfig written by each test (token auth).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use streamguard::scale::actuators::kubernetes::{KubeAuth, KubernetesActuator, KubernetesConfig, WorkloadKind};
use streamguard::scale::actuators::{Actuator, ScaleOutcome, ScaleRequest};

const FULL_TOKEN: &str = "token-get-patch-0f3a9";
const READONLY_TOKEN: &str = "token-get-only-77b1c";

#[derive(Default)]
struct Api {
    /// (namespace, resource, name) → (replicas, resourceVersion)
    objects: BTreeMap<(String, String, String), (u32, u64)>,
    /// PATCHes to answer as if another writer changed the object first.
    inject_conflicts: u32,
    patches: u32,
}

type Shared = Arc<Mutex<Api>>;

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Json<Value>) {
    (code, Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()})))
}

fn scale_json(ns: &str, name: &str, replicas: u32, rv: u64) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": name, "namespace": ns, "resourceVersion": rv.to_string()},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": format!("app={name}")}})
}

/// The verbs a token's RBAC grants on `*/scale`.
fn authorize(headers: &HeaderMap, verb: &str, ns: &str, resource: &str, name: &str) -> Result<(), (StatusCode, Json<Value>)> {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let verbs: &[&str] = match token {
        Some(FULL_TOKEN) => &["get", "patch"],
        Some(READONLY_TOKEN) => &["get"],
        _ => return Err(status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".to_string())),
    };
    if !verbs.contains(&verb) {
        return Err(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{resource}.apps \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:streamguard\" cannot {verb} resource \"{resource}/scale\" in API group \"apps\" in the namespace \"{ns}\""),
        ));
    }
    Ok(())
}

async fn get_scale(State(api): State<Shared>, headers: HeaderMap, Path((ns, resource, name)): Path<(String, String, String)>) -> (StatusCode, Json<Value>) {
    if let Err(e) = authorize(&headers, "get", &ns, &resource, &name) {
        return e;
    }
    let api = api.lock().unwrap();
    match api.objects.get(&(ns.clone(), resource.clone(), name.clone())) {
        Some((r, rv)) => (StatusCode::OK, Json(scale_json(&ns, &name, *r, *rv))),
        None => status(StatusCode::NOT_FOUND, "NotFound", format!("{resource}.apps \"{name}\" not found")),
    }
}

async fn patch_scale(State(api): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery, Path((ns, resource, name)): Path<(String, String, String)>, body: String) -> (StatusCode, Json<Value>) {
    if let Err(e) = authorize(&headers, "patch", &ns, &resource, &name) {
        return e;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/merge-patch+json") {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", "the body of the request was in an unknown format".to_string());
    }
    let Ok(patch) = serde_json::from_str::<Value>(&body) else { return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid JSON".to_string()) };
    let mut api = api.lock().unwrap();
    api.patches += 1;
    let inject = api.inject_conflicts > 0;
    if inject {
        api.inject_conflicts -= 1;
    }
    let Some((replicas, rv)) = api.objects.get_mut(&(ns.clone(), resource.clone(), name.clone())) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("{resource}.apps \"{name}\" not found"));
    };
    if inject {
        // Another writer got there first.
        *rv += 1;
    }
    if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
        if want != rv.to_string() {
            return status(StatusCode::CONFLICT, "Conflict", format!("Operation cannot be fulfilled on {resource}.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
        }
    }
    let Some(n) = patch["spec"]["replicas"].as_u64() else { return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "spec.replicas: Required value".to_string()) };
    if query.as_deref() == Some("dryRun=All") {
        return (StatusCode::OK, Json(scale_json(&ns, &name, n as u32, *rv)));
    }
    *replicas = n as u32;
    *rv += 1;
    (StatusCode::OK, Json(scale_json(&ns, &name, *replicas, *rv)))
}

struct Server {
    addr: SocketAddr,
    api: Shared,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let api: Shared = Arc::default();
        {
            let mut a = api.lock().unwrap();
            a.objects.insert(("streaming".into(), "deployments".into(), "orders-consumer".into()), (2, 100));
            a.objects.insert(("streaming".into(), "statefulsets".into(), "ledger".into()), (3, 7));
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let app = Router::new().route("/apis/apps/v1/namespaces/{ns}/{resource}/{name}/scale", get(get_scale).patch(patch_scale)).with_state(api.clone());
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { addr, api, _rt: rt, dir: tempfile::tempdir().unwrap() }
    }

    fn kubeconfig(&self, token: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(format!("kubeconfig-{token}"));
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: contract\n  cluster:\n    server: http://{}\ncontexts:\n- name: test\n  context:\n    cluster: contract\n    user: sg\n    namespace: streaming\nusers:\n- name: sg\n  user:\n    token: {token}\n",
                self.addr
            ),
        )
        .unwrap();
        p
    }

    fn actuator(&self, token: &str, kind: WorkloadKind, name: &str) -> KubernetesActuator {
        let cfg = KubernetesConfig { kind, namespace: None, name: name.into(), auth: KubeAuth::Kubeconfig { path: self.kubeconfig(token), context: None }, timeout: Duration::from_secs(5), max_conflict_retries: 3 };
        KubernetesActuator::new(cfg).unwrap()
    }

    fn replicas(&self, resource: &str, name: &str) -> (u32, u64) {
        self.api.lock().unwrap().objects[&("streaming".to_string(), resource.to_string(), name.to_string())]
    }

    fn patches(&self) -> u32 {
        self.api.lock().unwrap().patches
    }
}

fn req(to: u32) -> ScaleRequest {
    ScaleRequest { target: "orders".into(), from: None, to, policy: "throughput".into(), why: "test".into(), dry_run: false }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn scaling_a_deployment_reads_then_patches_the_scale_subresource_and_is_idempotent() {
    let s = Server::start();
    let a = s.actuator(FULL_TOKEN, WorkloadKind::Deployment, "orders-consumer");
    assert_eq!(block_on(a.current()).unwrap(), Some(2));
    assert_eq!(block_on(a.scale_to(&req(5))).unwrap(), ScaleOutcome::Scaled { from: Some(2), to: 5 });
    assert_eq!(s.replicas("deployments", "orders-consumer"), (5, 101));
    assert_eq!(block_on(a.scale_to(&req(5))).unwrap(), ScaleOutcome::Unchanged { replicas: 5 });
    assert_eq!(s.patches(), 1, "an unchanged count sends no PATCH");

    let sts = s.actuator(FULL_TOKEN, WorkloadKind::StatefulSet, "ledger");
    assert_eq!(block_on(sts.scale_to(&req(1))).unwrap(), ScaleOutcome::Scaled { from: Some(3), to: 1 });
    assert_eq!(s.replicas("statefulsets", "ledger").0, 1);
}

#[test]
fn a_409_conflict_on_a_stale_resource_version_is_retried_after_a_fresh_read() {
    let s = Server::start();
    let a = s.actuator(FULL_TOKEN, WorkloadKind::Deployment, "orders-consumer");
    s.api.lock().unwrap().inject_conflicts = 1;
    assert_eq!(block_on(a.scale_to(&req(4))).unwrap(), ScaleOutcome::Scaled { from: Some(2), to: 4 });
    assert_eq!(s.patches(), 2);
    assert_eq!(s.replicas("deployments", "orders-consumer").0, 4);

    // Someone keeps changing it: give up after 1 + 3 retries with a typed conflict.
    s.api.lock().unwrap().inject_conflicts = 100;
    let e = block_on(a.scale_to(&req(6))).unwrap_err();
    assert_eq!(e.kind(), "conflict", "{e}");
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    assert_eq!(s.patches(), 6);
    assert_eq!(s.replicas("deployments", "orders-consumer").0, 4, "never written over a concurrent change");
}

#[test]
fn a_token_without_the_patch_verb_gets_a_403_that_names_the_missing_permission() {
    let s = Server::start();
    let a = s.actuator(READONLY_TOKEN, WorkloadKind::Deployment, "orders-consumer");
    assert_eq!(block_on(a.current()).unwrap(), Some(2), "get is granted");
    let e = block_on(a.scale_to(&req(3))).unwrap_err();
    assert_eq!(e.kind(), "forbidden");
    let text = e.to_string();
    assert!(text.contains("cannot patch resource \"deployments/scale\" in API group \"apps\""), "{text}");
    assert!(!text.contains(READONLY_TOKEN), "the token must never appear in an error: {text}");
    assert_eq!(s.replicas("deployments", "orders-consumer").0, 2);
}

#[test]
fn a_missing_workload_is_404_and_a_bad_token_is_401() {
    let s = Server::start();
    let e = block_on(s.actuator(FULL_TOKEN, WorkloadKind::Deployment, "nope").scale_to(&req(3))).unwrap_err();
    assert_eq!(e.kind(), "not_found", "{e}");
    assert!(e.to_string().contains("deployments/nope in namespace streaming"), "{e}");
    let e = block_on(s.actuator("wrong-token-123", WorkloadKind::Deployment, "orders-consumer").current()).unwrap_err();
    assert_eq!(e.kind(), "unauthorized", "{e}");
    assert!(!e.to_string().contains("wrong-token-123"), "{e}");
}

#[test]
fn a_dry_run_patches_with_dry_run_all_and_changes_nothing() {
    let s = Server::start();
    let a = s.actuator(FULL_TOKEN, WorkloadKind::Deployment, "orders-consumer");
    let mut r = req(7);
    r.dry_run = true;
    assert_eq!(block_on(a.scale_to(&r)).unwrap(), ScaleOutcome::Scaled { from: Some(2), to: 7 });
    assert_eq!(s.patches(), 1);
    assert_eq!(s.replicas("deployments", "orders-consumer"), (2, 100));
}

#[test]
fn an_unreachable_api_server_is_a_typed_error() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kc");
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(&p, std::fs::read_to_string(s.kubeconfig(FULL_TOKEN)).unwrap().replace(&s.addr.to_string(), &format!("127.0.0.1:{port}"))).unwrap();
    let cfg = KubernetesConfig { kind: WorkloadKind::Deployment, namespace: None, name: "orders-consumer".into(), auth: KubeAuth::Kubeconfig { path: p, context: None }, timeout: Duration::from_secs(2), max_conflict_retries: 3 };
    let e = block_on(KubernetesActuator::new(cfg).unwrap().current()).unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e}");
}

/// The shipped RBAC grants exactly get and patch on `deployments/scale`.
#[test]
fn the_shipped_rbac_is_least_privilege() {
    use saphyr::LoadableYamlNode;
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac-scale.yaml")).unwrap();
    let docs = saphyr::Yaml::load_from_str(&text).unwrap();
    let roles: Vec<_> = docs.iter().filter(|d| d.as_mapping_get("kind").and_then(|k| k.as_str()) == Some("Role")).collect();
    assert_eq!(roles.len(), 1);
    assert!(docs.iter().all(|d| d.as_mapping_get("kind").and_then(|k| k.as_str()) != Some("ClusterRole")), "no cluster-wide role");
    let rules = roles[0].as_mapping_get("rules").and_then(|r| r.as_sequence()).unwrap();
    assert_eq!(rules.len(), 1);
    let list = |k: &str| -> Vec<String> { rules[0].as_mapping_get(k).and_then(|v| v.as_sequence()).unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    assert_eq!(list("apiGroups"), ["apps"]);
    assert_eq!(list("resources"), ["deployments/scale"]);
    assert_eq!(list("verbs"), ["get", "patch"]);
}
