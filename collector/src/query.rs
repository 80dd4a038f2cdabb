//! The query API: `/v1/events`, `/v1/incidents`, `/v1/incidents/{id}`,
//! `/v1/clusters`. Parameters are parsed strictly: an unknown name, a value
//! out of range or a cursor from elsewhere is a 400 that says which.

use crate::auth::Caller;
use crate::error::{ApiError, quote};
use crate::ops::{EndpointLabel, metrics};
use crate::server::AppState;
use crate::store::{EventQuery, IncidentQuery, Position, StoreError, now_us};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use podwarn_shared::IncidentType;
use serde::Serialize;
use std::collections::BTreeMap;
use xxhash_rust::xxh3::xxh3_64;

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when none is given.
pub const DEFAULT_LIMIT: usize = 100;

/// A page as JSON.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PageBody<T> {
    /// The results.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Query parameters, each at most once.
pub(crate) struct Params {
    values: BTreeMap<String, String>,
    /// The names the endpoint takes: they tell endpoints apart in cursors.
    known: &'static [&'static str],
}

impl Params {
    pub(crate) fn parse(raw: Option<String>, known: &'static [&'static str]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !known.contains(&name.as_ref()) {
                let takes = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("unknown query parameter {}; this endpoint takes: {takes}", quote(&name)),
                ));
            }
            if value.len() > 1024 {
                return Err(invalid(&name, "is longer than 1024 bytes"));
            }
            if values.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(invalid(&name, "is given more than once"));
            }
        }
        Ok(Self { values, known })
    }

    fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.values.get(name) {
            Some(v) if v.is_empty() => Err(invalid(name, "is empty")),
            Some(v) if v.len() > 253 => Err(invalid(name, "is longer than a Kubernetes name can be (253)")),
            Some(v) => Ok(Some(v.clone())),
            None => Ok(None),
        }
    }

    pub(crate) fn limit(&self) -> Result<usize, ApiError> {
        let Some(text) = self.values.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match text.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
            _ => Err(invalid(
                "limit",
                &format!("must be a whole number from 1 to {MAX_LIMIT}, not {}", quote(text)),
            )),
        }
    }

    fn time(&self, name: &str, now_us: i64) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.values.get(name) else {
            return Ok(None);
        };
        if let Ok(ts) = text.parse::<jiff::Timestamp>() {
            return Ok(Some(ts.as_microsecond()));
        }
        match humantime::parse_duration(text) {
            Ok(ago) => Ok(Some(
                now_us.saturating_sub(i64::try_from(ago.as_micros()).unwrap_or(i64::MAX)),
            )),
            Err(_) => Err(invalid(
                name,
                &format!(
                    "{} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration ago (30m, 24h, 7d)",
                    quote(text)
                ),
            )),
        }
    }

    fn window(&self, now_us: i64) -> Result<(Option<i64>, Option<i64>), ApiError> {
        let since = self.time("since", now_us)?;
        let until = self.time("until", now_us)?;
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(invalid("since", "is later than `until`"));
        }
        Ok((since, until))
    }

    fn incident_type(&self) -> Result<Option<IncidentType>, ApiError> {
        let Some(text) = self.values.get("incident_type") else {
            return Ok(None);
        };
        IncidentType::parse(text).map(Some).ok_or_else(|| {
            let names: Vec<&str> = IncidentType::ALL.iter().map(|t| t.as_str()).collect();
            invalid(
                "incident_type",
                &format!("{} is not one of: {}", quote(text), names.join(", ")),
            )
        })
    }

    fn workload(&self) -> Result<Option<(Option<String>, String)>, ApiError> {
        Ok(self.text("workload")?.map(|w| match w.split_once('/') {
            Some((kind, name)) => (Some(kind.to_owned()), name.to_owned()),
            None => (None, w),
        }))
    }

    fn clusters(&self) -> Result<Option<Vec<String>>, ApiError> {
        Ok(self.text("cluster")?.map(|c| c.split(',').map(str::to_owned).collect()))
    }

    /// A fingerprint of the endpoint (by the names it takes) and of every
    /// filter, so a cursor cannot be replayed on another query or endpoint.
    /// Names and values are length-prefixed so no two filter sets collide by
    /// concatenation.
    fn filter_hash(&self) -> u64 {
        let mut canonical = Vec::new();
        for name in self.known {
            canonical.extend_from_slice(&(name.len() as u64).to_be_bytes());
            canonical.extend_from_slice(name.as_bytes());
        }
        canonical.push(0xff);
        for (k, v) in self.values.iter().filter(|(k, _)| *k != "cursor" && *k != "limit") {
            for part in [k, v] {
                canonical.extend_from_slice(&(part.len() as u64).to_be_bytes());
                canonical.extend_from_slice(part.as_bytes());
            }
        }
        xxh3_64(&canonical)
    }

    pub(crate) fn cursor(&self) -> Result<Option<Position>, ApiError> {
        let Some(text) = self.values.get("cursor") else {
            return Ok(None);
        };
        let bad = || {
            ApiError::bad_request(
                "invalid_cursor",
                "`cursor` is not one this endpoint issued for these filters: repeat the query without it",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let bytes: [u8; 25] = bytes.try_into().map_err(|_| bad())?;
        let word = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
        if bytes[0] != 1 || word(17) != self.filter_hash() {
            return Err(bad());
        }
        Ok(Some(Position {
            ts_us: word(1) as i64,
            id: word(9),
        }))
    }

    pub(crate) fn encode_cursor(&self, position: Option<Position>) -> Option<String> {
        position.map(|p| {
            let mut bytes = vec![1u8];
            bytes.extend_from_slice(&(p.ts_us as u64).to_be_bytes());
            bytes.extend_from_slice(&p.id.to_be_bytes());
            bytes.extend_from_slice(&self.filter_hash().to_be_bytes());
            URL_SAFE_NO_PAD.encode(bytes)
        })
    }
}

fn invalid(name: &str, why: &str) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("query parameter `{name}` {why}"))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    match e {
        StoreError::Corrupt(_) => ApiError::internal(),
        _ => ApiError::unavailable("the store cannot answer right now; retry later"),
    }
}

