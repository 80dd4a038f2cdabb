//! The `/_sim` control endpoint: the same scripting as [`ClusterHandle`] and
//! [`FaultHandle`] over JSON, for tests in another process. Routes are listed in the crate
//! documentation.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Authn};
use super::cluster::{ClusterHandle, PodEvent, SimError};
use super::faults::{Denial, FaultHandle};
use super::pods::{PodRef, Termination};
use super::scenario::Scenario;
use super::status::ApiError;
use super::workloads::Workload;
use super::{Shared, store::Kind};

type Sh = State<Arc<Shared>>;
type Reply = Result<Response, CtlError>;

/// A control-endpoint failure: `{"error": "..."}` with a status code.
#[derive(Debug)]
struct CtlError(StatusCode, String);

impl IntoResponse for CtlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn err(code: StatusCode, e: impl std::fmt::Display) -> CtlError {
    CtlError(code, e.to_string())
}

fn sim_err(e: SimError) -> CtlError {
    let code = match e {
        SimError::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::NOT_FOUND,
    };
    err(code, e)
}

fn ok(v: impl serde::Serialize) -> Reply {
    Ok(Json(v).into_response())
}

async fn require_token(State(sh): Sh, req: Request, next: Next) -> Response {
    match auth::authenticate(sh.config.token.as_deref(), req.headers()) {
        Authn::User => next.run(req).await,
        _ => axum::response::IntoResponse::into_response(ApiError::unauthorized()),
    }
}

pub(crate) fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/workloads", post(create_workload))
        .route("/pods", get(list_pods))
        .route("/pods/restart", post(restart))
        .route("/pods/waiting", post(waiting))
        .route("/pods/logs", post(logs))
        .route("/events", post(emit))
        .route("/events/object", post(emit_object))
        .route("/events/repeat", post(repeat))
        .route("/events/delete", post(delete_event))
        .route("/events/expire", post(expire))
        .route("/events/ttl", post(ttl))
        .route("/emitted", get(emitted))
        .route("/faults/{name}", post(fault))
        .route("/scenario", post(start_scenario).delete(stop_scenario))
        .route_layer(middleware::from_fn_with_state(shared, require_token))
}

fn cluster(sh: &Arc<Shared>) -> ClusterHandle {
    ClusterHandle(sh.clone())
}

