//! The install files: `manifests/` (what users `kubectl apply`), the kustomize
//! sources it is rendered from (`deploy/kustomize`) and the Helm charts
//! (`deploy/helm`), checked offline.
//!
//! - Schema: every YAML document is deserialised into its `k8s-openapi` type
//!   and serialised back; a key of the original that the round trip lost is a
//!   field Kubernetes does not know (k8s-openapi ignores unknown fields, the
//!   API server would too, silently) and fails the test with its path.
//! - Security: non-root, read-only root filesystem, no privilege escalation,
//!   all capabilities dropped, seccomp, probes, resources; RBAC read-only.
//! - Drift: `manifests/` must equal `kubectl kustomize` of its overlay, and the
//!   Helm charts' renders (Helm's Go template engine from the PyPI package
//!   helm-python-sdk, driven by `deploy/helm/render.py`) must equal them.
//!
//! Regenerate `manifests/` after changing `deploy/kustomize`:
//! `PODWARN_UPDATE_MANIFESTS=1 cargo test -p podwarn-testkit --test manifests`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A rendered install: its kustomize source, the committed file, and the Helm
/// chart (with a values file) that must render the same objects.
struct Render {
    kustomize: &'static str,
    manifest: &'static str,
    chart: &'static str,
    values: Option<&'static str>,
}

const RENDERS: &[Render] = &[
    Render {
        kustomize: "deploy/kustomize/overlays/deployment",
        manifest: "manifests/agent.yaml",
        chart: "deploy/helm/podwarn-agent",
        values: None,
    },
    Render {
        kustomize: "deploy/kustomize/overlays/daemonset",
        manifest: "manifests/daemonset/agent.yaml",
        chart: "deploy/helm/podwarn-agent",
        values: Some("deploy/helm/podwarn-agent/ci/daemonset-values.yaml"),
    },
    Render {
        kustomize: "deploy/kustomize/overlays/namespaced",
        manifest: "manifests/namespaced/agent.yaml",
        chart: "deploy/helm/podwarn-agent",
        values: Some("deploy/helm/podwarn-agent/ci/namespaced-values.yaml"),
    },
    Render {
        kustomize: "deploy/kustomize/collector",
        manifest: "manifests/collector.yaml",
        chart: "deploy/helm/podwarn-collector",
        values: None,
    },
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// In CI a missing renderer is a failure; on a developer machine a notice.
fn missing_tool(what: &str) {
    let msg = format!("{what} (.ci/run installs it)");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

// ---------------------------------------------------------------------------
// Parsing and schema validation
// ---------------------------------------------------------------------------

/// Every non-empty YAML document of `text`, as JSON trees.
fn parse_documents(text: &str, origin: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc: Value = serde::Deserialize::deserialize(de)
            .unwrap_or_else(|e| panic!("{origin}: document {i} is not valid YAML: {e}"));
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    docs
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Value, String> {
    let typed: T =
        serde_path_to_error::deserialize(doc.clone()).map_err(|e| format!("at {}: {}", e.path(), e.inner()))?;
    serde_json::to_value(typed).map_err(|e| format!("does not serialise back: {e}"))
}

/// Keys (and scalar values) of `original` that the typed round trip lost or changed.
fn lost_fields(original: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(bv) => lost_fields(v, bv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(format!("unknown field `{p}`")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                lost_fields(ov, bv, &format!("{path}[{i}]"), out);
            }
        }
        (o, b) if o == b => {}
        (o, b) => out.push(format!("`{path}`: {o} here, {b} there")),
    }
}

/// Checks one document against the Kubernetes schema of its apiVersion/kind.
fn validate(doc: &Value) -> Result<(), String> {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let back = match (api, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(doc),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc),
        ("v1", "Service") => round_trip::<Service>(doc),
        ("v1", "Secret") => round_trip::<Secret>(doc),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => round_trip::<ClusterRoleBinding>(doc),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(doc),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(doc),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(doc),
        ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => round_trip::<NetworkPolicy>(doc),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(doc),
        ("coordination.k8s.io/v1", "Lease") => round_trip::<Lease>(doc),
        _ => Err(format!("unknown apiVersion/kind {api:?}/{kind:?}")),
    }?;
    let mut lost = Vec::new();
    lost_fields(doc, &back, "", &mut lost);
    if lost.is_empty() { Ok(()) } else { Err(lost.join("; ")) }
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["namespace"].as_str().unwrap_or("-"),
        doc["metadata"]["name"].as_str().unwrap_or("?"),
    )
}

