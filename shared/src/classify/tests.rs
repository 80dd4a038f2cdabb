use super::*;

fn event(reason: &str, message: &str) -> Classification {
    classify(&Signal {
        reason,
        message,
        ..Signal::default()
    })
}

fn class(incident_type: IncidentType, severity: Severity) -> Classification {
    Classification {
        incident_type,
        severity,
    }
}

#[test]
fn crash_loop_back_off_is_high() {
    let got = event(
        "BackOff",
        "Back-off restarting failed container catalog in pod catalog-5578f9649b-bbrjp_catalog(b5c1c1fa-5db6-4be4-8dcd-0910410f5630)",
    );
    assert_eq!(got, class(T::CrashLoopBackOff, High));
    assert_eq!(
        event("BackOff", "Back-off restarting failed container"),
        class(T::CrashLoopBackOff, High)
    );
}

#[test]
fn oom_killed_status_wins_over_back_off() {
    let signal = Signal {
        reason: "BackOff",
        message: "Back-off restarting failed container",
        last_termination_reason: Some("OOMKilled"),
        last_exit_code: Some(137),
    };
    assert_eq!(classify(&signal), class(T::OomKilled, High));
}

#[test]
fn oom_killed_status_does_not_relabel_a_precise_event() {
    let signal = Signal {
        reason: "Unhealthy",
        message: "Readiness probe failed: HTTP probe failed with statuscode: 503",
        last_termination_reason: Some("OOMKilled"),
        last_exit_code: Some(137),
    };
    assert_eq!(classify(&signal).incident_type, T::Unhealthy);
}

#[test]
fn pod_status_alone_decides_for_unknown_reasons() {
    let oom = Signal {
        reason: "",
        last_termination_reason: Some("OOMKilled"),
        ..Signal::default()
    };
    assert_eq!(classify(&oom), class(T::OomKilled, High));
    let crashed = Signal {
        reason: "Error",
        last_termination_reason: Some("Error"),
        last_exit_code: Some(1),
        ..Signal::default()
    };
    assert_eq!(classify(&crashed), class(T::ContainerFailed, Medium));
    let clean = Signal {
        reason: "Completed",
        last_termination_reason: Some("Completed"),
        last_exit_code: Some(0),
        ..Signal::default()
    };
    assert_eq!(classify(&clean).incident_type, T::Other);
}

#[test]
fn status_exit_code_does_not_relabel_known_warnings() {
    let signal = Signal {
        reason: "DNSConfigForming",
        message: "Search Line limits were exceeded, some search paths have been omitted",
        last_termination_reason: Some("Error"),
        last_exit_code: Some(1),
    };
    assert_eq!(classify(&signal), class(T::Other, Low));
}

#[test]
fn image_pull_failures() {
    for message in [
        "Error: ErrImagePull",
        "Error: ImagePullBackOff",
        "Error: InvalidImageName",
        "Error: ErrImageNeverPull",
        "Failed to pull image \"nginx2\": rpc error: code = Unknown desc = failed to pull and unpack image",
    ] {
        assert_eq!(
            event("Failed", message),
            class(T::ImagePullBackOff, Medium),
            "{message}"
        );
    }
    assert_eq!(
        event("BackOff", "Back-off pulling image \"a1pine\""),
        class(T::ImagePullBackOff, Medium)
    );
    assert_eq!(
        event(
            "InspectFailed",
            "Failed to apply default image tag \"Nginx\": couldn't parse image reference"
        ),
        class(T::ImagePullBackOff, Medium)
    );
}

#[test]
fn container_config_errors() {
    for message in [
        "Error: secret \"pgpassword\" not found",
        "Error: configmap \"app-config\" not found",
        "Error: couldn't find key DB_HOST in ConfigMap default/app-config",
        "Error: CreateContainerConfigError",
        "Error: container has runAsNonRoot and image will run as root (pod: \"nginx_default(0ea1d573)\", container: nginx)",
    ] {
        assert_eq!(
            event("Failed", message),
            class(T::CreateContainerConfigError, Medium),
            "{message}"
        );
    }
}

#[test]
fn container_start_errors_are_container_failed() {
    let message = "Error: failed to start container \"app\": Error response from daemon: OCI runtime create failed";
    assert_eq!(event("Failed", message), class(T::ContainerFailed, Medium));
}

#[test]
fn liveness_is_more_severe_than_readiness() {
    let liveness = event(
        "Unhealthy",
        "Liveness probe failed: HTTP probe failed with statuscode: 500",
    );
    let readiness = event(
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    );
    let startup = event(
        "Unhealthy",
        "Startup probe failed: HTTP probe failed with statuscode: 500",
    );
    assert_eq!(liveness, class(T::Unhealthy, Medium));
    assert_eq!(readiness, class(T::Unhealthy, Low));
    assert_eq!(startup, class(T::Unhealthy, Medium));
    assert!(liveness.severity > readiness.severity);
    // A readiness probe whose URL mentions "liveness" is still a readiness probe.
    let tricky = event(
        "Unhealthy",
        "Readiness probe failed: Get \"http://10.42.127.4:8080/actuator/health/liveness\": connect: connection refused",
    );
    assert_eq!(tricky.severity, Low);
}

