//! `meta.k8s.io/v1` Table rendering (what kubectl asks for with `Accept: ...;as=Table`),
//! with the columns of the real server's printers for Pods and Events.

use serde_json::{Value, json};

use super::discovery::ResourceInfo;
use super::store::Kind;

fn col(name: &str, priority: u8, format: &str) -> Value {
    json!({ "name": name, "type": "string", "format": format, "description": name, "priority": priority })
}

fn columns(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Pod => vec![
            col("Name", 0, "name"),
            col("Ready", 0, ""),
            col("Status", 0, ""),
            col("Restarts", 0, ""),
            col("Age", 0, ""),
            col("IP", 1, ""),
            col("Node", 1, ""),
            col("Nominated Node", 1, ""),
            col("Readiness Gates", 1, ""),
        ],
        Kind::Event => vec![
            col("Last Seen", 0, ""),
            col("Type", 0, ""),
            col("Reason", 0, ""),
            col("Object", 0, ""),
            col("Subobject", 1, ""),
            col("Source", 1, ""),
            col("Message", 0, ""),
            col("First Seen", 1, ""),
            col("Count", 1, ""),
            col("Name", 1, "name"),
        ],
        Kind::Namespace | Kind::Node => vec![col("Name", 0, "name"), col("Status", 0, ""), col("Age", 0, "")],
        _ => vec![col("Name", 0, "name"), col("Age", 0, "")],
    }
}

/// Human age as kubectl prints it (`45s`, `3m12s`, `5h`, `2d3h`).
pub(crate) fn human_age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".to_string();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |acc, p| acc.get(p))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|c| c["ready"].as_bool() == Some(true)).count();
    let restarts: i64 = statuses.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
    let mut status = s(o, &["status", "phase"]).to_string();
    for c in &statuses {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            status = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            status = r.to_string();
        }
    }
    let last_restart = statuses
        .iter()
        .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
        .max()
        .map(|t| format!("{restarts} ({} ago)", human_age(Some(t))));
    let or_none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        json!(s(o, &["metadata", "name"])),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(last_restart.unwrap_or_else(|| restarts.to_string())),
        json!(human_age(o["metadata"]["creationTimestamp"].as_str())),
        json!(or_none(s(o, &["status", "podIP"]))),
        json!(or_none(s(o, &["spec", "nodeName"]))),
        json!(or_none(s(o, &["status", "nominatedNodeName"]))),
        json!("<none>"),
    ]
}

fn event_cells(o: &Value) -> Vec<Value> {
    let last = o["lastTimestamp"]
        .as_str()
        .or_else(|| o["series"]["lastObservedTime"].as_str())
        .or_else(|| o["eventTime"].as_str());
    let first = o["firstTimestamp"].as_str().or_else(|| o["eventTime"].as_str());
    let count = o["series"]["count"]
        .as_i64()
        .or_else(|| o["count"].as_i64())
        .unwrap_or(1);
    let io = &o["involvedObject"];
    let source = match (s(o, &["source", "component"]), s(o, &["source", "host"])) {
        ("", _) => s(o, &["reportingComponent"]).to_string(),
        (c, "") => c.to_string(),
        (c, h) => format!("{c}, {h}"),
    };
    vec![
        json!(human_age(last)),
        json!(s(o, &["type"])),
        json!(s(o, &["reason"])),
        json!(format!("{}/{}", s(io, &["kind"]).to_lowercase(), s(io, &["name"]))),
        json!(s(io, &["fieldPath"])),
        json!(source),
        json!(s(o, &["message"])),
        json!(human_age(first)),
        json!(count.to_string()),
        json!(s(o, &["metadata", "name"])),
    ]
}

fn cells(kind: Kind, o: &Value) -> Vec<Value> {
    let age = json!(human_age(o["metadata"]["creationTimestamp"].as_str()));
    let name = json!(s(o, &["metadata", "name"]));
    match kind {
        Kind::Pod => pod_cells(o),
        Kind::Event => event_cells(o),
        Kind::Namespace => vec![name, json!(s(o, &["status", "phase"])), age],
        Kind::Node => vec![name, json!("Ready"), age],
        _ => vec![name, age],
    }
}

/// One Table row; `include` is the `includeObject` policy (None, Metadata, Object).
fn row(kind: Kind, raw: &[u8], include: &str) -> Value {
    let o: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let mut row = json!({ "cells": cells(kind, &o) });
    match include {
        "None" => {}
        "Object" => row["object"] = o,
        _ => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o["metadata"],
            });
        }
    }
    row
}

/// A Table of `items` (serialized objects) with list metadata.
pub(crate) fn table<'a>(
    info: &ResourceInfo,
    items: impl Iterator<Item = &'a [u8]>,
    include: &str,
    resource_version: u64,
    continue_token: Option<&str>,
) -> Value {
    let mut meta = json!({ "resourceVersion": resource_version.to_string() });
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(info.kind),
        "rows": items.map(|raw| row(info.kind, raw, include)).collect::<Vec<_>>(),
    })
}
