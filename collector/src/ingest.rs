//! `POST /v1/ingest`: authenticate by client certificate, decode within
//! limits, validate the whole batch, then store it durably and answer.
//!
//! Nothing is stored unless the whole batch is valid (invariant 7), and the
//! 200 is sent only after the commit (invariant 2).

use crate::error::{ApiError, quote};
use crate::ops::{OutcomeLabel, metrics};
use crate::server::{AppState, ConnInfo};
use crate::store::{PreparedBatch, StoreError};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use podwarn_shared::wire::MAX_BATCH_EVENTS;
use podwarn_shared::{IngestBatch, IngestResponse};
use std::io::Read;
use std::time::Duration;

/// Content encodings an agent may send (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The handler.
pub async fn ingest(
    State(state): State<AppState>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let result = handle(&state, &conn, &headers, body).await;
    let outcome = match &result {
        Ok(_) => "stored",
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE || e.status.is_server_error() => "failed",
        Err(e) if e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::FORBIDDEN => "refused",
        Err(_) => "invalid",
    };
    metrics().ingest_requests.get_or_create(&OutcomeLabel { outcome }).inc();
    if let Err(e) = &result {
        tracing::info!(status = e.status.as_u16(), code = e.code, remote = %conn.remote, "ingest refused");
    }
    result.map(Json)
}

async fn handle(
    state: &AppState,
    conn: &ConnInfo,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, ApiError> {
    let identity = conn.live_identity("POST /v1/ingest")?;
    check_content_type(headers)?;
    let encoding = content_encoding(headers)?;
    check_announced_length(headers, state.limits.max_body)?;
    let raw = read_limited(body, state.limits.max_body, state.limits.body_read_timeout).await?;
    let max_decoded = state.limits.max_decoded_body;
    // Decoding and preparing for the store are CPU work: one trip to a
    // blocking thread for both.
    let cluster = identity.cluster.clone();
    let batch = tokio::task::spawn_blocking(move || {
        decode_batch(&raw, encoding, max_decoded).map(|batch| PreparedBatch::of(&cluster, batch))
    })
    .await
    .map_err(|_| ApiError::internal())??;
    let outcome = state
        .store
        .ingest_prepared(identity, batch)
        .await
        .map_err(|e| match e {
            StoreError::AgentRefused(message) => ApiError::forbidden("agent_refused", message),
            StoreError::Corrupt(e) => {
                tracing::error!(error = %e, "store record unreadable");
                ApiError::internal()
            }
            e => {
                tracing::warn!(error = %e, "ingest could not be committed");
                ApiError::unavailable("the batch could not be stored right now and nothing of it was kept; retry later")
            }
        })?;
    let m = metrics();
    m.events_accepted.inc_by(outcome.accepted);
    m.events_duplicate.inc_by(outcome.duplicate);
    m.occurrences.inc_by(outcome.occurrences);
    Ok(outcome)
}

/// The one value of `name`; several (which a client may not send for these
/// headers) are refused rather than guessed between.
fn single<'h>(
    headers: &'h HeaderMap,
    name: header::HeaderName,
    code: &'static str,
) -> Result<Option<&'h HeaderValue>, ApiError> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code,
            format!("the request has more than one {name} header: send one"),
        ));
    }
    Ok(first)
}

/// Refuses at once a body announced larger than `max` by a client that waits
/// for `100 Continue` before sending it. (Other clients are already sending:
/// answering before reading would cut them off mid-write, so their bodies are
/// read up to the limit instead.)
fn check_announced_length(headers: &HeaderMap, max: u64) -> Result<(), ApiError> {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(len) if expects_continue && len > max => Err(too_large(format!(
            "the request body is {len} bytes, larger than {max}: send smaller batches"
        ))),
        _ => Ok(()),
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = single(headers, header::CONTENT_TYPE, "unsupported_media_type")? else {
        return Ok(());
    };
    let ok = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ))
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = single(headers, header::CONTENT_ENCODING, "unsupported_encoding")? else {
        return Ok(Encoding::Identity);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Ok("" | "identity") => Ok(Encoding::Identity),
        Ok("gzip" | "x-gzip") => Ok(Encoding::Gzip),
        Ok("zstd") => Ok(Encoding::Zstd),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!(
                "Content-Encoding {} is not supported: send identity, gzip or zstd",
                quote(&String::from_utf8_lossy(value.as_bytes()))
            ),
        )),
    }
}

