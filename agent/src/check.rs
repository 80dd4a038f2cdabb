//! `podwarn-agent check`: the "Test connection" button as a printed
//! checklist. Every failure says what to do: the missing RBAC rule as YAML,
//! the usual causes of a refused connection, TLS hints.

use crate::access::{self, Access};
use crate::config::CheckArgs;
use crate::enroll;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::Api;
use kube::api::PostParams;
use std::fmt::Write as _;

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Ok, failed (required), or a warning (optional).
    pub status: Status,
    /// What was checked and what was found.
    pub title: String,
    /// What to do, when it failed.
    pub fix: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// A required item failed.
    Fail,
    /// An optional item failed; the agent degrades.
    Warn,
    /// Not checked (nothing configured for it).
    Skip,
}

/// A permission the agent uses.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// API group ("" for core).
    pub group: &'static str,
    /// Resource.
    pub resource: &'static str,
    /// Subresource, if any.
    pub subresource: Option<&'static str>,
    /// Verbs needed.
    pub verbs: &'static [&'static str],
    /// Whether the agent cannot work without it.
    pub required: bool,
    /// What is lost without it (optional ones).
    pub without: &'static str,
}

/// Everything the agent may ask the API server for. Read-only, never Secrets (invariant 1).
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "",
        resource: "events",
        subresource: None,
        verbs: &["get", "list", "watch"],
        required: true,
        without: "",
    },
    Permission {
        group: "",
        resource: "pods",
        subresource: None,
        verbs: &["get", "list", "watch"],
        required: true,
        without: "",
    },
    Permission {
        group: "apps",
        resource: "replicasets",
        subresource: None,
        verbs: &["get"],
        required: false,
        without: "workloads are guessed from ReplicaSet names",
    },
    Permission {
        group: "",
        resource: "pods",
        subresource: Some("log"),
        verbs: &["get"],
        required: false,
        without: "crash warnings are shipped without the container's last log lines",
    },
];

/// The one write the agent may make: its leader-election Lease, in its own
/// namespace, with `--leader-elect`.
pub const LEASE_PERMISSION: Permission = Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    subresource: None,
    verbs: &["get", "create", "update"],
    required: true,
    without: "",
};

/// The RBAC rule granting `p`, as YAML to paste into a ClusterRole (or Role).
pub fn rule_yaml(p: &Permission) -> String {
    rule_yaml_for(p, p.verbs, None)
}

/// The rule granting `verbs` of `p`, only on the object `name` if given.
fn rule_yaml_for(p: &Permission, verbs: &[&str], name: Option<&str>) -> String {
    let resource = match p.subresource {
        Some(sub) => format!("{}/{sub}", p.resource),
        None => p.resource.to_owned(),
    };
    let verbs: Vec<String> = verbs.iter().map(|v| format!("\"{v}\"")).collect();
    let names = name.map_or(String::new(), |n| format!("\n  resourceNames: [\"{n}\"]"));
    format!(
        "- apiGroups: [\"{}\"]\n  resources: [\"{resource}\"]{names}\n  verbs: [{}]",
        p.group,
        verbs.join(", ")
    )
}

/// The rules granting `p` on the object `name` alone: verbs that name no
/// object (`create`: it does not exist yet) cannot be limited to a name, the
/// others can, as the shipped Role does for the Lease.
fn named_rules_yaml(p: &Permission, name: &str) -> String {
    let (named, unnamed): (Vec<&str>, Vec<&str>) = p.verbs.iter().partition(|v| names_an_object(v));
    let mut rules = Vec::new();
    if !unnamed.is_empty() {
        rules.push(rule_yaml_for(p, &unnamed, None));
    }
    if !named.is_empty() {
        rules.push(rule_yaml_for(p, &named, Some(name)));
    }
    rules.join("\n")
}

/// Whether a request with `verb` names an existing object, so that a Role's
/// `resourceNames` can limit it (`create`, `list` and `watch` name none).
fn names_an_object(verb: &str) -> bool {
    !matches!(verb, "create" | "list" | "watch" | "deletecollection")
}

