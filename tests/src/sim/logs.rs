//! Container logs (`pods/log`) with `container`, `previous`, `tailLines` and `limitBytes`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use super::status::ApiError;
use super::store::State;

#[derive(Debug, Default, Clone)]
struct ContainerLogs {
    current: String,
    previous: Option<String>,
}

/// Logs per (namespace, pod, container).
#[derive(Debug, Default)]
pub(crate) struct LogStore {
    logs: HashMap<(String, String, String), ContainerLogs>,
}

impl LogStore {
    pub(crate) fn set(
        &mut self,
        ns: &str,
        pod: &str,
        container: &str,
        current: Option<String>,
        previous: Option<String>,
    ) {
        let entry = self
            .logs
            .entry((ns.to_string(), pod.to_string(), container.to_string()))
            .or_default();
        if let Some(c) = current {
            entry.current = c;
        }
        if previous.is_some() {
            entry.previous = previous;
        }
    }

    pub(crate) fn append(&mut self, ns: &str, pod: &str, container: &str, line: &str) {
        let entry = self
            .logs
            .entry((ns.to_string(), pod.to_string(), container.to_string()))
            .or_default();
        entry.current.push_str(line);
        if !line.ends_with('\n') {
            entry.current.push('\n');
        }
    }

    /// A restart: the current run's log becomes the previous one.
    pub(crate) fn rotate(&mut self, ns: &str, pod: &str, container: &str) {
        let entry = self
            .logs
            .entry((ns.to_string(), pod.to_string(), container.to_string()))
            .or_default();
        entry.previous = Some(std::mem::take(&mut entry.current));
    }
}

/// The `pods/log` query.
#[derive(Debug, Default)]
pub(crate) struct LogQuery {
    pub(crate) container: Option<String>,
    pub(crate) previous: bool,
    pub(crate) tail_lines: Option<usize>,
    pub(crate) limit_bytes: Option<usize>,
}

/// Serves a log read with the real server's validation messages.
pub(crate) fn read(state: &State, ns: &str, pod_name: &str, q: &LogQuery) -> Result<String, ApiError> {
    let pods = super::discovery::for_kind(super::store::Kind::Pod);
    let pod = state
        .get::<Pod>(ns, pod_name)
        .ok_or_else(|| ApiError::not_found(pods, pod_name))?;
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let container = match &q.container {
        Some(c) if !c.is_empty() => {
            if !names.contains(c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )));
            }
            c.clone()
        }
        _ if names.len() == 1 => names[0].clone(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let logs = state
        .logs
        .logs
        .get(&(ns.to_string(), pod_name.to_string(), container.clone()))
        .cloned()
        .unwrap_or_default();
    let text = if q.previous {
        let restarted = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|v| v.iter().find(|c| c.name == container))
            .is_some_and(|c| c.last_state.as_ref().is_some_and(|l| l.terminated.is_some()));
        match logs.previous {
            Some(p) if restarted || !p.is_empty() => p,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                )));
            }
        }
    } else {
        logs.current
    };
    let mut out = match q.tail_lines {
        Some(n) => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            lines[lines.len().saturating_sub(n)..].concat()
        }
        None => text,
    };
    if let Some(limit) = q.limit_bytes
        && out.len() > limit
    {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    Ok(out)
}