/// Schema and security problems of every document, one line each.
fn problems(docs: &[Value], origin: &str) -> Vec<String> {
    let mut out = Vec::new();
    for doc in docs {
        if let Err(e) = validate(doc) {
            out.push(format!("{origin}: {}: {e}", describe(doc)));
            continue;
        }
        for p in security_problems(doc) {
            out.push(format!("{origin}: {}: {p}", describe(doc)));
        }
    }
    out
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// Security properties
// ---------------------------------------------------------------------------

fn typed<T: DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).expect("validated before")
}

fn pod_template(doc: &Value) -> Option<PodTemplateSpec> {
    match doc["kind"].as_str()? {
        "Deployment" => typed::<Deployment>(doc).spec.map(|s| s.template),
        "DaemonSet" => typed::<DaemonSet>(doc).spec.map(|s| s.template),
        "StatefulSet" => typed::<StatefulSet>(doc).spec.map(|s| s.template),
        _ => None,
    }
}

fn rule_problems(rules: &[PolicyRule], leases_allowed: bool) -> Vec<String> {
    let mut out = Vec::new();
    for rule in rules {
        let resources = rule.resources.clone().unwrap_or_default();
        let groups = rule.api_groups.clone().unwrap_or_default();
        if resources.iter().chain(&groups).chain(&rule.verbs).any(|s| s == "*") {
            out.push(format!("wildcard in rule {rule:?}"));
        }
        if resources.iter().any(|r| r.starts_with("secrets")) {
            out.push("grants access to Secrets".into());
        }
        let leases = groups == ["coordination.k8s.io"] && resources == ["leases"];
        let allowed: &[&str] = if leases && leases_allowed {
            &["get", "create", "update"]
        } else {
            &["get", "list", "watch"]
        };
        for verb in &rule.verbs {
            if !allowed.contains(&verb.as_str()) {
                out.push(format!("verb {verb:?} on {resources:?} (read-only: {allowed:?})"));
            }
        }
    }
    out
}

fn container_problems(c: &Container, pod: &PodSpec, https_probes: bool) -> Vec<String> {
    let mut out = Vec::new();
    let name = &c.name;
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
        out.push(format!("container {name}: runAsNonRoot is not true"));
    }
    if sc.run_as_user.or(pod_sc.run_as_user).is_none_or(|u| u == 0) {
        out.push(format!("container {name}: runAsUser unset or 0"));
    }
    if sc.read_only_root_filesystem != Some(true) {
        out.push(format!("container {name}: readOnlyRootFilesystem is not true"));
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push(format!("container {name}: allowPrivilegeEscalation is not false"));
    }
    if sc.privileged == Some(true) {
        out.push(format!("container {name}: privileged"));
    }
    let caps = sc.capabilities.unwrap_or_default();
    if !caps.drop.unwrap_or_default().iter().any(|d| d == "ALL") {
        out.push(format!("container {name}: capabilities do not drop ALL"));
    }
    if caps.add.is_some_and(|a| !a.is_empty()) {
        out.push(format!("container {name}: adds capabilities"));
    }
    let seccomp = sc.seccomp_profile.or(pod_sc.seccomp_profile).map(|s| s.type_);
    if seccomp.as_deref() != Some("RuntimeDefault") {
        out.push(format!("container {name}: seccompProfile is not RuntimeDefault"));
    }
    for (what, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ] {
        match probe.as_ref().and_then(|p| p.http_get.as_ref()) {
            None => out.push(format!("container {name}: no HTTP {what}")),
            Some(get) if https_probes && get.scheme.as_deref() != Some("HTTPS") => {
                out.push(format!("container {name}: {what} must use scheme HTTPS"))
            }
            Some(_) => {}
        }
    }
    let res = c.resources.clone().unwrap_or_default();
    for (what, map) in [("requests", res.requests), ("limits", res.limits)] {
        let map = map.unwrap_or_default();
        if !map.contains_key("cpu") || !map.contains_key("memory") {
            out.push(format!("container {name}: resources.{what} lacks cpu or memory"));
        }
    }
    out
}

