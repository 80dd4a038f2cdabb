//! Classification and normalisation checked against the real-event corpus in
//! the team folder (`../shared/corpus/events.jsonl` beside the repository).
//!
//! The corpus is required: a missing file fails every test here, because a
//! skipped corpus check would let the classifier drift from real events.

use podwarn_shared::classify::{Signal, classify};
use podwarn_shared::normalize::{MAX_NORMALIZED_LEN, normalize_message};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One corpus line, reduced to what these tests look at.
#[derive(Debug)]
struct Case {
    line: usize,
    source: String,
    reason: String,
    message: String,
    namespace: Option<String>,
    pod: Option<String>,
    ship: bool,
    expected_type: Option<String>,
}

fn corpus_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/events.jsonl")
}

fn load() -> Vec<Case> {
    let path = corpus_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the real-event corpus is required but could not be read at {}: {e}. \
             The team folder `shared/` must sit beside the repository checkout \
             (expected file: <parent of repo>/shared/corpus/events.jsonl).",
            path.display()
        )
    });
    let str_at = |v: &Value, pointer: &str| v.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let cases: Vec<Case> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: not JSON: {e}", path.display(), i + 1));
            Case {
                line: i + 1,
                source: str_at(&v, "/source").unwrap_or_default(),
                reason: str_at(&v, "/event/reason").unwrap_or_default(),
                message: str_at(&v, "/event/message").unwrap_or_default(),
                namespace: str_at(&v, "/event/involvedObject/namespace")
                    .or_else(|| str_at(&v, "/event/metadata/namespace")),
                pod: str_at(&v, "/event/involvedObject/name"),
                ship: v.pointer("/expect/ship").and_then(Value::as_bool).unwrap_or(false),
                expected_type: str_at(&v, "/expect/incident_type"),
            }
        })
        .collect();
    assert!(!cases.is_empty(), "{} holds no events", path.display());
    cases
}

fn signal(case: &Case) -> Signal<'_> {
    Signal {
        reason: &case.reason,
        message: &case.message,
        ..Signal::default()
    }
}