/// Hints for an API server that cannot be reached, by what the error says.
pub fn connection_hint(error: &str) -> String {
    let e = error.to_ascii_lowercase();
    if e.contains("connection refused") {
        "nothing listens at the kubeconfig's server address: is the cluster running (kind/minikube/k3d: is its container up)? \
         From inside a container, 127.0.0.1 is the container itself: use the host's address (e.g. host.docker.internal)."
            .into()
    } else if e.contains("certificate") || e.contains("tls") || e.contains("unknown issuer") {
        "the API server's certificate is not trusted with this kubeconfig's CA: export it again with \
         `kubectl config view --minify --raw` (certificate-authority-data must match the cluster)."
            .into()
    } else if e.contains("401") || e.contains("unauthorized") {
        "the API server rejected the credentials: the token or client certificate in the kubeconfig has expired or \
         was revoked; refresh it (cloud clusters: re-run the provider's get-credentials command)."
            .into()
    } else if e.contains("timed out") || e.contains("timeout") || e.contains("deadline") {
        "no answer in time: a firewall, VPN or security group blocks the way, or the address is wrong.".into()
    } else if e.contains("dns") || e.contains("resolve") || e.contains("lookup") {
        "the API server's host name does not resolve from here: check the kubeconfig's server address and your DNS."
            .into()
    } else {
        "check the kubeconfig's server address and credentials with `kubectl --kubeconfig … get pods`.".into()
    }
}

