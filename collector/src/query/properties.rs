//! Properties of query parameters and cursors: no query string makes the
//! parser panic, a cursor comes back as the position it was issued for, and
//! a cursor is refused by every other filter set and every other endpoint.

use super::{EVENT_PARAMS, INCIDENT_PARAMS, Params};
use crate::store::Position;
use podwarn_shared::testing::fuzz;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// `/v1/audit` takes these.
const AUDIT_PARAMS: &[&str] = &["limit", "cursor"];

fn query(pairs: &BTreeMap<String, String>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

fn params(pairs: &BTreeMap<String, String>, known: &'static [&'static str]) -> Params {
    Params::parse(Some(query(pairs)), known).expect("known names, short values")
}

/// Filters of `/v1/events` (any value: the cursor check does not read them).
fn filters() -> impl Strategy<Value = BTreeMap<String, String>> {
    let names: Vec<&str> = EVENT_PARAMS
        .iter()
        .copied()
        .filter(|n| *n != "cursor" && *n != "limit")
        .collect();
    let value = proptest::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter);
    proptest::collection::btree_map(proptest::sample::select(names).prop_map(str::to_owned), value, 0..5)
}

fn position() -> impl Strategy<Value = Position> {
    (any::<i64>(), any::<u64>()).prop_map(|(ts_us, id)| Position { ts_us, id })
}

/// A cursor `position` issued for `filters` on an endpoint, with a page size.
fn issue(filters: &BTreeMap<String, String>, known: &'static [&'static str], limit: u16, position: Position) -> String {
    let mut pairs = filters.clone();
    pairs.insert("limit".into(), limit.to_string());
    params(&pairs, known).encode_cursor(Some(position)).expect("a cursor")
}

/// What `known` makes of `filters` with `cursor`.
fn read(
    filters: &BTreeMap<String, String>,
    known: &'static [&'static str],
    cursor: &str,
) -> Result<Option<Position>, &'static str> {
    let mut pairs = filters.clone();
    pairs.insert("cursor".into(), cursor.to_owned());
    params(&pairs, known).cursor().map_err(|e| e.code)
}

#[test]
fn any_query_string_parses_or_is_refused_without_panic() {
    let raw = prop_oneof![
        any::<String>(),
        "([a-z_]{1,12}=[^&]{0,30}&){0,6}",
        "(limit|cursor|since|until|incident_type|active)=[%0-9A-Za-z+._~-]{0,40}",
    ];
    fuzz("query parameters", raw, |raw| {
        for known in [EVENT_PARAMS, INCIDENT_PARAMS, AUDIT_PARAMS] {
            if let Ok(p) = Params::parse(Some(raw.clone()), known) {
                let limit = p.limit();
                prop_assert!(limit.as_ref().map_or(true, |n| (1..=super::MAX_LIMIT).contains(n)));
                let _ = p.cursor();
                let _ = p.window(0);
                let _ = p.incident_type();
            }
        }
        Ok(())
    });
}

#[test]
fn an_arbitrary_cursor_is_refused_unless_it_is_one_issued() {
    let text = prop_oneof![any::<String>(), "[A-Za-z0-9_-]{30,36}", "[A-Za-z0-9_=+/-]{0,40}"];
    fuzz("cursor parser", (filters(), text), |(filters, text)| {
        match read(&filters, EVENT_PARAMS, &text) {
            // Only the exact text an issuer would write for that position.
            Ok(Some(position)) => prop_assert_eq!(issue(&filters, EVENT_PARAMS, 100, position), text),
            Ok(None) => prop_assert!(false, "a cursor parameter was given"),
            Err(code) => prop_assert_eq!(code, "invalid_cursor"),
        }
        Ok(())
    });
}

#[test]
fn a_cursor_returns_its_position_whatever_the_page_size() {
    fuzz(
        "cursor round trip",
        (filters(), position(), 1..=1000u16, 1..=1000u16),
        |(filters, position, issued_with, read_with)| {
            let cursor = issue(&filters, EVENT_PARAMS, issued_with, position);
            let mut pairs = filters.clone();
            pairs.insert("limit".into(), read_with.to_string());
            pairs.insert("cursor".into(), cursor);
            prop_assert_eq!(
                params(&pairs, EVENT_PARAMS).cursor().map_err(|e| e.code),
                Ok(Some(position))
            );
            Ok(())
        },
    );
}

#[test]
fn a_cursor_is_refused_by_other_filters_and_other_endpoints() {
    fuzz(
        "cursor of other filters",
        (filters(), filters(), position()),
        |(issued_for, presented_with, position)| {
            let cursor = issue(&issued_for, EVENT_PARAMS, 100, position);
            if issued_for != presented_with {
                prop_assert_eq!(read(&presented_with, EVENT_PARAMS, &cursor), Err("invalid_cursor"));
            }
            // The same filters on another endpoint: only those both take.
            let shared: BTreeMap<String, String> = issued_for
                .into_iter()
                .filter(|(k, _)| INCIDENT_PARAMS.contains(&k.as_str()))
                .collect();
            let cursor = issue(&shared, EVENT_PARAMS, 100, position);
            prop_assert_eq!(read(&shared, INCIDENT_PARAMS, &cursor), Err("invalid_cursor"));
            let cursor = issue(&shared, INCIDENT_PARAMS, 100, position);
            prop_assert_eq!(read(&shared, EVENT_PARAMS, &cursor), Err("invalid_cursor"));
            let empty = BTreeMap::new();
            let cursor = issue(&empty, AUDIT_PARAMS, 100, position);
            prop_assert_eq!(read(&empty, EVENT_PARAMS, &cursor), Err("invalid_cursor"));
            Ok(())
        },
    );
}
