//! Wire types of protocol v1 (see `docs/PROTOCOL.md`).
//!
//! Compatibility: unknown fields are ignored on read, so an older collector
//! accepts a newer agent's batches; optional fields default when missing.

use crate::classify::{IncidentType, Severity};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Most events one ingest batch may carry.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// Field size limits, in bytes. The agent truncates to them before sending;
/// the collector refuses anything larger.
pub mod limits {
    /// `uid`, `pod_uid`.
    pub const UID: usize = 128;
    /// Kubernetes object names (namespace, pod, node, workload, container).
    pub const NAME: usize = 253;
    /// `reason`, `source`, workload kind.
    pub const REASON: usize = 128;
    /// `message`.
    pub const MESSAGE: usize = 4096;
    /// `logs`.
    pub const LOGS: usize = 64 * 1024;
}

/// The body of `POST /v1/ingest`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestBatch {
    /// Who sent it; informational, never trusted for identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
    /// The warnings, at most [`MAX_BATCH_EVENTS`].
    pub events: Vec<WarningEvent>,
}

/// Informational metadata about the sending agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentInfo {
    /// The agent's version string.
    #[serde(default)]
    pub version: String,
    /// Events the agent had to drop so far (spool overflow), a running total.
    #[serde(default)]
    pub dropped_total: u64,
}

/// The workload that owns a Pod, resolved through its owner chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet` …
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

/// One Pod warning, as the agent saw it.
///
/// Identity is (`cluster` from the sender's certificate, `uid`). The same
/// `uid` sent again with a higher `count` adds only the difference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WarningEvent {
    /// The Kubernetes Event's `metadata.uid`, or a stable synthetic id for
    /// warnings the agent derived from Pod status.
    pub uid: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub pod: String,
    /// The Pod's uid, when known.
    #[serde(default)]
    pub pod_uid: Option<String>,
    /// The node the Pod runs on, when it has one.
    #[serde(default)]
    pub node: Option<String>,
    /// The owning workload, `null` for a bare Pod or when unknown.
    #[serde(default)]
    pub workload: Option<Workload>,
    /// The container the warning is about, when the event names one.
    #[serde(default)]
    pub container: Option<String>,
    /// The Event's `reason`.
    pub reason: String,
    /// The Event's `message`.
    #[serde(default)]
    pub message: String,
    /// The class the agent assigned.
    pub incident_type: IncidentType,
    /// The severity the agent assigned.
    pub severity: Severity,
    /// How many times Kubernetes observed this event so far (≥ 1).
    pub count: u32,
    /// First occurrence (RFC 3339).
    pub first_seen: Timestamp,
    /// Latest occurrence (RFC 3339).
    pub last_seen: Timestamp,
    /// The component that reported it (`kubelet`, `default-scheduler` …).
    #[serde(default)]
    pub source: Option<String>,
    /// The last lines of the previous container's log, for crash-type incidents.
    #[serde(default)]
    pub logs: Option<String>,
}

/// Why a [`WarningEvent`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// A required text field is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// The field's name.
        field: &'static str,
    },
    /// A text field is longer than its limit.
    #[error("`{field}` is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `count` is zero.
    #[error("`count` must be at least 1")]
    ZeroCount,
}

impl WarningEvent {
    /// Checks the field limits of protocol v1.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        use limits::*;
        non_empty("uid", &self.uid)?;
        non_empty("namespace", &self.namespace)?;
        non_empty("pod", &self.pod)?;
        non_empty("reason", &self.reason)?;
        let fields: [(&'static str, Option<&str>, usize); 11] = [
            ("uid", Some(&self.uid), UID),
            ("namespace", Some(&self.namespace), NAME),
            ("pod", Some(&self.pod), NAME),
            ("pod_uid", self.pod_uid.as_deref(), UID),
            ("node", self.node.as_deref(), NAME),
            ("container", self.container.as_deref(), NAME),
            ("reason", Some(&self.reason), REASON),
            ("message", Some(&self.message), MESSAGE),
            ("source", self.source.as_deref(), REASON),
            ("logs", self.logs.as_deref(), LOGS),
            ("workload.name", self.workload.as_ref().map(|w| w.name.as_str()), NAME),
        ];
        for (field, value, max) in fields {
            let len = value.map_or(0, str::len);
            if len > max {
                return Err(InvalidEvent::TooLong { field, len, max });
            }
        }
        if let Some(w) = &self.workload {
            non_empty("workload.kind", &w.kind)?;
            non_empty("workload.name", &w.name)?;
            if w.kind.len() > REASON {
                return Err(InvalidEvent::TooLong {
                    field: "workload.kind",
                    len: w.kind.len(),
                    max: REASON,
                });
            }
        }
        if self.count == 0 {
            return Err(InvalidEvent::ZeroCount);
        }
        Ok(())
    }
}

fn non_empty(field: &'static str, value: &str) -> Result<(), InvalidEvent> {
    if value.is_empty() {
        Err(InvalidEvent::Empty { field })
    } else {
        Ok(())
    }
}

/// The answer to a stored batch (HTTP 200).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestResponse {
    /// Events that were new, or whose `count` grew.
    pub accepted: u64,
    /// Events that changed nothing (replays, retries, lower or equal counts).
    pub duplicate: u64,
    /// Occurrences added in total: a new event adds its `count`, a grown one the difference.
    pub occurrences: u64,
}

/// The JSON error shape every endpoint answers with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`invalid_body`, `payload_too_large` …).
    pub code: String,
    /// What is wrong and what to do, for a human.
    pub message: String,
}