#[test]
fn classifier_agrees_with_every_labelled_corpus_event() {
    let cases = load();
    let labelled: Vec<&Case> = cases.iter().filter(|c| c.expected_type.is_some()).collect();
    assert!(!labelled.is_empty(), "the corpus has no labelled events");

    let mismatches: Vec<String> = labelled
        .iter()
        .filter_map(|c| {
            let expected = c.expected_type.as_deref()?;
            let got = classify(&signal(c));
            (got.incident_type.as_str() != expected).then(|| {
                format!(
                    "  line {} ({}): reason {:?}, message {:?}: expected {expected}, got {} ({})",
                    c.line, c.source, c.reason, c.message, got.incident_type, got.severity
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} labelled corpus events classified wrongly:\n{}",
        mismatches.len(),
        labelled.len(),
        mismatches.join("\n")
    );
}

#[test]
fn shipped_events_never_classify_by_accident_as_a_crash() {
    // Warnings the corpus leaves unlabelled must not become crash or OOM
    // incidents from their reason and message alone: those need Pod status.
    let cases = load();
    let wrong: Vec<String> = cases
        .iter()
        .filter(|c| c.ship && c.expected_type.is_none())
        .filter_map(|c| {
            let t = classify(&signal(c)).incident_type.as_str();
            matches!(t, "CrashLoopBackOff" | "OOMKilled")
                .then(|| format!("  line {}: {} {:?} -> {t}", c.line, c.reason, c.message))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "unlabelled warnings classified as crashes:\n{}",
        wrong.join("\n")
    );
}

/// Rotates every character of `s` that is in `alphabet` to the next one, so a
/// generated hash becomes a different hash of the same shape.
fn rotate(s: &str, alphabet: &[u8]) -> String {
    s.bytes()
        .map(|b| match alphabet.iter().position(|a| *a == b) {
            Some(i) => alphabet[(i + 1) % alphabet.len()] as char,
            None => b as char,
        })
        .collect()
}

const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const TEMPLATE_HASH_ALPHABET: &[u8] = b"456789bcdf";
const HEX: &[u8] = b"0123456789abcdef";

/// The same message as it would read on a sibling Pod of the same workload:
/// every generated Pod name re-hashed, every UUID different. Written
/// independently of the normaliser's scanner (plain splitting) on purpose.
fn on_sibling_pod(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let segments: Vec<&str> = token.split('-').collect();
        let n = segments.len();
        let mut rewritten: Vec<String> = segments.iter().map(|s| (*s).to_owned()).collect();
        let is = |s: &str, alphabet: &[u8], lens: std::ops::RangeInclusive<usize>| {
            lens.contains(&s.len()) && s.bytes().all(|b| alphabet.contains(&b))
        };
        if n >= 2 && is(segments[n - 1], SUFFIX_ALPHABET, 5..=5) {
            rewritten[n - 1] = rotate(segments[n - 1], SUFFIX_ALPHABET);
            if n >= 3 && is(segments[n - 2], TEMPLATE_HASH_ALPHABET, 6..=10) {
                rewritten[n - 2] = rotate(segments[n - 2], TEMPLATE_HASH_ALPHABET);
            }
        }
        // UUIDs: five hex groups 8-4-4-4-12 anywhere in the token.
        for start in 0..n.saturating_sub(4) {
            let lens = [8, 4, 4, 4, 12];
            if (0..5).all(|k| is(segments[start + k], HEX, lens[k]..=lens[k])) {
                for k in 0..5 {
                    rewritten[start + k] = rotate(segments[start + k], HEX);
                }
            }
        }
        out.push_str(&rewritten.join("-"));
        token.clear();
    };
    for c in message.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

#[test]
fn same_problem_on_differently_hashed_pods_normalises_identically() {
    let cases = load();
    let mut rewritten_per_reason: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();

    // Real messages, rewritten as a sibling Pod would have emitted them.
    let examples = cases
        .iter()
        .filter(|c| c.ship)
        .map(|c| (c.reason.as_str(), c.message.as_str(), c.line));
    // Plus today's kubelet wording, which names the Pod and its uid.
    let extra = [(
        "BackOff",
        "Back-off restarting failed container api in pod api-7d9f8b6c5-x2k4q_prod(0ea1d573-219a-4927-b3c3-c76150d35a7a)",
        0,
    )];
    for (reason, message, line) in examples.chain(extra) {
        let sibling = on_sibling_pod(message);
        if sibling == message {
            continue;
        }
        *rewritten_per_reason.entry(reason).or_default() += 1;
        let (a, b) = (normalize_message(message), normalize_message(&sibling));
        if a != b {
            failures.push(format!(
                "  line {line} {reason}:\n    {message:?} -> {a:?}\n    {sibling:?} -> {b:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "sibling Pods normalise differently:\n{}",
        failures.join("\n")
    );
    for reason in ["FailedScheduling", "BackOff"] {
        assert!(
            rewritten_per_reason.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} message names a generated Pod, so grouping was not exercised: {rewritten_per_reason:?}"
        );
    }
}

#[test]
fn corpus_events_of_one_workload_group_together() {
    // Real occurrences: the same reason in the same namespace on Pods of one
    // workload (different hashes). Messages that differ only in the Pod's own
    // name must normalise to one text.
    let cases = load();
    let mut groups: BTreeMap<(String, String, String, String), BTreeSet<String>> = BTreeMap::new();
    let mut pods: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for c in cases
        .iter()
        .filter(|c| c.ship && matches!(c.reason.as_str(), "FailedScheduling" | "BackOff"))
    {
        let (Some(ns), Some(pod)) = (&c.namespace, &c.pod) else {
            continue;
        };
        let workload = normalize_message(pod);
        let shape = c.message.replace(pod.as_str(), "<pod>");
        groups
            .entry((ns.clone(), c.reason.clone(), workload.clone(), shape))
            .or_default()
            .insert(normalize_message(&c.message));
        pods.entry((ns.clone(), c.reason.clone(), workload))
            .or_default()
            .insert(pod.clone());
    }
    let split: Vec<String> = groups
        .iter()
        .filter(|(_, normalised)| normalised.len() > 1)
        .map(|(key, normalised)| format!("  {key:?}: {normalised:?}"))
        .collect();
    assert!(
        split.is_empty(),
        "one problem split into several texts:\n{}",
        split.join("\n")
    );

    let merged = pods.iter().filter(|(_, names)| names.len() > 1).count();
    assert!(
        merged > 0,
        "no workload with several differently-hashed Pods in the corpus: {pods:?}"
    );
    let client = pods.get(&(
        "default".into(),
        "FailedScheduling".into(),
        "client-deployment-*".into(),
    ));
    assert!(
        client.is_some_and(|names| names.len() >= 10),
        "client-deployment's FailedScheduling Pods should share one workload name: {client:?}"
    );
}

#[test]
fn normalisation_never_merges_what_the_classifier_tells_apart() {
    let cases = load();
    let mut seen: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for c in &cases {
        let class = classify(&signal(c));
        let class = format!("{}/{}", class.incident_type, class.severity);
        let key = (c.reason.to_ascii_lowercase(), normalize_message(&c.message));
        match seen.get(&key) {
            Some((other, line)) if *other != class => {
                conflicts.push(format!("  lines {line} and {}: {key:?} is {other} and {class}", c.line));
            }
            Some(_) => {}
            None => {
                seen.insert(key, (class, c.line));
            }
        }
    }
    assert!(
        conflicts.is_empty(),
        "normalisation merged differently classified events:\n{}",
        conflicts.join("\n")
    );
}

#[test]
fn different_scheduling_problems_stay_different() {
    let cases = load();
    let normalised: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.reason == "FailedScheduling")
        .map(|c| normalize_message(&c.message))
        .collect();
    let distinct_causes = [
        "Insufficient cpu.",
        "Insufficient memory.",
        "had taints that the pod didn't tolerate",
        "didn't match Pod's node affinity/selector. preemption",
        "unbound immediate PersistentVolumeClaims",
        "didn't have free ports",
        "is being deleted",
    ];
    for cause in distinct_causes {
        let with_cause: Vec<&String> = normalised.iter().filter(|m| m.contains(cause)).collect();
        assert!(
            !with_cause.is_empty(),
            "no normalised FailedScheduling message mentions {cause:?}"
        );
        for other in distinct_causes.iter().filter(|o| **o != cause) {
            assert!(
                with_cause.iter().any(|m| !m.contains(other)),
                "{cause:?} never appears without {other:?}: the causes were merged"
            );
        }
    }
}

/// Small deterministic generator (xorshift64*), so the property test needs no
/// extra dependency and fails reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Strings built to sit on the normaliser's edges: partial addresses,
/// near-hashes, multi-byte text, separators next to digits.
fn nasty_strings() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        " ",
        "\n\t\r\u{a0}\u{2028}",
        "é",
        "日本語のメッセージ 0/3 ノード",
        "🚀-x2k4q 🚀7d9f8b6c5-x2k4q",
        "\u{0}\u{1}\u{7f}\u{fffd}",
        "µs 5µs 5μs µ",
        "::",
        ":::1",
        "[::1",
        "[::1]:",
        "1.2.3",
        "1.2.3.",
        "256.1.1.1",
        "1.2.3.4:",
        "1.2.3.4:99999999",
        "2023-13-45T99:99:99.Z",
        "2023-05-04T",
        "0x",
        "-",
        "--x2k4q",
        "a--x2k4q",
        "#-bcdfg",
        "<uuid>-x2k4q",
        "(combined from similar events):",
        "(COMBINED FROM SIMILAR EVENTS): (combined from similar events):   x",
        "(repeated 2 times)",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    out.push("a".repeat(10_000));
    out.push("ab-".repeat(3_000));
    out.push("1".repeat(10_000));
    out.push("é".repeat(5_000));
    out.push("x ".repeat(5_000));
    out.push(format!("{}-x2k4q", "b".repeat(511)));
    out.push(format!("{}-bcdfgh", "a-".repeat(253)));

    let fragments = [
        "api",
        "-",
        "7d9f8b6c5",
        "x2k4q",
        "bcdfg",
        "0",
        "1",
        "42",
        ".",
        ":",
        "::",
        "/",
        "[",
        "]",
        "#",
        "*",
        " ",
        "\n",
        "s",
        "m",
        "ms",
        "µ",
        "é",
        "🚀",
        "fe80",
        "10.0.0.1",
        "2023-05-04",
        "T10:13:28Z",
        "b5c1c1fa",
        "5db6",
        "0x1f",
        "sha256",
        "(repeated 2 times)",
        "(combined from similar events): ",
        "<",
        ">",
        "_",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5_000 {
        let len = rng.below(40);
        let s: String = (0..len).map(|_| fragments[rng.below(fragments.len())]).collect();
        out.push(s);
    }
    out
}

#[test]
fn normalisation_is_total_bounded_and_idempotent() {
    let cases = load();
    let inputs = cases.iter().map(|c| c.message.clone()).chain(nasty_strings());
    let mut failures = Vec::new();
    for input in inputs {
        let once = normalize_message(&input);
        let twice = normalize_message(&once);
        if once.len() > MAX_NORMALIZED_LEN {
            failures.push(format!("  {input:?}: output is {} bytes", once.len()));
        }
        if once.bytes().any(|b| b.is_ascii_digit()) {
            failures.push(format!("  {input:?}: digits survive in {once:?}"));
        }
        if once != twice {
            failures.push(format!("  {input:?}:\n    once  {once:?}\n    twice {twice:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} normalisation failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