/// Whether the agent may `verb` `p` in `namespace` (all without one), on the
/// object `name` if given (a Role may grant a verb on named objects only).
async fn allowed(
    client: &kube::Client,
    p: &Permission,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(p.group.to_owned()),
                resource: Some(p.resource.to_owned()),
                subresource: p.subresource.map(str::to_owned),
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Runs every check. Returns the items and whether all required ones passed.
pub async fn run_checks(args: &CheckArgs) -> (Vec<Item>, bool) {
    let mut items = Vec::new();
    let access = match access::connect(&args.access).await {
        Ok(access) => {
            items.push(Item {
                status: Status::Ok,
                title: format!("Kubernetes access: {}", access.source),
                fix: None,
            });
            Some(access)
        }
        Err(e) => {
            items.push(Item {
                status: Status::Fail,
                title: "Kubernetes access".into(),
                fix: Some(e.to_string()),
            });
            None
        }
    };
    if let Some(Access { client, .. }) = &access {
        match client.apiserver_version().await {
            Ok(info) => {
                items.push(Item {
                    status: Status::Ok,
                    title: format!("API server reachable: Kubernetes {}", info.git_version),
                    fix: None,
                });
                check_permissions(client, args, &mut items).await;
            }
            Err(e) => {
                let error = format!("{e}");
                items.push(Item {
                    status: Status::Fail,
                    title: "API server reachable".into(),
                    fix: Some(connection_hint(&format!("{error} {:?}", e))),
                });
            }
        }
    }
    check_identity(args, &mut items).await;
    let ok = items.iter().all(|i| i.status != Status::Fail);
    (items, ok)
}

/// The agent's identity and the collector: the stored certificate (agent,
/// cluster, expiry) and an mTLS probe with it; or, with only a token, the
/// collector's CA against the pin — without enrolling, so no use of the token
/// is spent.
async fn check_identity(args: &CheckArgs, items: &mut Vec<Item>) {
    let Some(url) = args.ship.collector.clone() else {
        items.push(Item {
            status: Status::Skip,
            title: "collector: not checked".into(),
            fix: Some(
                "pass --collector URL with --token and --ca-pin (or --cert-dir DIR) to check the collector and \
                 the agent's identity"
                    .into(),
            ),
        });
        return;
    };
    let config = match enroll::IdentityConfig::from_args(&args.ship, &args.spool_dir) {
        Ok(config) => config,
        Err(e) => {
            items.push(Item {
                status: Status::Fail,
                title: "identity configuration".into(),
                fix: Some(e.to_string()),
            });
            return;
        }
    };
    let dir = &config.cert_dir;
    let now = jiff::Timestamp::now();
    let will_enroll = config
        .token
        .as_ref()
        .zip(config.pin.as_ref())
        .map(|(token, pin)| format!("will enroll with token {} (pin {pin})", token.id()));
    let usable = match enroll::read_stored(dir) {
        enroll::Stored::Present(cert) => {
            let left = cert.life_left(now);
            let what = format!(
                "identity: agent {} of cluster {} (tenant {}), certificate in {} valid until {}",
                cert.agent_id,
                cert.cluster,
                cert.tenant,
                dir.display(),
                cert.not_after
            );
            let (status, fix) = if cert.expired(now) {
                match &will_enroll {
                    Some(plan) => (Status::Warn, format!("the certificate expired; the agent {plan}")),
                    None => (
                        Status::Fail,
                        "the certificate expired and there is no token: pass --token and --ca-pin from \
                         `podwarn-collector token create`"
                            .into(),
                    ),
                }
            } else if left < 0.2 {
                (
                    Status::Warn,
                    format!(
                        "less than 20% of its lifetime left ({:.0}%): a running agent renews it by itself; if none \
                         runs, start one soon",
                        left * 100.0
                    ),
                )
            } else {
                (Status::Ok, String::new())
            };
            items.push(Item {
                status,
                title: what,
                fix: (!fix.is_empty()).then_some(fix),
            });
            !cert.expired(now)
        }
        enroll::Stored::Unusable(why) => {
            items.push(Item {
                status: if will_enroll.is_some() {
                    Status::Warn
                } else {
                    Status::Fail
                },
                title: format!("identity: the certificate in {} is unusable", dir.display()),
                fix: Some(match &will_enroll {
                    Some(plan) => format!("{why}; the agent {plan}"),
                    None => format!("{why}; pass --token and --ca-pin to enroll"),
                }),
            });
            false
        }
        enroll::Stored::Missing => {
            if will_enroll.is_none() {
                items.push(Item {
                    status: Status::Fail,
                    title: format!("identity: no certificate in {}", dir.display()),
                    fix: Some(enroll::EnrollError::NoIdentity { dir: dir.clone() }.to_string()),
                });
                return;
            }
            false
        }
    };
    if usable {
        match crate::ship::probe_collector(&url, dir).await {
            Ok(found) => items.push(Item {
                status: Status::Ok,
                title: found,
                fix: None,
            }),
            Err(problem) => items.push(Item {
                status: Status::Fail,
                title: format!("collector {url}"),
                fix: Some(problem),
            }),
        }
        return;
    }
    let (Some(plan), Some(pin)) = (will_enroll, config.pin.as_ref()) else {
        return;
    };
    // Only the public CA is fetched: the token is not sent, no use is spent.
    match enroll::fetch_ca(&config.collector).await {
        Ok((_, found)) if &found == pin => items.push(Item {
            status: Status::Ok,
            title: format!("collector {url}: its CA matches the pin; the agent {plan}"),
            fix: None,
        }),
        Ok((_, found)) => items.push(Item {
            status: Status::Fail,
            title: format!("collector {url}: its CA does not match --ca-pin"),
            fix: Some(format!(
                "the collector presents {found}, not {pin}: copy the pin again from `podwarn-collector token create`; \
                 if it is right, this is not your collector and the agent will not send it the token"
            )),
        }),
        Err(problem) => items.push(Item {
            status: Status::Fail,
            title: format!("collector {url}: cannot fetch its CA"),
            fix: Some(problem),
        }),
    }
}

async fn check_permissions(client: &kube::Client, args: &CheckArgs, items: &mut Vec<Item>) {
    let namespaces: Vec<Option<&str>> = if args.scope.namespaces.is_empty() {
        vec![None]
    } else {
        args.scope.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for p in PERMISSIONS {
        if args.no_logs && p.subresource == Some("log") {
            continue;
        }
        for ns in &namespaces {
            items.push(check_permission(client, p, *ns, None).await);
        }
    }
    if args.leader.leader_elect {
        let namespace = args.leader.namespace(client);
        let lease = Some(args.leader.lease_name.as_str());
        items.push(check_permission(client, &LEASE_PERMISSION, Some(&namespace), lease).await);
    }
}

/// Asks the API server whether the agent may use `p` in `ns` (all namespaces
/// without one), on the object `name` alone if given, and says which rule to
/// add if not.
async fn check_permission(client: &kube::Client, p: &Permission, ns: Option<&str>, name: Option<&str>) -> Item {
    let mut missing = Vec::new();
    let mut error = None;
    for verb in p.verbs {
        let object = name.filter(|_| names_an_object(verb));
        match allowed(client, p, verb, ns, object).await {
            Ok(true) => {}
            Ok(false) => missing.push(*verb),
            Err(e) => error = Some(e),
        }
    }
    let resource = match p.subresource {
        Some(sub) => format!("{}/{sub}", p.resource),
        None if p.group.is_empty() => p.resource.to_owned(),
        None => format!("{}.{}", p.resource, p.group),
    };
    let place = ns.map_or("all namespaces".to_owned(), |n| format!("namespace {n}"));
    let title = format!("permission: {} {resource} ({place})", p.verbs.join("/"));
    let status = if missing.is_empty() && error.is_none() {
        Status::Ok
    } else if p.required {
        Status::Fail
    } else {
        Status::Warn
    };
    let fix = (status != Status::Ok).then(|| {
        let mut fix = String::new();
        if let Some(e) = &error {
            let _ = writeln!(fix, "could not ask the API server (SelfSubjectAccessReview): {e}");
        }
        if !missing.is_empty() {
            let _ = writeln!(fix, "missing: {}", missing.join(", "));
            if !p.required {
                let _ = writeln!(fix, "without it {}", p.without);
            }
            let kind = if ns.is_some() {
                "Role in that namespace"
            } else {
                "ClusterRole"
            };
            let rules = name.map_or_else(|| rule_yaml(p), |n| named_rules_yaml(p, n));
            let _ = write!(fix, "add this rule to the agent's {kind}:\n{rules}");
        }
        fix
    });
    Item { status, title, fix }
}

/// Prints the checklist; returns the process exit code (0 when every required item passed).
pub fn print(items: &[Item], ok: bool) -> i32 {
    println!("podwarn-agent check");
    for item in items {
        let mark = match item.status {
            Status::Ok => "[ok]  ",
            Status::Fail => "[FAIL]",
            Status::Warn => "[warn]",
            Status::Skip => "[skip]",
        };
        println!("  {mark} {}", item.title);
        if let Some(fix) = &item.fix {
            for line in fix.lines() {
                println!("         {line}");
            }
        }
    }
    let failed = items.iter().filter(|i| i.status == Status::Fail).count();
    if ok {
        println!("all required checks passed");
        0
    } else {
        println!("{failed} required check(s) failed");
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_yaml_for_exactly_the_permission() {
        assert_eq!(
            rule_yaml(&PERMISSIONS[3]),
            "- apiGroups: [\"\"]\n  resources: [\"pods/log\"]\n  verbs: [\"get\"]"
        );
        assert!(
            PERMISSIONS
                .iter()
                .all(|p| p.verbs.iter().all(|v| ["get", "list", "watch"].contains(v)))
        );
        assert!(PERMISSIONS.iter().all(|p| p.resource != "secrets"));
    }

    #[test]
    fn connection_hints_name_the_likely_cause() {
        assert!(connection_hint("tcp connect error: Connection refused (os error 111)").contains("nothing listens"));
        assert!(connection_hint("invalid peer certificate: UnknownIssuer").contains("certificate-authority-data"));
        assert!(connection_hint("ApiError: Unauthorized (401)").contains("credentials"));
    }
}
