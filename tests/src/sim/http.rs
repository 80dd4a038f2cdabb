//! The API request path: faults → authentication → routing → RBAC → resource handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;

use super::Shared;
use super::auth::{self, Authn};
use super::discovery::{self, ResourceInfo, SSAR};
use super::events;
use super::leases;
use super::list::{self, Opts};
use super::logs::{self, LogQuery};
use super::status::{ApiError, json_body, json_bytes};
use super::store::Kind;
use super::{control, watch};

/// The whole HTTP surface: `/_sim` control routes plus the Kubernetes API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/_sim", control::routes(shared.clone()))
        .fallback(api)
        .with_state(shared)
}

/// A parsed resource path.
#[derive(Debug)]
struct ResPath {
    info: &'static ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

#[derive(Debug)]
enum Route {
    Version,
    Health,
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    SelfSubjectAccessReview,
    Resource(ResPath),
}

fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        ["api", v] => return Some(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["apis", g, v] => return Some(Route::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if group == SSAR.group && rest == [SSAR.plural] {
        return Some(Route::SelfSubjectAccessReview);
    }
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => {
            (Some(ns.to_string()), *plural, tail.first(), tail.get(1))
        }
        [plural, tail @ ..] if tail.len() <= 2 => (None, *plural, tail.first(), tail.get(1)),
        _ => return None,
    };
    let info = discovery::find(group, version, plural)?;
    if namespace.is_some() && !info.namespaced {
        return None;
    }
    // A namespaced object can only be addressed inside its namespace.
    if namespace.is_none() && info.namespaced && name.is_some() {
        return None;
    }
    Some(Route::Resource(ResPath {
        info,
        namespace,
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    }))
}

fn verb(method: &Method, p: &ResPath, q: &HashMap<String, String>) -> &'static str {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), p.name.is_some()) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

async fn api(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let slow = sh.faults.slow();
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    if let Some((code, retry_after)) = sh.faults.current_failure() {
        return ApiError::injected(code, retry_after).into_response();
    }
    let route = parse_route(uri.path());
    let public = matches!(route, Some(Route::Version | Route::Health));
    match auth::authenticate(sh.config.token.as_deref(), &headers) {
        Authn::User => {}
        Authn::Anonymous if public => {}
        _ => return ApiError::unauthorized().into_response(),
    }
    match handle(&sh, route, &method, &headers, &q, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn handle(
    sh: &Arc<Shared>,
    route: Option<Route>,
    method: &Method,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let route = route.ok_or_else(ApiError::no_route)?;
    let get_only = |v: Option<serde_json::Value>| -> Result<Response, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        v.map(|v| json_body(&v)).ok_or_else(ApiError::no_route)
    };
    match route {
        Route::Version => get_only(Some(discovery::version())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::Api => get_only(Some(discovery::api_versions(&sh.addr.to_string()))),
        Route::Apis => get_only(Some(discovery::api_group_list())),
        Route::Group(g) => get_only(discovery::api_group(&g)),
        Route::GroupVersion(g, v) => get_only(discovery::resource_list(&g, &v)),
        Route::SelfSubjectAccessReview => {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed());
            }
            auth::self_subject_access_review(sh, body)
        }
        Route::Resource(p) => resource(sh, p, method, headers, q, body),
    }
}

fn resource(
    sh: &Arc<Shared>,
    p: ResPath,
    method: &Method,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let verb = verb(method, &p, q);
    let rbac_resource = match &p.sub {
        Some(s) => format!("{}/{s}", p.info.plural),
        None => p.info.plural.to_string(),
    };
    if sh.faults.is_denied(verb, &rbac_resource, p.name.as_deref()) {
        return Err(ApiError::forbidden(
            &sh.config.user,
            verb,
            p.info,
            p.sub.as_deref(),
            p.namespace.as_deref(),
            p.name.as_deref(),
        ));
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ns = p.namespace.clone().unwrap_or_default();
    let kind = p.info.kind;
    match (verb, p.name.as_deref(), p.sub.as_deref()) {
        ("list", None, None) => {
            let opts = Opts::parse(q, p.info, accept)?;
            list::serve(&sh.store, p.info, p.namespace.as_deref(), &opts)
        }
        ("watch", None, None) => {
            let opts = Opts::parse(q, p.info, accept)?;
            watch::serve(sh.clone(), p.info, p.namespace.clone(), opts)
        }
        ("get", Some(name), None) => {
            let snap = sh.store.read(|s| s.get_snapshot(kind, &ns, name));
            let snap = snap.ok_or_else(|| ApiError::not_found(p.info, name))?;
            Ok(json_bytes(snap.json.clone()))
        }
        ("get", Some(name), Some("log")) if kind == Kind::Pod => {
            let lq = LogQuery {
                container: q.get("container").cloned(),
                previous: q.get("previous").is_some_and(|v| v == "true" || v == "1"),
                tail_lines: q.get("tailLines").and_then(|v| v.parse().ok()),
                limit_bytes: q.get("limitBytes").and_then(|v| v.parse().ok()),
            };
            let text = sh.store.read(|s| logs::read(s, &ns, name, &lq))?;
            Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
        ("create", None, None) if kind == Kind::Lease => sh.store.write(|s| leases::create(s, &ns, body)),
        ("update", Some(name), None) if kind == Kind::Lease => sh.store.write(|s| leases::replace(s, &ns, name, body)),
        ("patch", Some(name), None) if kind == Kind::Lease => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            sh.store.write(|s| leases::patch(s, &ns, name, ct, body))
        }
        ("delete", Some(name), None) => delete(sh, p.info, &ns, name),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn delete(sh: &Shared, info: &ResourceInfo, ns: &str, name: &str) -> Result<Response, ApiError> {
    let snap = sh.store.write(|s| {
        let snap = s.get_snapshot(info.kind, ns, name)?;
        let deleted = match info.kind {
            Kind::Event => events::delete_key(s, &(ns.to_string(), name.to_string())),
            Kind::Pod => s.delete::<Pod>(ns, name).is_some(),
            Kind::Lease => s
                .delete::<k8s_openapi::api::coordination::v1::Lease>(ns, name)
                .is_some(),
            _ => false,
        };
        deleted.then_some(snap)
    });
    match snap {
        Some(snap) => Ok(json_bytes(snap.json.clone())),
        None if sh.store.read(|s| s.get_snapshot(info.kind, ns, name).is_some()) => Err(ApiError::method_not_allowed()),
        None => Err(ApiError::not_found(info, name)),
    }
}