fn pod_ref(sh: &Arc<Shared>, ns: &str, name: &str) -> Result<PodRef, CtlError> {
    cluster(sh).pod(ns, name).ok_or_else(|| {
        sim_err(SimError::PodNotFound {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    })
}

async fn stats(State(sh): Sh) -> Reply {
    let c = cluster(&sh);
    ok(json!({
        "resourceVersion": c.resource_version(),
        "warningOccurrences": c.warning_occurrences(),
        "storedEvents": c.stored_events(),
        "pods": c.kind_count(Kind::Pod),
        "scenario": c.scenario_stats(),
        "faults": FaultHandle(sh.clone()).counts(),
    }))
}

async fn create_workload(State(sh): Sh, Json(w): Json<Workload>) -> Reply {
    ok(cluster(&sh).create(&w).map_err(sim_err)?)
}

async fn list_pods(State(sh): Sh) -> Reply {
    ok(cluster(&sh).pods())
}

#[derive(Deserialize)]
struct PodTarget {
    namespace: String,
    pod: String,
    #[serde(default)]
    container: Option<String>,
}

#[derive(Deserialize)]
struct RestartReq {
    #[serde(flatten)]
    target: PodTarget,
    termination: Termination,
}

fn container_of(p: &PodRef, t: &PodTarget) -> String {
    t.container.clone().unwrap_or_else(|| p.container().to_string())
}

async fn restart(State(sh): Sh, Json(r): Json<RestartReq>) -> Reply {
    let p = pod_ref(&sh, &r.target.namespace, &r.target.pod)?;
    let c = container_of(&p, &r.target);
    let n = cluster(&sh).restart_container(&p, &c, r.termination).map_err(sim_err)?;
    ok(json!({ "restartCount": n }))
}

#[derive(Deserialize)]
struct WaitingReq {
    #[serde(flatten)]
    target: PodTarget,
    reason: String,
    #[serde(default)]
    message: String,
}

async fn waiting(State(sh): Sh, Json(r): Json<WaitingReq>) -> Reply {
    let p = pod_ref(&sh, &r.target.namespace, &r.target.pod)?;
    let c = container_of(&p, &r.target);
    cluster(&sh)
        .set_container_waiting(&p, &c, &r.reason, &r.message)
        .map_err(sim_err)?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct LogsReq {
    #[serde(flatten)]
    target: PodTarget,
    #[serde(default)]
    current: String,
    #[serde(default)]
    previous: Option<String>,
}

async fn logs(State(sh): Sh, Json(r): Json<LogsReq>) -> Reply {
    let p = pod_ref(&sh, &r.target.namespace, &r.target.pod)?;
    let c = container_of(&p, &r.target);
    cluster(&sh).set_logs(&p, &c, &r.current, r.previous.as_deref());
    ok(json!({}))
}

#[derive(Deserialize)]
struct EmitReq {
    namespace: String,
    pod: String,
    #[serde(flatten)]
    event: PodEvent,
}

async fn emit(State(sh): Sh, Json(r): Json<EmitReq>) -> Reply {
    let p = pod_ref(&sh, &r.namespace, &r.pod)?;
    ok(cluster(&sh).emit(&p, &r.event).map_err(sim_err)?)
}

#[derive(Deserialize)]
struct ObjectReq {
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
    reason: String,
    message: String,
}

async fn emit_object(State(sh): Sh, Json(r): Json<ObjectReq>) -> Reply {
    ok(cluster(&sh).emit_object_warning(&r.kind, &r.namespace, &r.name, &r.reason, &r.message))
}

#[derive(Deserialize)]
struct UidReq {
    uid: String,
}

async fn repeat(State(sh): Sh, Json(r): Json<UidReq>) -> Reply {
    ok(cluster(&sh).repeat_event(&r.uid).map_err(sim_err)?)
}

async fn delete_event(State(sh): Sh, Json(r): Json<UidReq>) -> Reply {
    cluster(&sh).delete_event(&r.uid).map_err(sim_err)?;
    ok(json!({}))
}

async fn expire(State(sh): Sh) -> Reply {
    ok(json!({ "deleted": cluster(&sh).expire_events_now() }))
}

#[derive(Deserialize)]
struct TtlReq {
    seconds: u64,
}

async fn ttl(State(sh): Sh, Json(r): Json<TtlReq>) -> Reply {
    cluster(&sh).set_event_ttl(Duration::from_secs(r.seconds));
    ok(json!({}))
}

async fn emitted(State(sh): Sh) -> Reply {
    ok(cluster(&sh).emitted())
}

fn millis(v: &Value, key: &str) -> Option<Duration> {
    v.get(key).and_then(Value::as_u64).map(Duration::from_millis)
}

async fn fault(
    State(sh): Sh,
    axum::extract::Path(name): axum::extract::Path<String>,
    body: Option<Json<Value>>,
) -> Reply {
    let f = FaultHandle(sh.clone());
    let v = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let denial = || serde_json::from_value::<Denial>(v.clone()).map_err(|e| err(StatusCode::BAD_REQUEST, e));
    match name.as_str() {
        "drop-watches" => f.drop_all_watches(),
        "reset-connections" => {
            // Let this answer leave before its own connection is cut.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.reset_connections();
            });
        }
        "stall-watches" => f.stall_watches(millis(&v, "millis")),
        "clear-stall" => f.clear_stall(),
        "fail-requests" => {
            let status = v.get("status").and_then(Value::as_u64).unwrap_or(503) as u16;
            let dur = millis(&v, "millis").unwrap_or(Duration::from_secs(5));
            let retry = v
                .get("retry_after_secs")
                .and_then(Value::as_u64)
                .map(Duration::from_secs);
            f.fail_requests(status, dur, retry);
        }
        "clear-failures" => f.clear_failures(),
        "expire-versions" => f.expire_versions(),
        "silent-stale-watch" => f.silent_stale_watch(v.get("on").and_then(Value::as_bool).unwrap_or(true)),
        "slow-responses" => f.slow_responses(millis(&v, "millis").unwrap_or_default()),
        "deny" => {
            f.add_denial(denial()?);
        }
        "allow" => {
            let d = denial()?;
            f.allow(&d.verb, &d.resource);
        }
        "clear" => f.clear(),
        other => return Err(err(StatusCode::NOT_FOUND, format!("unknown fault {other}"))),
    }
    ok(json!({}))
}

#[derive(Deserialize)]
struct ScenarioReq {
    name: String,
    /// Defaults to [`SimConfig::seed`](super::SimConfig).
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    rate: Option<f64>,
}

async fn start_scenario(State(sh): Sh, Json(r): Json<ScenarioReq>) -> Reply {
    let s: Scenario = r.name.parse().map_err(|e: String| err(StatusCode::BAD_REQUEST, e))?;
    let seed = r.seed.unwrap_or(sh.config.seed);
    cluster(&sh).start_scenario(s, seed, r.rate).map_err(sim_err)?;
    ok(json!({ "scenario": s.name() }))
}

async fn stop_scenario(State(sh): Sh) -> Reply {
    cluster(&sh).stop_scenario();
    ok(json!({}))
}