#[test]
fn aggregated_messages_classify_like_the_original() {
    let got = event("Unhealthy", "(combined from similar events): Liveness probe failed: ");
    assert_eq!(got, class(T::Unhealthy, Medium));
}

#[test]
fn scheduling_volumes_and_runtime() {
    assert_eq!(
        event("FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu."),
        class(T::FailedScheduling, Medium)
    );
    assert_eq!(
        event(
            "FailedScheduling",
            "skip schedule deleting pod: default/client-deployment-85b74f5bb8-d9j6g"
        ),
        class(T::FailedScheduling, Low)
    );
    assert_eq!(
        event(
            "FailedAttachVolume",
            "Multi-Attach error for volume \"pvc-6ac6\" Volume is already exclusively attached"
        ),
        class(T::FailedMount, Medium)
    );
    assert_eq!(
        event(
            "FailedMount",
            "MountVolume.SetUp failed for volume \"kube-api-access-br996\" : write /var/lib/kubelet: no space left on device"
        ),
        class(T::FailedMount, Critical)
    );
    assert_eq!(
        event(
            "FailedCreatePodSandBox",
            "Failed to create pod sandbox: rpc error: failed to setup network for sandbox"
        ),
        class(T::FailedCreatePodSandBox, Medium)
    );
    assert_eq!(
        event("FailedKillPod", "error killing pod: failed to \"KillPodSandbox\""),
        class(T::FailedKillPod, Medium)
    );
    assert_eq!(
        event(
            "NetworkNotReady",
            "network is not ready: container runtime network not ready: NetworkReady=false"
        ),
        class(T::NetworkNotReady, High)
    );
    assert_eq!(
        event(
            "Evicted",
            "The node was low on resource: memory. Threshold quantity: 750Mi, available: 225800Ki."
        ),
        class(T::Evicted, High)
    );
    assert_eq!(
        event("Preempting", "Preempted in order to admit critical pod"),
        class(T::Preempted, Medium)
    );
}

#[test]
fn known_warnings_without_a_class_are_other() {
    let cases = [
        (
            "OutOfcpu",
            "Node didn't have enough resource: cpu, requested: 500, used: 1775, capacity: 2000",
            Medium,
        ),
        ("OutOfmemory", "Node didn't have enough resource: memory", Medium),
        (
            "PolicyViolation",
            "Rule(s) 'privileged-containers' of policy 'disallow-privileged-containers' failed to apply",
            Low,
        ),
        ("FailedSync", "Error syncing pod", Medium),
        (
            "VolumeResizeFailed",
            "NodeExpandVolume.NodeExpandVolume failed for volume",
            Medium,
        ),
        ("SomethingNew", "a reason this build has never seen", Medium),
    ];
    for (reason, message, severity) in cases {
        assert_eq!(event(reason, message), class(T::Other, severity), "{reason}");
    }
}

#[test]
fn reasons_match_case_insensitively() {
    assert_eq!(
        event("backoff", "back-off restarting failed container").incident_type,
        T::CrashLoopBackOff
    );
    assert_eq!(event("OutOfCPU", "").incident_type, T::Other);
}

#[test]
fn table_needles_are_lowercase_ascii() {
    // `contains_ci` compares bytes case-insensitively against the needle as
    // written, so an uppercase or non-ASCII needle could never match.
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase());
    for (i, rule) in RULES.iter().enumerate() {
        let needles: &[&str] = match rule.message {
            Message::Any => &[],
            Message::Starts(n) => &[n][..],
            Message::Has(n) | Message::HasAll(n) => n,
        };
        for needle in needles {
            assert!(
                ok(needle),
                "rule {i}: needle {needle:?} must be non-empty lowercase ASCII"
            );
        }
    }
}

#[test]
fn every_specific_type_is_reachable_from_the_table() {
    for t in IncidentType::ALL {
        let reachable = RULES.iter().any(|r| r.incident_type == t);
        assert!(reachable, "{t} has no rule");
    }
}

#[test]
fn never_panics_on_odd_input() {
    for message in [
        "",
        "é",
        "(combined from similar events):",
        "Back-off 🚀",
        "\u{0}\u{ffff}",
    ] {
        let _ = event("Failed", message);
        let _ = event(message, message);
    }
}

proptest::proptest! {
    /// The first-byte search finds exactly what lowercasing both sides and
    /// searching would, wherever the needle sits, in any mix of case, and
    /// with multi-byte characters around it.
    #[test]
    fn contains_ci_agrees_with_lowercased_contains(
        haystack in "[a-cA-C é-]{0,40}",
        needle in "[a-c -]{0,5}",
    ) {
        let expected = haystack.to_ascii_lowercase().contains(&needle);
        proptest::prop_assert_eq!(contains_ci(&haystack, &needle), expected);
    }
}

#[test]
fn contains_ci_finds_needles_at_the_edges_and_in_any_case() {
    assert!(contains_ci("Failed to pull image", "failed"));
    assert!(contains_ci("x: ErrImagePull", "errimagepull"));
    assert!(contains_ci("abc", ""));
    assert!(!contains_ci("ab", "abc"));
    assert!(!contains_ci("errimagepul", "errimagepull"));
}
