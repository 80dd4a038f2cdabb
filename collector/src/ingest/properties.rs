//! Properties of the ingest decoder ([`decode_batch`]): whatever the bytes
//! and the encoding, it returns a batch that passes validation or a typed 4xx
//! error, never panics, never inflates past its limit, and gives back every
//! valid batch exactly as it was sent.

use super::{Encoding, decode_batch};
use axum::http::StatusCode;
use jiff::Timestamp;
use podwarn_shared::testing::fuzz;
use podwarn_shared::wire::{AgentInfo, IngestBatch, MAX_BATCH_EVENTS, WarningEvent, Workload};
use podwarn_shared::{IncidentType, Severity};
use proptest::prelude::*;
use std::io::Write;

/// The decoded-size limit of these properties: small, so bodies cross it.
const MAX: u64 = 64 * 1024;

/// What a refusal may be.
const CODES: &[&str] = &[
    "invalid_json",
    "invalid_body",
    "invalid_event",
    "invalid_encoding",
    "payload_too_large",
];

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Identity), Just(Encoding::Gzip), Just(Encoding::Zstd)]
}

fn encode(bytes: &[u8], encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Identity => bytes.to_vec(),
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap()
        }
        Encoding::Zstd => zstd::encode_all(bytes, 1).unwrap(),
    }
}

/// Text of at most `max_bytes` (any unicode, control characters included).
fn text(min_chars: usize, max_bytes: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), min_chars..=max_bytes / 4).prop_map(String::from_iter)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (
        Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
        0..1_000_000_000i32,
    )
        .prop_filter_map("in jiff's range", |(s, n)| Timestamp::new(s, n).ok())
}

/// Any event protocol v1 accepts.
fn event() -> impl Strategy<Value = WarningEvent> {
    use podwarn_shared::wire::limits::*;
    let names = (
        text(1, UID),
        text(1, NAME),
        text(1, NAME),
        proptest::option::of(text(0, UID)),
        proptest::option::of(text(0, NAME)),
        proptest::option::of((text(1, REASON), text(1, NAME)).prop_map(|(kind, name)| Workload { kind, name })),
        proptest::option::of(text(0, NAME)),
    );
    let details = (
        text(1, REASON),
        text(0, 1024),
        proptest::sample::select(IncidentType::ALL.to_vec()),
        proptest::sample::select(Severity::ALL.to_vec()),
        1..=u32::MAX,
        timestamp(),
        timestamp(),
        proptest::option::of(text(0, REASON)),
        proptest::option::of(text(0, 2048)),
    );
    (names, details).prop_map(
        |(
            (uid, namespace, pod, pod_uid, node, workload, container),
            (reason, message, incident_type, severity, count, first_seen, last_seen, source, logs),
        )| WarningEvent {
            uid,
            namespace,
            pod,
            pod_uid,
            node,
            workload,
            container,
            reason,
            message,
            incident_type,
            severity,
            count,
            first_seen,
            last_seen,
            source,
            logs,
        },
    )
}

fn batch() -> impl Strategy<Value = IngestBatch> {
    let agent = proptest::option::of(
        (text(0, 64), any::<u64>()).prop_map(|(version, dropped_total)| AgentInfo { version, dropped_total }),
    );
    (agent, proptest::collection::vec(event(), 0..6)).prop_map(|(agent, events)| IngestBatch { agent, events })
}

/// The decoder's contract for any input: a valid batch or a typed refusal.
fn check_outcome(outcome: Result<IngestBatch, crate::error::ApiError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(batch) => {
            prop_assert!(batch.events.len() <= MAX_BATCH_EVENTS);
            for event in &batch.events {
                prop_assert!(event.validate().is_ok(), "accepted an invalid event: {event:?}");
            }
            // What was accepted reads back the same when sent again.
            let again = serde_json::to_vec(&batch).unwrap();
            prop_assert_eq!(decode_batch(&again, Encoding::Identity, u64::MAX).ok(), Some(batch));
        }
        Err(e) => {
            prop_assert!(
                e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::PAYLOAD_TOO_LARGE,
                "status {}",
                e.status
            );
            prop_assert!(CODES.contains(&e.code), "code {}", e.code);
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

#[test]
fn valid_batches_round_trip_in_every_encoding() {
    fuzz(
        "ingest decoder round trip",
        (batch(), encoding()),
        |(batch, encoding)| {
            let json = serde_json::to_vec(&batch).unwrap();
            let decoded = decode_batch(&encode(&json, encoding), encoding, u64::MAX);
            prop_assert_eq!(decoded, Ok(batch));
            Ok(())
        },
    );
}

#[test]
fn arbitrary_bytes_get_a_batch_or_a_typed_refusal() {
    let bytes = proptest::collection::vec(any::<u8>(), 0..4096);
    fuzz(
        "ingest decoder arbitrary bytes",
        (bytes, encoding(), any::<bool>()),
        |(bytes, encoding, compress_first)| {
            // Raw bytes exercise the decompressors; compressed ones the JSON parser.
            let body = if compress_first {
                encode(&bytes, encoding)
            } else {
                bytes
            };
            check_outcome(decode_batch(&body, encoding, MAX))
        },
    );
}

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, Vec<u8>),
    Duplicate(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>();
    let json_bytes = proptest::collection::vec(
        prop_oneof![
            proptest::sample::select(b"{}[],:\"\\-0123456789eE.nulltruefalse \t\n".to_vec()),
            any::<u8>()
        ],
        1..8,
    );
    prop_oneof![
        (index.clone(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (index.clone(), 1..16usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (index.clone(), json_bytes).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (index.clone(), 1..64usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        index.prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, b) => {
                let i = i.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            Mutation::Delete(i, n) => {
                let i = i.index(bytes.len());
                bytes.drain(i..(i + n).min(bytes.len()));
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Duplicate(i, n) => {
                let i = i.index(bytes.len());
                let piece = bytes[i..(i + n).min(bytes.len())].to_vec();
                bytes.splice(i..i, piece);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        }
    }
    bytes
}

#[test]
fn mutated_valid_bodies_get_a_batch_or_a_typed_refusal() {
    let mutations = proptest::collection::vec(mutation(), 1..5);
    fuzz(
        "ingest decoder mutations",
        (batch(), encoding(), mutations, any::<bool>()),
        |(batch, encoding, mutations, after_compression)| {
            let json = serde_json::to_vec(&batch).unwrap();
            // Mutate the JSON before compressing it, or the compressed bytes.
            let body = if after_compression {
                mutate(encode(&json, encoding), &mutations)
            } else {
                encode(&mutate(json, &mutations), encoding)
            };
            check_outcome(decode_batch(&body, encoding, MAX))
        },
    );
}

#[test]
fn nothing_inflates_past_the_decoded_limit() {
    let padding = 0..(3 * MAX as usize);
    fuzz(
        "ingest decoder size limit",
        (batch(), encoding(), padding),
        |(batch, encoding, padding)| {
            // Unknown fields count towards the size like any other bytes.
            let mut value = serde_json::to_value(&batch).unwrap();
            value["padding"] = " ".repeat(padding).into();
            let json = serde_json::to_vec(&value).unwrap();
            let outcome = decode_batch(&encode(&json, encoding), encoding, MAX);
            if json.len() as u64 > MAX {
                prop_assert_eq!(outcome.map_err(|e| e.status), Err(StatusCode::PAYLOAD_TOO_LARGE));
            } else {
                prop_assert_eq!(outcome, Ok(batch));
            }
            Ok(())
        },
    );
}