/// Reads a request body of at most `max` bytes (413 `payload_too_large`
/// beyond) that arrives in full within `timeout` (408 `request_timeout` after:
/// a client trickling its body cannot hold a connection and a handler forever).
pub(crate) async fn read_limited(body: Body, max: u64, timeout: Duration) -> Result<Bytes, ApiError> {
    let too_big = || {
        too_large(format!(
            "the request body is larger than {max} bytes: send smaller batches"
        ))
    };
    let limited = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_big()),
        Ok(Err(_)) => Err(ApiError::bad_request(
            "body_read_failed",
            "the request body could not be read completely",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {}: send it faster or in smaller batches",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
}

/// Decompresses (bounded, so a small bomb cannot inflate past `max_decoded`),
/// parses and validates a batch.
pub fn decode_batch(raw: &[u8], encoding: Encoding, max_decoded: u64) -> Result<IngestBatch, ApiError> {
    let decoded: std::borrow::Cow<'_, [u8]> = match encoding {
        Encoding::Identity => raw.into(),
        Encoding::Gzip => inflate(flate2::read::GzDecoder::new(raw), "gzip", max_decoded)?.into(),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(raw)
                .map_err(|_| ApiError::bad_request("invalid_encoding", "the body is not valid zstd"))?;
            inflate(decoder, "zstd", max_decoded)?.into()
        }
    };
    if decoded.len() as u64 > max_decoded {
        return Err(too_large(format!(
            "the request body is larger than {max_decoded} bytes: send smaller batches"
        )));
    }
    // The plain parser is the fast path (given text checked as UTF-8 once,
    // it need not check each string again); only a body it refuses is
    // parsed again with path tracking, to name the field at fault.
    let parsed = std::str::from_utf8(&decoded)
        .ok()
        .and_then(|text| serde_json::from_str::<IngestBatch>(text).ok());
    let Some(batch) = parsed else {
        return Err(explain_refusal(&decoded));
    };
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(too_large(format!(
            "the batch has {} events, more than the limit of {MAX_BATCH_EVENTS}: split it",
            batch.events.len()
        )));
    }
    for (i, event) in batch.events.iter().enumerate() {
        event
            .validate()
            .map_err(|e| ApiError::bad_request("invalid_event", format!("events[{i}]: {e}")))?;
    }
    Ok(batch)
}

/// The error for a body the plain parser refused: parsed again with path
/// tracking, so the message names the field at fault.
fn explain_refusal(decoded: &[u8]) -> ApiError {
    let mut de = serde_json::Deserializer::from_slice(decoded);
    let refused = serde_path_to_error::deserialize::<_, IngestBatch>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {inner}"))
            }
            _ => ApiError::bad_request("invalid_body", format!("{path}: {inner}")),
        }
    });
    match refused {
        Err(e) => e,
        Ok(_) => match de.end() {
            Err(e) => ApiError::bad_request("invalid_json", format!("trailing data after the JSON body: {e}")),
            Ok(()) => ApiError::bad_request("invalid_json", "the body is not valid JSON"),
        },
    }
}

fn inflate(reader: impl Read, name: &str, max_decoded: u64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    reader
        .take(max_decoded.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| ApiError::bad_request("invalid_encoding", format!("the body is not valid {name}")))?;
    if out.len() as u64 > max_decoded {
        return Err(too_large(format!(
            "the body inflates to more than {max_decoded} bytes: send smaller batches"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 1 << 20;

    fn event_json() -> serde_json::Value {
        serde_json::json!({
            "uid": "u1", "namespace": "default", "pod": "api-1", "reason": "BackOff",
            "message": "Back-off restarting failed container", "incident_type": "CrashLoopBackOff",
            "severity": "high", "count": 1,
            "first_seen": "2026-11-22T10:00:00Z", "last_seen": "2026-11-22T10:00:05Z",
            "a_field_from_the_future": {"nested": true}
        })
    }

    fn body(events: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_types_read_as_other() {
        let mut ev = event_json();
        ev["incident_type"] = "SomethingNew".into();
        let batch = decode_batch(&body(vec![ev]), Encoding::Identity, MAX).unwrap();
        assert_eq!(batch.events[0].incident_type, podwarn_shared::IncidentType::Other);
    }

    #[test]
    fn errors_name_the_field_and_the_event() {
        let mut ev = event_json();
        ev["first_seen"] = "yesterday".into();
        let err = decode_batch(&body(vec![event_json(), ev]), Encoding::Identity, MAX).unwrap_err();
        assert_eq!(err.code, "invalid_body");
        assert!(err.message.starts_with("events[1].first_seen"), "{}", err.message);

        let mut ev = event_json();
        ev["count"] = 0.into();
        let err = decode_batch(&body(vec![ev]), Encoding::Identity, MAX).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            ("invalid_event", "events[0]: `count` must be at least 1")
        );

        let err = decode_batch(b"{\"events\": [", Encoding::Identity, MAX).unwrap_err();
        assert_eq!(err.code, "invalid_json");
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b' '; 4 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 16 << 10);
        let err = decode_batch(&bomb, Encoding::Gzip, MAX).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let zbomb = zstd::encode_all(&vec![b' '; 4 << 20][..], 19).unwrap();
        assert_eq!(
            decode_batch(&zbomb, Encoding::Zstd, MAX).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            decode_batch(b"not gzip", Encoding::Gzip, MAX).unwrap_err().code,
            "invalid_encoding"
        );
    }

    #[test]
    fn the_largest_decoded_limit_does_not_overflow() {
        // `--max-decoded-body` takes any size up to u64::MAX.
        let gz = zstd::encode_all(&body(vec![event_json()])[..], 1).unwrap();
        let batch = decode_batch(&gz, Encoding::Zstd, u64::MAX).unwrap();
        assert_eq!(batch.events.len(), 1);
    }
}
