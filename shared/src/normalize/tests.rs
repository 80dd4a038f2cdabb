use super::*;

fn n(s: &str) -> String {
    normalize_message(s)
}

#[test]
fn pod_name_hashes_become_a_star() {
    assert_eq!(n("pod api-7d9f8b6c5-x2k4q failed"), "pod api-* failed");
    assert_eq!(
        n(
            "Back-off restarting failed container catalog in pod catalog-5578f9649b-bbrjp_catalog(b5c1c1fa-5db6-4be4-8dcd-0910410f5630)"
        ),
        "Back-off restarting failed container catalog in pod catalog-*_catalog(<uuid>)"
    );
    assert_eq!(
        n("skip schedule deleting pod: default/client-deployment-85b74f5bb8-d9j6g"),
        n("skip schedule deleting pod: default/client-deployment-5cb56b774f-28pxr")
    );
    assert_eq!(n("calico-node-26mhc"), "calico-node-*");
    assert_eq!(n("volume \"kube-api-access-br996\""), "volume \"kube-api-access-*\"");
    assert_eq!(
        n("pods \"nginx-ingress-controller-7c66d668b-\" is forbidden"),
        "pods \"nginx-ingress-controller-*-\" is forbidden"
    );
    assert_eq!(
        n("replicaset nginx-ingress-controller-7c66d668b"),
        "replicaset nginx-ingress-controller-*"
    );
}

#[test]
fn ordinary_words_are_not_mistaken_for_generated_names() {
    for s in [
        "kube-proxy",
        "Back-off",
        "not-ready",
        "aws-logging",
        "disallow-privileged-containers",
        "nginx",
    ] {
        assert_eq!(n(s), s);
    }
}

#[test]
fn stateful_set_ordinals_become_a_number() {
    assert_eq!(n("pod redis-0 and redis-1"), "pod redis-# and redis-#");
}

#[test]
fn scheduler_counts_become_hashes() {
    assert_eq!(
        n(
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        ),
        "#/# nodes are available: # Insufficient cpu. preemption: #/# nodes are available: # No preemption victims found for incoming pod."
    );
    assert_ne!(
        n("0/1 nodes are available: 1 Insufficient cpu."),
        n("0/1 nodes are available: 1 Insufficient memory.")
    );
}

#[test]
fn addresses_and_ports() {
    assert_eq!(
        n(
            "Readiness probe failed: Get \"http://10.244.0.3:8181/ready\": dial tcp 10.244.0.3:8181: connect: connection refused"
        ),
        "Readiness probe failed: Get \"http://<ip>/ready\": dial tcp <ip>: connect: connection refused"
    );
    assert_eq!(
        n("dial tcp [2001:db8::1]:443: i/o timeout"),
        "dial tcp <ip>: i/o timeout"
    );
    assert_eq!(n("from fe80::1ff:fe23:4567:890a"), "from <ip>");
    assert_eq!(n("on node 192.168.0.23"), "on node <ip>");
    assert_eq!(
        n("no IP addresses available in range set: 10.10.10.31-10.10.10.40"),
        "no IP addresses available in range set: <ip>-<ip>"
    );
    // Not addresses: clock times, too many parts, octets above 255.
    assert_eq!(n("at 10:13:28"), "at #:#:#");
    assert_eq!(n("version 1.2.3.4.5"), "version #.#.#.#.#");
    assert_eq!(n("999.1.1.1"), "#.#.#.#");
}

#[test]
fn ids_and_digests() {
    assert_eq!(
        n("failed to setup network for sandbox \"314ca4285d0706ec3d76a9e953e412d4b0712da4d0cb8138162b53d807d07491\""),
        "failed to setup network for sandbox \"<hex>\""
    );
    assert_eq!(n("image sha256:4c0e5a8f9f7d2f2a"), "image sha#:<hex>");
    assert_eq!(
        n("Could not mount \"fs-00a4069aec7924c8c:/\""),
        "Could not mount \"fs-<hex>:/\""
    );
    assert_eq!(
        n("volume \"pvc-719c8ef2-5bdb-4638-b4db-7d59b53d21f0\""),
        "volume \"pvc-<uuid>\""
    );
    assert_eq!(n("at 0x7f3a9c"), "at <hex>");
}

#[test]
fn durations_and_timestamps() {
    assert_eq!(
        n("back-off 5m0s restarting failed container"),
        "back-off <dur> restarting failed container"
    );
    assert_eq!(n("timeout after 10s"), "timeout after <dur>");
    assert_eq!(n("retry in 407.989929ms"), "retry in <dur>");
    assert_eq!(n("at \"2023-05-04T10:13:28.905589Z\""), "at \"<ts>\"");
    assert_eq!(n("at 2024-11-17 10:19:41+01:00."), "at <ts>.");
    // Quantities are not durations.
    assert_eq!(
        n("Threshold quantity: 750Mi, available: 225800Ki."),
        "Threshold quantity: #Mi, available: #Ki."
    );
    assert_eq!(n("5min"), "#min");
}

#[test]
fn whitespace_prefix_and_repeat_suffix() {
    assert_eq!(
        n("  (combined from similar events): Failed to create pod\nsandbox:   rpc error  "),
        "Failed to create pod sandbox: rpc error"
    );
    assert_eq!(
        n("pod has unbound immediate PersistentVolumeClaims (repeated 2 times)"),
        "pod has unbound immediate PersistentVolumeClaims"
    );
    assert_eq!(n(" \t\n "), "");
}

#[test]
fn output_is_capped_on_a_boundary() {
    let long = "é".repeat(1000);
    let out = n(&long);
    assert!(out.len() <= MAX_NORMALIZED_LEN);
    assert!(out.chars().all(|c| c == 'é'));

    let words = "word ".repeat(300);
    let out = n(&words);
    assert!(out.len() <= MAX_NORMALIZED_LEN);
    assert!(out.split(' ').all(|w| w == "word"), "a word was split");
}

#[test]
fn same_problem_on_other_pods_groups_and_different_problems_do_not() {
    let a = n(
        "Liveness probe failed: Get http://10.44.46.9:9999/healthz: dial tcp 10.44.46.9:9999: connect: connection refused",
    );
    let b = n(
        "Liveness probe failed: Get http://10.44.12.200:9999/healthz: dial tcp 10.44.12.200:9999: connect: connection refused",
    );
    let c = n(
        "Readiness probe failed: Get http://10.44.12.200:9999/healthz: dial tcp 10.44.12.200:9999: connect: connection refused",
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(n("Error: ErrImagePull"), n("Error: ImagePullBackOff"));
}

#[test]
fn idempotent_on_tricky_inputs() {
    for s in [
        "x-bcdfg1",
        "x-bcdbcd1",
        "a-bcdfg-h2k4q",
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427-x2k4q",
        "dead::beef 1::2 :::",
        "[::1]:80 [::1 ]",
        "10.0.0.1-bcdfg",
        "2023-05-04T10:13:28Z-bcdfg",
        "(combined from similar\nevents): x",
        "x (repeated 2 times) (repeated 3 times)",
        "#5s 5s# µ5µs 5µs",
    ] {
        let once = n(s);
        assert_eq!(n(&once), once, "input {s:?}");
    }
}