/// What a document does that the deployment rules (STYLE.md, DESIGN.md invariant 1) forbid.
fn security_problems(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match doc["kind"].as_str().unwrap_or_default() {
        "ClusterRole" => out.extend(rule_problems(
            &typed::<ClusterRole>(doc).rules.unwrap_or_default(),
            false,
        )),
        "Role" => out.extend(rule_problems(&typed::<Role>(doc).rules.unwrap_or_default(), true)),
        _ => {}
    }
    let Some(template) = pod_template(doc) else {
        return out;
    };
    let pod = template.spec.unwrap_or_default();
    let collector = pod.service_account_name.as_deref() == Some("podwarn-collector");
    // The agent needs its token for the API server; the collector never talks to it.
    let want_token = !collector;
    if pod.automount_service_account_token != Some(want_token) {
        out.push(format!("automountServiceAccountToken must be {want_token}"));
    }
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        out.push("uses host namespaces".into());
    }
    for v in pod.volumes.iter().flatten() {
        if v.host_path.is_some() {
            out.push(format!("volume {}: hostPath", v.name));
        }
        if let Some(e) = &v.empty_dir
            && e.size_limit.is_none()
        {
            out.push(format!("volume {}: emptyDir without sizeLimit", v.name));
        }
    }
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        out.extend(container_problems(c, &pod, collector));
    }
    out
}

// ---------------------------------------------------------------------------
// Renderers
// ---------------------------------------------------------------------------

fn kubectl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(p));
    }
    let usr = PathBuf::from("/usr/bin/kubectl");
    if usr.exists() {
        return Some(usr);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("kubectl"))
        .find(|p| p.exists())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn kustomize(kubectl: &Path, dir: &str) -> String {
    run(Command::new(kubectl).arg("kustomize").arg(repo().join(dir)))
}