fn parse_incident_id(text: &str) -> Result<u64, ApiError> {
    // Digits only: `from_str_radix` alone would also take a sign.
    if text.len() == 16
        && text.bytes().all(|b| b.is_ascii_hexdigit())
        && let Ok(id) = u64::from_str_radix(text, 16)
    {
        return Ok(id);
    }
    Err(ApiError::bad_request(
        "invalid_parameter",
        format!("{} is not an incident id (16 hex digits)", quote(text)),
    ))
}

const EVENT_PARAMS: &[&str] = &[
    "cluster",
    "namespace",
    "pod",
    "workload",
    "node",
    "reason",
    "incident_type",
    "incident",
    "since",
    "until",
    "limit",
    "cursor",
];

/// `GET /v1/events`.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PageBody<crate::store::StoredEvent>>, ApiError> {
    metrics()
        .queries
        .get_or_create(&EndpointLabel { endpoint: "events" })
        .inc();
    let p = Params::parse(raw, EVENT_PARAMS)?;
    let now = now_us();
    let (since_us, until_us) = p.window(now)?;
    let query = EventQuery {
        clusters: p.clusters()?,
        tenant: caller.tenant.clone(),
        namespace: p.text("namespace")?,
        pod: p.text("pod")?,
        workload: p.workload()?,
        node: p.text("node")?,
        reason: p.text("reason")?,
        incident_type: p.incident_type()?,
        incident: p.text("incident")?.as_deref().map(parse_incident_id).transpose()?,
        since_us,
        until_us,
        limit: p.limit()?,
        after: p.cursor()?,
    };
    let page = state.store.events(query).await.map_err(store_error)?;
    Ok(Json(PageBody {
        items: page.items,
        next_cursor: p.encode_cursor(page.next),
    }))
}

const INCIDENT_PARAMS: &[&str] = &[
    "cluster",
    "namespace",
    "workload",
    "incident_type",
    "active",
    "since",
    "until",
    "limit",
    "cursor",
];

/// `GET /v1/incidents`.
pub async fn incidents(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PageBody<crate::store::IncidentView>>, ApiError> {
    metrics()
        .queries
        .get_or_create(&EndpointLabel { endpoint: "incidents" })
        .inc();
    let p = Params::parse(raw, INCIDENT_PARAMS)?;
    let now = now_us();
    let (since_us, until_us) = p.window(now)?;
    let active = match p.values.get("active").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(invalid("active", &format!("must be true or false, not {other:?}"))),
    };
    let query = IncidentQuery {
        clusters: p.clusters()?,
        tenant: caller.tenant.clone(),
        namespace: p.text("namespace")?,
        workload: p.workload()?,
        incident_type: p.incident_type()?,
        active,
        since_us,
        until_us,
        now_us: now,
        active_window: state.limits.active_window,
        limit: p.limit()?,
        after: p.cursor()?,
    };
    let page = state.store.incidents(query).await.map_err(store_error)?;
    Ok(Json(PageBody {
        items: page.items,
        next_cursor: p.encode_cursor(page.next),
    }))
}

/// One incident with its most recent events.
#[derive(Debug, Serialize)]
pub struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    pub incident: crate::store::IncidentView,
    /// Its most recent events (at most 20).
    pub recent_events: Vec<crate::store::StoredEvent>,
}

/// `GET /v1/incidents/{id}`.
pub async fn incident(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<IncidentDetail>, ApiError> {
    metrics()
        .queries
        .get_or_create(&EndpointLabel { endpoint: "incident" })
        .inc();
    Params::parse(raw, &[])?;
    let id = parse_incident_id(&id)?;
    let not_found = || ApiError::not_found(format!("no incident {id:016x}"));
    let incident = state
        .store
        .incident(id, now_us(), state.limits.active_window)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    if !caller.may_see(&incident.tenant) {
        return Err(not_found());
    }
    let query = EventQuery {
        clusters: Some(vec![incident.cluster.clone()]),
        tenant: caller.tenant.clone(),
        incident: Some(id),
        limit: 20,
        ..EventQuery::default()
    };
    let recent_events = state.store.events(query).await.map_err(store_error)?.items;
    Ok(Json(IncidentDetail {
        incident,
        recent_events,
    }))
}

/// `GET /v1/clusters`.
pub async fn clusters(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PageBody<crate::store::ClusterView>>, ApiError> {
    metrics()
        .queries
        .get_or_create(&EndpointLabel { endpoint: "clusters" })
        .inc();
    Params::parse(raw, &[])?;
    let mut items = state.store.clusters().await.map_err(store_error)?;
    items.retain(|c| caller.may_see(&c.tenant));
    Ok(Json(PageBody {
        items,
        next_cursor: None,
    }))
}

#[cfg(test)]
mod properties;
