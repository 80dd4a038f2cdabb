//! Property tests of classification and message normalisation: arbitrary
//! text (unicode, control characters, real corpus messages cut and mutated)
//! never panics, and the documented laws hold for every input.
//!
//! The number of cases per property comes from `PROPTEST_CASES` (proptest's
//! default, 256, when unset); `PROPTEST_CASES=100000` is the long run
//! (docs/OPERATIONS.md, "Checks"). Each property prints
//! `fuzz <target>: N passed, N failed`.

use podwarn_shared::classify::{Signal, classify};
use podwarn_shared::normalize::{MAX_NORMALIZED_LEN, normalize_message};
use podwarn_shared::testing::fuzz;
use proptest::prelude::*;
use std::path::Path;

/// (reason, message) of every event in the real-event corpus.
fn corpus() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/events.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the real-event corpus is required at {}: {e}", path.display()));
    let field = |v: &serde_json::Value, p: &str| v.pointer(p).and_then(|s| s.as_str()).unwrap_or("").to_owned();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (field(&v, "/event/reason"), field(&v, "/event/message")))
        .collect()
}

/// Text worth classifying: anything at all, corpus text, or corpus text cut
/// and with arbitrary text spliced in.
fn text(seeds: Vec<String>) -> impl Strategy<Value = String> {
    let seed = proptest::sample::select(seeds);
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        seed.clone(),
        (
            seed,
            any::<String>(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>()
        )
            .prop_map(|(seed, insert, at, cut)| {
                let boundaries: Vec<usize> = (0..=seed.len()).filter(|i| seed.is_char_boundary(*i)).collect();
                let at = *at.get(&boundaries);
                let cut = (*cut.get(&boundaries)).max(at);
                format!("{}{insert}{}", &seed[..at], &seed[cut..])
            }),
    ]
}

fn signals() -> impl Strategy<Value = (String, String, Option<String>, Option<i32>)> {
    let (reasons, messages): (Vec<String>, Vec<String>) = corpus().into_iter().unzip();
    let termination = prop_oneof![
        Just(None),
        Just(Some("OOMKilled".to_owned())),
        Just(Some("Error".to_owned())),
        any::<String>().prop_map(Some),
    ];
    (text(reasons), text(messages), termination, any::<Option<i32>>())
}

fn classify_owned(
    reason: &str,
    message: &str,
    termination: Option<&str>,
    exit: Option<i32>,
) -> podwarn_shared::classify::Classification {
    classify(&Signal {
        reason,
        message,
        last_termination_reason: termination,
        last_exit_code: exit,
    })
}

#[test]
fn classify_is_total_deterministic_and_blind_to_case_and_padding() {
    fuzz("classify", signals(), |(reason, message, termination, exit)| {
        let term = termination.as_deref();
        let class = classify_owned(&reason, &message, term, exit);
        prop_assert_eq!(class, classify_owned(&reason, &message, term, exit), "deterministic");
        // Reasons and message words match ASCII-case-insensitively.
        let upper = |s: &str| s.to_ascii_uppercase();
        let term_upper = term.map(upper);
        prop_assert_eq!(
            class,
            classify_owned(&upper(&reason), &upper(&message), term_upper.as_deref(), exit),
            "upper case"
        );
        // Padding around the reason and before the message, and the kubelet's
        // aggregation prefix, change nothing.
        let padded_reason = format!(" \t{reason}\n ");
        let term_padded = term.map(|t| format!(" {t} "));
        prop_assert_eq!(
            class,
            classify_owned(&padded_reason, &format!("  {message}"), term_padded.as_deref(), exit),
            "padding"
        );
        let combined = format!("(combined from similar events): {message}");
        prop_assert_eq!(
            class,
            classify_owned(&reason, &combined, term, exit),
            "aggregation prefix"
        );
        Ok(())
    });
}

#[test]
fn normalize_is_total_bounded_digit_free_and_idempotent() {
    let (_, messages): (Vec<String>, Vec<String>) = corpus().into_iter().unzip();
    fuzz("normalize", text(messages), |message| {
        let once = normalize_message(&message);
        prop_assert!(once.len() <= MAX_NORMALIZED_LEN, "{} bytes", once.len());
        prop_assert!(!once.bytes().any(|b| b.is_ascii_digit()), "digits left in {once:?}");
        prop_assert!(once.trim() == once && !once.contains("  "), "whitespace in {once:?}");
        prop_assert_eq!(&normalize_message(&once), &once, "idempotent");
        prop_assert_eq!(&normalize_message(&message), &once, "deterministic");
        let combined = format!("(combined from similar events): {message}");
        prop_assert_eq!(&normalize_message(&combined), &once, "aggregation prefix");
        Ok(())
    });
}

/// `base-<pod-template-hash>-<suffix>`, the name of a Deployment's Pod.
fn generated_pod_name(base: &str, hash: &str, suffix: &str) -> String {
    format!("{base}-{hash}-{suffix}")
}

#[test]
fn normalize_groups_the_pods_of_one_workload() {
    let hash = "[456789bcdf]{8,10}".prop_filter("a hash has a letter", |h| h.bytes().any(|b| b.is_ascii_lowercase()));
    let suffix = "[bcdfghjklmnpqrstvwxz2456789]{5}";
    let words = proptest::collection::vec("[a-zA-Z:/()\\[\\]._=-]{1,12}", 0..8);
    let strategy = (words.clone(), words, "[a-z]{2,10}", hash.clone(), suffix, hash, suffix);
    fuzz(
        "normalize pod names",
        strategy,
        |(before, after, base, hash_a, suffix_a, hash_b, suffix_b)| {
            let message = |name: String| format!("{} {name} {}", before.join(" "), after.join(" "));
            let a = normalize_message(&message(generated_pod_name(&base, &hash_a, &suffix_a)));
            let b = normalize_message(&message(generated_pod_name(&base, &hash_b, &suffix_b)));
            prop_assert_eq!(a, b);
            Ok(())
        },
    );
}