/// The Python that has helm-python-sdk: `PODWARN_HELM_PYTHON`, else `python3` if it can import it.
fn helm_python() -> Option<PathBuf> {
    let python = std::env::var_os("PODWARN_HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

fn helm_render(python: &Path, chart: &str, args: &[&str]) -> String {
    let root = repo();
    run(Command::new(python)
        .arg(root.join("deploy/helm/render.py"))
        .arg(root.join(chart))
        .args(["--namespace", "podwarn", "--lint"])
        .args(args)
        .current_dir(&root))
}

fn helm_render_values(python: &Path, r: &Render) -> String {
    let values = r.values.map(|v| repo().join(v).display().to_string());
    let args: Vec<&str> = values.iter().flat_map(|v| ["--values", v.as_str()]).collect();
    helm_render(python, r.chart, &args)
}

fn by_identity(docs: &[Value]) -> BTreeMap<String, Value> {
    docs.iter()
        // Helm does not own the release namespace (`--create-namespace` makes it).
        .filter(|d| d["kind"] != "Namespace")
        .map(|d| (describe(d), d.clone()))
        .collect()
}

fn header(r: &Render) -> String {
    format!(
        "# Generated from {} (its comments explain the choices; resource figures: docs/BENCHMARKS.md) by\n# PODWARN_UPDATE_MANIFESTS=1 cargo test -p podwarn-testkit --test manifests\n# Do not edit: change the kustomize source, and the Helm chart in deploy/helm to match (a test compares them).\n",
        r.kustomize
    )
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn every_manifest_matches_the_kubernetes_schema_and_the_security_rules() {
    let mut files = Vec::new();
    yaml_files(&repo().join("manifests"), &mut files);
    files.sort();
    let committed: Vec<PathBuf> = RENDERS.iter().map(|r| repo().join(r.manifest)).collect();
    for c in &committed {
        assert!(files.contains(c), "{} is missing", c.display());
    }
    let mut all = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let origin = file.strip_prefix(repo()).expect("under the repo").display().to_string();
        let docs = parse_documents(&text, &origin);
        assert!(!docs.is_empty(), "{origin}: no documents");
        all.extend(problems(&docs, &origin));
    }
    assert_no_problems(all);
}

#[test]
fn manifests_hold_what_the_install_needs() {
    let kinds = |path: &str| -> Vec<String> { parse_documents(&read(path), path).iter().map(describe).collect() };
    let agent = kinds("manifests/agent.yaml");
    for want in [
        "Namespace -/podwarn",
        "ServiceAccount podwarn/podwarn-agent",
        "ClusterRole -/podwarn-agent",
        "ClusterRoleBinding -/podwarn-agent",
        "Role podwarn/podwarn-agent-leader-election",
        "RoleBinding podwarn/podwarn-agent-leader-election",
        "NetworkPolicy podwarn/podwarn-agent",
        "Deployment podwarn/podwarn-agent",
    ] {
        assert!(
            agent.contains(&want.to_string()),
            "manifests/agent.yaml lacks {want}: {agent:?}"
        );
    }
    assert!(kinds("manifests/daemonset/agent.yaml").contains(&"DaemonSet podwarn/podwarn-agent".to_string()));
    let namespaced = kinds("manifests/namespaced/agent.yaml");
    assert!(!namespaced.iter().any(|k| k.starts_with("Cluster")), "{namespaced:?}");
    assert!(
        namespaced.contains(&"Role team-a/podwarn-agent".to_string()),
        "{namespaced:?}"
    );
    let collector = kinds("manifests/collector.yaml");
    for want in [
        "StatefulSet podwarn/podwarn-collector",
        "Service podwarn/podwarn-collector",
        "NetworkPolicy podwarn/podwarn-collector",
    ] {
        assert!(collector.contains(&want.to_string()), "{collector:?}");
    }

    // Deployment mode: two replicas, leader election, the downward API for the Lease identity.
    let docs = parse_documents(&read("manifests/agent.yaml"), "agent");
    let deployment: Deployment = typed(docs.iter().find(|d| d["kind"] == "Deployment").expect("Deployment"));
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let env = spec.template.spec.expect("pod").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .map(|e| e.value.clone().unwrap_or_default())
    };
    assert_eq!(value("PODWARN_LEADER_ELECT").as_deref(), Some("true"));
    assert_eq!(value("PODWARN_MODE").as_deref(), Some("deployment"));
    for downward in ["POD_NAME", "POD_NAMESPACE"] {
        assert!(
            env.iter().any(|e| e.name == downward && e.value_from.is_some()),
            "{downward}"
        );
    }
    // DaemonSet mode: NODE_NAME from spec.nodeName.
    let docs = parse_documents(&read("manifests/daemonset/agent.yaml"), "daemonset");
    let ds: DaemonSet = typed(docs.iter().find(|d| d["kind"] == "DaemonSet").expect("DaemonSet"));
    let env = ds.spec.expect("spec").template.spec.expect("pod").containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let node = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");
}

#[test]
fn manifests_are_the_kustomize_render() {
    let Some(kubectl) = kubectl() else {
        return missing_tool("kubectl not found: cannot render deploy/kustomize");
    };
    let update = std::env::var_os("PODWARN_UPDATE_MANIFESTS").is_some();
    let mut drift = Vec::new();
    for r in RENDERS {
        let rendered = kustomize(&kubectl, r.kustomize);
        let docs = parse_documents(&rendered, r.kustomize);
        assert_no_problems(problems(&docs, r.kustomize));
        if update {
            let path = repo().join(r.manifest);
            std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
            std::fs::write(&path, format!("{}{rendered}", header(r))).expect("write");
            continue;
        }
        // Compared as objects, so another kubectl's formatting is not drift.
        let committed = parse_documents(&read(r.manifest), r.manifest);
        if committed != docs {
            let (c, k) = (by_identity(&committed), by_identity(&docs));
            let differing: std::collections::BTreeSet<&String> =
                c.keys().chain(k.keys()).filter(|id| c.get(*id) != k.get(*id)).collect();
            drift.push(format!(
                "{} differs from {} (objects: {differing:?})",
                r.manifest, r.kustomize
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "manifests/ drifted from deploy/kustomize; regenerate with\n  PODWARN_UPDATE_MANIFESTS=1 cargo test -p podwarn-testkit --test manifests\n{}",
        drift.join("\n")
    );
}

#[test]
fn helm_charts_render_the_manifests() {
    let Some(python) = helm_python() else {
        return missing_tool("helm-python-sdk (Helm's template engine) not importable: set PODWARN_HELM_PYTHON");
    };
    let mut diffs = Vec::new();
    for r in RENDERS {
        let origin = format!("helm {} {:?}", r.chart, r.values);
        let helm = parse_documents(&helm_render_values(&python, r), &origin);
        assert_no_problems(problems(&helm, &origin));
        let (h, m) = (
            by_identity(&helm),
            by_identity(&parse_documents(&read(r.manifest), r.manifest)),
        );
        for id in h.keys().chain(m.keys()) {
            match (h.get(id), m.get(id)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => {
                    let mut d = Vec::new();
                    lost_fields(a, b, "", &mut d);
                    lost_fields(b, a, "", &mut d);
                    diffs.push(format!("{origin} vs {}: {id}: {}", r.manifest, d.join("; ")));
                }
                (a, _) => diffs.push(format!(
                    "{origin} vs {}: {id} only in {}",
                    r.manifest,
                    if a.is_some() { "the chart" } else { "the manifest" }
                )),
            }
        }
    }
    diffs.dedup();
    assert_no_problems(diffs);
}

#[test]
fn helm_values_change_what_they_say() {
    let Some(python) = helm_python() else {
        return missing_tool("helm-python-sdk not importable: set PODWARN_HELM_PYTHON");
    };
    let set = r#"{"mode": "daemonset", "leaderElection": {"enabled": false}, "rbac": {"podLogs": false},
        "collector": {"url": "https://podwarn.example.com:8443"}, "enrollment": {"secretName": "prod-eu-token"},
        "excludeNamespaces": ["kube-system"], "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"}}}"#;
    let docs = parse_documents(
        &helm_render(&python, "deploy/helm/podwarn-agent", &["--set-json", set]),
        "helm",
    );
    assert_no_problems(problems(&docs, "helm --set-json"));
    let ids: Vec<String> = docs.iter().map(describe).collect();
    assert!(!ids.iter().any(|i| i.contains("leader-election")), "{ids:?}");
    assert!(!ids.iter().any(|i| i.starts_with("Deployment")), "{ids:?}");
    let role: ClusterRole = typed(docs.iter().find(|d| d["kind"] == "ClusterRole").expect("ClusterRole"));
    let rules = role.rules.unwrap_or_default();
    assert!(
        !rules
            .iter()
            .flat_map(|r| r.resources.iter().flatten())
            .any(|r| r == "pods/log")
    );
    let ds: DaemonSet = typed(docs.iter().find(|d| d["kind"] == "DaemonSet").expect("DaemonSet"));
    let c = ds.spec.expect("spec").template.spec.expect("pod").containers[0].clone();
    let env: BTreeMap<String, String> = c
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    assert_eq!(env["PODWARN_LEADER_ELECT"], "false");
    assert_eq!(env["PODWARN_NO_LOGS"], "true");
    assert_eq!(env["PODWARN_COLLECTOR"], "https://podwarn.example.com:8443");
    assert_eq!(env["PODWARN_EXCLUDE_NAMESPACES"], "kube-system");
    let secret = c.env_from.unwrap_or_default()[0].secret_ref.clone().expect("secretRef");
    assert_eq!(secret.name, "prod-eu-token");
    let limits = c.resources.expect("resources").limits.expect("limits");
    assert_eq!(limits["memory"].0, "256Mi");

    // The collector chart: extra certificate names and a restricted NetworkPolicy.
    let set = r#"{"advertise": ["podwarn.example.com"], "service": {"type": "LoadBalancer"},
        "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "podwarn"}}}]}}"#;
    let docs = parse_documents(
        &helm_render(&python, "deploy/helm/podwarn-collector", &["--set-json", set]),
        "helm",
    );
    assert_no_problems(problems(&docs, "helm collector --set-json"));
    let sts: StatefulSet = typed(docs.iter().find(|d| d["kind"] == "StatefulSet").expect("StatefulSet"));
    let args = sts.spec.expect("spec").template.spec.expect("pod").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args.iter()
            .any(|a| a.starts_with("--advertise=") && a.ends_with(",podwarn.example.com")),
        "{args:?}"
    );
    let np: NetworkPolicy = typed(
        docs.iter()
            .find(|d| d["kind"] == "NetworkPolicy")
            .expect("NetworkPolicy"),
    );
    let ingress = np.spec.expect("spec").ingress.expect("ingress");
    assert_eq!(ingress[0].from.as_ref().map(Vec::len), Some(1));

    // A namespaced install without namespaces is refused by the chart, not rendered wrong.
    let out = Command::new(&python)
        .arg(repo().join("deploy/helm/render.py"))
        .arg(repo().join("deploy/helm/podwarn-agent"))
        .args(["--set-json", r#"{"rbac": {"scope": "namespaced"}}"#])
        .output()
        .expect("render.py runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the watched namespaces"));
}

#[test]
fn the_validator_rejects_broken_manifests() {
    let text = read("tests/fixtures/manifests/broken.yaml");
    let docs = parse_documents(&text, "broken.yaml");
    let errors: Vec<String> = docs.iter().map(|d| validate(d).expect_err(&describe(d))).collect();
    let expect = [
        "unknown field `spec.replica`",
        "unknown field `spec.template.spec.containers[0].imagePullPolicyy`",
        "at spec.replicas: invalid type: string \"two\"",
        "at spec.ports[0].port: invalid type: string",
        "unknown apiVersion/kind \"apps/v1\"/\"Deplyoment\"",
        "unknown field `rules[0].verb`",
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (err, want) in errors.iter().zip(expect) {
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }

    let text = read("tests/fixtures/manifests/insecure.yaml");
    let docs = parse_documents(&text, "insecure.yaml");
    let found = problems(&docs, "insecure.yaml").join("\n");
    for want in [
        "readOnlyRootFilesystem is not true",
        "allowPrivilegeEscalation is not false",
        "capabilities do not drop ALL",
        "runAsNonRoot is not true",
        "no HTTP readinessProbe",
        "automountServiceAccountToken must be true",
        "emptyDir without sizeLimit",
        "grants access to Secrets",
        "verb \"create\" on [\"pods\"]",
    ] {
        assert!(found.contains(want), "expected {want:?} in\n{found}");
    }
}

/// The Dockerfiles' dependency layer builds the workspace from its manifests
/// with empty sources: every member's Cargo.toml must be copied in, and every
/// declared binary and benchmark must get a stand-in file, or `docker build`
/// fails at "cargo build" when the workspace grows.
#[test]
fn dockerfiles_dependency_stage_covers_the_workspace() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let meta: Value = serde_json::from_str(&run(Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo())))
    .expect("cargo metadata JSON");
    let root = repo();
    for dockerfile in ["Dockerfile.agent", "Dockerfile.collector"] {
        let text = read(dockerfile);
        for package in meta["packages"].as_array().expect("packages") {
            let manifest = Path::new(package["manifest_path"].as_str().expect("manifest_path"));
            let rel = manifest.strip_prefix(&root).expect("member under the repo");
            if rel != Path::new("Cargo.toml") {
                let copy = format!("COPY {} {}/", rel.display(), rel.parent().expect("dir").display());
                assert!(text.contains(&copy), "{dockerfile}: lacks `{copy}`");
            }
            for target in package["targets"].as_array().expect("targets") {
                let kinds: Vec<&str> = target["kind"]
                    .as_array()
                    .expect("kind")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                if !kinds.iter().any(|k| *k == "bin" || *k == "bench") {
                    continue;
                }
                let src = Path::new(target["src_path"].as_str().expect("src_path"));
                let src = src.strip_prefix(&root).expect("under the repo").display().to_string();
                assert!(
                    text.contains(&src),
                    "{dockerfile}: the dependency stage does not create {src}"
                );
            }
        }
        assert!(
            text.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
            "{dockerfile}"
        );
        assert!(text.contains("USER 65532:65532"), "{dockerfile}");
    }
}
