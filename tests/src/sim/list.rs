//! List semantics: selectors, `resourceVersion`/`resourceVersionMatch`, `limit` and
//! consistent `continue` pages (reconstructed from the change history), 410 when expired.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::discovery::ResourceInfo;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_body, json_bytes};
use super::store::{Key, Snapshot, Store, StoreError};
use super::table;

/// Query options shared by list and watch.
#[derive(Debug, Default)]
pub(crate) struct Opts {
    pub(crate) field: FieldSelector,
    pub(crate) label: LabelSelector,
    pub(crate) limit: Option<usize>,
    pub(crate) cont: Option<String>,
    pub(crate) rv: Option<String>,
    pub(crate) rv_match: Option<String>,
    pub(crate) bookmarks: bool,
    pub(crate) send_initial: bool,
    pub(crate) timeout_secs: Option<u64>,
    pub(crate) table: bool,
    pub(crate) include_object: String,
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

impl Opts {
    pub(crate) fn parse(q: &HashMap<String, String>, info: &ResourceInfo, accept: &str) -> Result<Self, ApiError> {
        let field = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), info.kind)
            .map_err(|e| ApiError::bad_request(e.0))?;
        let label = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.0))?;
        let limit = match q.get("limit") {
            Some(l) => Some(
                l.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{l}\": must be a number")))?,
            ),
            None => None,
        }
        .filter(|l| *l > 0)
        .map(|l| l as usize);
        Ok(Self {
            field,
            label,
            limit,
            cont: q.get("continue").filter(|c| !c.is_empty()).cloned(),
            rv: q.get("resourceVersion").filter(|r| !r.is_empty()).cloned(),
            rv_match: q.get("resourceVersionMatch").filter(|r| !r.is_empty()).cloned(),
            bookmarks: flag(q, "allowWatchBookmarks"),
            send_initial: flag(q, "sendInitialEvents"),
            timeout_secs: q.get("timeoutSeconds").and_then(|t| t.parse().ok()),
            table: accept.contains("as=Table"),
            include_object: q
                .get("includeObject")
                .cloned()
                .unwrap_or_else(|| "Metadata".to_string()),
        })
    }

    pub(crate) fn matches(&self, snap: &Snapshot) -> bool {
        self.field.matches(&snap.fields) && self.label.matches(&snap.labels)
    }

    /// The parsed `resourceVersion` ("0" and unset both mean "any/most recent").
    pub(crate) fn rv_number(&self) -> Result<Option<u64>, ApiError> {
        match self.rv.as_deref() {
            None | Some("0") => Ok(None),
            Some(r) => r.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: Invalid value: \"{r}\": must be a number"))
            }),
        }
    }
}

fn encode_continue(rv: u64, key: &Key, namespaced: bool) -> String {
    let start = if namespaced {
        format!("{}/{}\u{0}", key.0, key.1)
    } else {
        format!("{}\u{0}", key.1)
    };
    let raw = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": start });
    STANDARD.encode(raw.to_string())
}

fn decode_continue(token: &str, namespaced: bool) -> Result<(u64, Key), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = STANDARD.decode(token).map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.trim_end_matches('\u{0}');
    let key = if namespaced {
        let (ns, name) = start.split_once('/').ok_or_else(bad)?;
        (ns.to_string(), name.to_string())
    } else {
        (String::new(), start.to_string())
    };
    Ok((rv, key))
}

/// One page of a list.
pub(crate) struct Page {
    pub(crate) items: Vec<Arc<Snapshot>>,
    pub(crate) resource_version: u64,
    pub(crate) continue_token: Option<String>,
}

/// Computes the page a list request asks for.
pub(crate) fn page(store: &Store, info: &ResourceInfo, ns: Option<&str>, opts: &Opts) -> Result<Page, ApiError> {
    let requested = opts.rv_number()?;
    let (at, after, from_continue) = match &opts.cont {
        Some(c) => {
            let (rv, key) = decode_continue(c, info.namespaced)?;
            (Some(rv), Some(key), true)
        }
        None => {
            let exact = match opts.rv_match.as_deref() {
                Some("Exact") => true,
                Some("NotOlderThan") => false,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                    )));
                }
                // Unset match with a non-zero resourceVersion and a limit is an exact read.
                None => opts.limit.is_some(),
            };
            (requested.filter(|_| exact), None, false)
        }
    };
    store.read(|s| {
        let list_rv = at.unwrap_or_else(|| s.current_rv());
        let snaps = s
            .snapshot_at(info.kind, at, after.as_ref(), ns)
            .map_err(|e| match (e, from_continue) {
                (StoreError::Expired(_), true) => ApiError::continue_expired(),
                (StoreError::Expired(floor), false) => ApiError::too_old(at.unwrap_or(0), floor),
                _ => ApiError::no_route(),
            })?;
        let mut items = Vec::new();
        let mut continue_token = None;
        for snap in snaps {
            if !opts.matches(&snap) {
                continue;
            }
            if opts.limit.is_some_and(|l| items.len() >= l) {
                let last: &Arc<Snapshot> = items.last().expect("limit is at least 1");
                continue_token = Some(encode_continue(list_rv, &last.key, info.namespaced));
                break;
            }
            items.push(snap);
        }
        Ok(Page {
            items,
            resource_version: list_rv,
            continue_token,
        })
    })
}

/// Serves a list as `<Kind>List` JSON or as a Table.
pub(crate) fn serve(store: &Store, info: &ResourceInfo, ns: Option<&str>, opts: &Opts) -> Result<Response, ApiError> {
    let page = page(store, info, ns, opts)?;
    if opts.table {
        let t = table::table(
            info,
            page.items.iter().map(|s| s.json.as_ref()),
            &opts.include_object,
            page.resource_version,
            page.continue_token.as_deref(),
        );
        let mut resp = json_body(&t);
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
        );
        return Ok(resp);
    }
    let mut meta = json!({ "resourceVersion": page.resource_version.to_string() });
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    let size: usize = page.items.iter().map(|s| s.json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 256);
    body.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
            info.kind_name,
            info.api_version(),
            meta
        )
        .as_bytes(),
    );
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.json);
    }
    body.extend_from_slice(b"]}");
    Ok(json_bytes(body))
}
