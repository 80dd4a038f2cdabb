//! Message normalisation for incident fingerprints: two occurrences of the
//! same problem on different pods (or at different times) must normalise to
//! the same text, and different problems must stay different.
//!
//! A hand-written single-pass scanner. It reads whole tokens and replaces
//! the parts that vary between occurrences:
//!
//! | what | example | becomes |
//! |---|---|---|
//! | timestamps (RFC 3339, `YYYY-MM-DD[ T]hh:mm[:ss[.f]][Z\|±hh:mm]`) | `2023-05-04T10:13:28.9Z` | `<ts>` |
//! | IPv4 with optional `:port` | `10.244.0.3:8181` | `<ip>` |
//! | IPv6 (needs a digit; `[addr]:port` too) | `[fe80::1]:443` | `<ip>` |
//! | Go durations | `5m0s`, `407.98ms`, `10s` | `<dur>` |
//! | UUIDs | `b5c1c1fa-5db6-4be4-8dcd-0910410f5630` | `<uuid>` |
//! | generated Pod-name tails: ReplicaSet hash and/or 5-char suffix | `api-7d9f8b6c5-x2k4q` | `api-*` |
//! | hex ids: 6+ hex chars mixing digits and letters, or `0x…` | container ids, `sha256:` digests | `<hex>` |
//! | every other run of ASCII digits | `0/3 nodes … 3 Insufficient cpu` | `#/# nodes … # Insufficient cpu` |
//!
//! StatefulSet ordinals need no rule of their own: `db-0` becomes `db-#`
//! through the digit rule, so replicas of one StatefulSet already group,
//! while the name stays distinguishable from a generated `db-*`.
//!
//! Then whitespace runs collapse to one space, the kubelet's
//! `(combined from similar events):` prefix and a trailing
//! `(repeated N times)` are dropped, and the text is capped at
//! [`MAX_NORMALIZED_LEN`] bytes without splitting a word or a character.
//!
//! The output contains no ASCII digit, which is what makes the function
//! idempotent: every digit-driven rule has nothing left to match on a second pass.

/// The longest normalised message, in bytes.
pub const MAX_NORMALIZED_LEN: usize = 512;

/// The kubelet's event aggregator prepends this to a message it merged.
const AGGREGATION_PREFIX: &str = "(combined from similar events):";

/// Appended by some components when a message repeats (after normalisation).
const REPEATED_SUFFIX: &str = "(repeated # times)";

/// Kubernetes' `rand.String` alphabet (no vowels, no 0, 1, 3): generated
/// name suffixes of Pods, DaemonSet and Job Pods, projected volumes.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The characters a `pod-template-hash` can contain: it is the decimal hash
/// mapped byte by byte through `rand.SafeEncodeString`, so only digits'
/// images (`'0'..='9'` → `4 5 6 7 8 9 b c d f`) occur.
const TEMPLATE_HASH_ALPHABET: &[u8] = b"456789bcdf";

/// Strips what varies between occurrences of one problem: pod-name hashes,
/// numbers, hex ids, UUIDs, IP addresses and durations.
///
/// Never panics, never returns more than [`MAX_NORMALIZED_LEN`] bytes, and is
/// idempotent: `normalize_message(&normalize_message(x)) == normalize_message(x)`.
pub fn normalize_message(message: &str) -> String {
    let mut scanner = Scanner {
        src: message,
        bytes: message.as_bytes(),
        pos: 0,
        out: String::with_capacity(message.len().min(MAX_NORMALIZED_LEN + SCAN_SLACK)),
        pending_space: false,
    };
    scanner.run();
    finish(scanner.out)
}

/// Strips the kubelet's `(combined from similar events):` prefix (any case,
/// repeated or not) and the whitespace around it.
pub(crate) fn strip_aggregation_prefix(message: &str) -> &str {
    let mut rest = message.trim_start();
    while let Some(head) = rest.get(..AGGREGATION_PREFIX.len()) {
        if !head.eq_ignore_ascii_case(AGGREGATION_PREFIX) {
            break;
        }
        rest = rest[AGGREGATION_PREFIX.len()..].trim_start();
    }
    rest
}

/// How far past the cap the scanner keeps going: enough to see what follows
/// the cut and to drop aggregation prefixes without losing the cap's worth.
const SCAN_SLACK: usize = 4 * AGGREGATION_PREFIX.len();

struct Scanner<'a> {
    src: &'a str,
    bytes: &'a [u8],
    /// Always on a char boundary.
    pos: usize,
    out: String,
    /// Whitespace was seen since the last token; written lazily so that runs
    /// collapse and nothing trails.
    pending_space: bool,
}

impl Scanner<'_> {
    fn run(&mut self) {
        while self.pos < self.bytes.len() && self.out.len() <= MAX_NORMALIZED_LEN + SCAN_SLACK {
            let b = self.bytes[self.pos];
            let c = if b.is_ascii() {
                char::from(b)
            } else {
                let Some(c) = self.src[self.pos..].chars().next() else {
                    break;
                };
                c
            };
            if c.is_whitespace() {
                self.pending_space = !self.out.is_empty();
                self.pos += c.len_utf8();
                continue;
            }
            if let Some((end, placeholder)) = self.special_at(self.pos) {
                self.emit(placeholder);
                self.pos = end;
            } else if let Some((end, placeholder)) = self.special_after_hyphen(self.pos) {
                self.emit("-");
                self.emit(placeholder);
                self.pos = end;
            } else if is_word_byte(self.bytes[self.pos]) {
                let end = self.word_end(self.pos);
                self.emit_word(self.pos, end);
                self.pos = end;
            } else {
                let end = self.pos + c.len_utf8();
                self.emit_src(self.pos, end);
                self.pos = end;
            }
        }
    }

    fn flush_space(&mut self) {
        if self.pending_space {
            self.out.push(' ');
            self.pending_space = false;
        }
    }

    fn emit(&mut self, text: &str) {
        self.flush_space();
        self.out.push_str(text);
    }

    /// Copies `src[start..end]`; callers pass char boundaries (ASCII
    /// positions or the ends of decoded chars).
    fn emit_src(&mut self, start: usize, end: usize) {
        self.flush_space();
        if let Some(text) = self.src.get(start..end) {
            self.out.push_str(text);
        }
    }

    fn word_end(&self, start: usize) -> usize {
        let mut end = start;
        while end < self.bytes.len() && is_word_byte(self.bytes[end]) {
            end += 1;
        }
        end
    }

    /// Byte at `i`, or 0 past the end (0 is no class any rule looks for).
    fn at(&self, i: usize) -> u8 {
        self.bytes.get(i).copied().unwrap_or(0)
    }

    /// Multi-token patterns that may only start where a token starts.
    fn special_at(&self, pos: usize) -> Option<(usize, &'static str)> {
        let prev = if pos == 0 { b' ' } else { self.bytes[pos - 1] };
        if prev.is_ascii_alphanumeric() || prev == b'.' || prev == b'#' {
            return None;
        }
        let b = self.bytes[pos];
        if b.is_ascii_digit() {
            if let Some(end) = self.timestamp(pos) {
                return Some((end, "<ts>"));
            }
            if let Some(end) = self.ipv4(pos) {
                return Some((end, "<ip>"));
            }
        }
        if prev != b':'
            && (b.is_ascii_hexdigit() || b == b':' || b == b'[')
            && let Some(end) = self.ipv6(pos)
        {
            return Some((end, "<ip>"));
        }
        if b.is_ascii_digit()
            && let Some(end) = self.duration(pos)
        {
            return Some((end, "<dur>"));
        }
        None
    }

    /// A special right after a word-starting `-`, as in an address range
    /// `10.0.0.1-10.0.0.50`, which would otherwise read as the word `-10`.
    fn special_after_hyphen(&self, pos: usize) -> Option<(usize, &'static str)> {
        if self.bytes[pos] != b'-' || pos + 1 >= self.bytes.len() {
            return None;
        }
        self.special_at(pos + 1)
    }

    /// `n` ASCII digits at `i`, returning the index after them.
    fn digits_exact(&self, i: usize, n: usize) -> Option<usize> {
        let run = self.bytes.get(i..i + n)?;
        run.iter().all(u8::is_ascii_digit).then_some(i + n)
    }

    /// One or more ASCII digits at `i`, returning the index after them.
    fn digits(&self, i: usize) -> Option<usize> {
        let end = i + self.bytes.get(i..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        (end > i).then_some(end)
    }

    /// Nothing word-like follows `i`, so a match ending there is a whole token.
    fn ends_token(&self, i: usize) -> bool {
        let next = self.at(i);
        !(next.is_ascii_alphanumeric() || next == b'#' || (next == b'.' && self.at(i + 1).is_ascii_digit()))
    }

    fn timestamp(&self, pos: usize) -> Option<usize> {
        let i = self.digits_exact(pos, 4)?;
        let sep = self.at(i);
        if sep != b'-' && sep != b'/' {
            return None;
        }
        let i = self.digits_exact(i + 1, 2)?;
        if self.at(i) != sep {
            return None;
        }
        let date_end = self.digits_exact(i + 1, 2)?;
        let end = self.clock(date_end).unwrap_or(date_end);
        self.ends_token(end).then_some(end)
    }

    /// The optional `Thh:mm[:ss[.frac]][zone]` after a date.
    fn clock(&self, i: usize) -> Option<usize> {
        if !matches!(self.at(i), b'T' | b't' | b' ') {
            return None;
        }
        let i = self.digits_exact(i + 1, 2)?;
        if self.at(i) != b':' {
            return None;
        }
        let mut i = self.digits_exact(i + 1, 2)?;
        if self.at(i) == b':'
            && let Some(after) = self.digits_exact(i + 1, 2)
        {
            i = after;
            if self.at(i) == b'.' {
                i = self.digits(i + 1).unwrap_or(i);
            }
        }
        match self.at(i) {
            b'Z' | b'z' => Some(i + 1),
            b'+' | b'-' => {
                let Some(h) = self.digits_exact(i + 1, 2) else {
                    return Some(i);
                };
                let m_start = if self.at(h) == b':' { h + 1 } else { h };
                Some(self.digits_exact(m_start, 2).unwrap_or(i))
            }
            _ => Some(i),
        }
    }

    /// Dotted quad with octets ≤ 255, optionally `:port`.
    fn ipv4(&self, pos: usize) -> Option<usize> {
        let mut i = pos;
        for octet in 0..4 {
            if octet > 0 {
                if self.at(i) != b'.' {
                    return None;
                }
                i += 1;
            }
            let end = self.digits(i)?;
            let value: u32 = self.src.get(i..end)?.parse().ok()?;
            if end - i > 3 || value > 255 {
                return None;
            }
            i = end;
        }
        if self.at(i) == b':'
            && let Some(end) = self.digits(i + 1)
            && end - (i + 1) <= 5
            && self.ends_token(end)
        {
            return Some(end);
        }
        self.ends_token(i).then_some(i)
    }

    /// IPv6 in full or `::` form, bare or as `[addr]` with optional `:port`.
    /// Requires a digit so that words like `dead::beef` (and our own output)
    /// stay as they are.
    fn ipv6(&self, pos: usize) -> Option<usize> {
        let bracketed = self.bytes[pos] == b'[';
        let start = if bracketed { pos + 1 } else { pos };
        let len = self
            .bytes
            .get(start..)?
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() || **b == b':')
            .count();
        let end = start + len;
        let addr = self.src.get(start..end)?;
        if !is_ipv6(addr) {
            return None;
        }
        if !bracketed {
            return (self.ends_token(end) && self.at(end) != b':').then_some(end);
        }
        if self.at(end) != b']' {
            return None;
        }
        let end = end + 1;
        if self.at(end) == b':'
            && let Some(port_end) = self.digits(end + 1)
        {
            return Some(port_end);
        }
        Some(end)
    }

    /// Go `time.Duration` text: `1h2m3.5s`, `407.989929ms`, `10s`, `5m0s`.
    fn duration(&self, pos: usize) -> Option<usize> {
        let mut i = pos;
        let mut parts = 0;
        while let Some(mut end) = self.digits(i) {
            if self.at(end) == b'.' {
                end = self.digits(end + 1)?;
            }
            end = self.duration_unit(end)?;
            parts += 1;
            i = end;
        }
        (parts > 0 && self.ends_token(i) && !self.src[i..].starts_with(['µ', 'μ'])).then_some(i)
    }

    fn duration_unit(&self, i: usize) -> Option<usize> {
        let rest = self.src.get(i..)?;
        for unit in ["ns", "us", "µs", "μs", "ms", "h", "m", "s"] {
            if rest.starts_with(unit) {
                return Some(i + unit.len());
            }
        }
        None
    }

    /// Emits a maximal run of word bytes, handling generated name tails,
    /// UUIDs, hex ids and numbers.
    fn emit_word(&mut self, start: usize, end: usize) {
        self.flush_space();
        let Some(word) = self.src.get(start..end) else {
            return;
        };
        // Most words are letters only, which no rule changes (every rule
        // needs a digit or a hyphen).
        if word.bytes().all(|b| b.is_ascii_alphabetic()) {
            self.out.push_str(word);
            return;
        }
        // `x-bcdfg1` comes out as `x-bcdfg#`; a second pass must not then read
        // `bcdfg` as a generated suffix, so a word that `#` follows has no tail.
        let tail = if self.at(end) == b'#' {
            None
        } else {
            generated_name_head(word)
        };
        match tail {
            Some(head) => {
                emit_segments(&mut self.out, head);
                self.out.push_str("-*");
            }
            None => emit_segments(&mut self.out, word),
        }
    }
}

/// Word bytes: what a name, number or hex id is made of.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Bytes a cut must not separate: word bytes and `#`, which the digit rule
/// writes inside words (see [`Scanner::emit_word`]).
fn is_sticky_byte(b: u8) -> bool {
    is_word_byte(b) || b == b'#'
}

fn is_ipv6(addr: &str) -> bool {
    let colons = addr.bytes().filter(|b| *b == b':').count();
    let double = addr.matches("::").count();
    if colons < 2 || double > 1 || addr.contains(":::") || !addr.bytes().any(|b| b.is_ascii_digit()) {
        return false;
    }
    // A single trailing or leading colon is not an address ("::" is).
    if (addr.ends_with(':') && !addr.ends_with("::")) || (addr.starts_with(':') && !addr.starts_with("::")) {
        return false;
    }
    let groups_ok = addr.split(':').all(|g| g.len() <= 4);
    groups_ok && (double == 1 || colons == 7)
}

/// If `word` ends in a generated Pod-name tail, the part before it.
///
/// Recognised tails: `-<template-hash>-<suffix>` (Deployment Pods),
/// `-<suffix>` (DaemonSet, Job and bare generated names, projected volumes
/// like `kube-api-access-br996`), and `-<template-hash>` (ReplicaSet names).
/// A name must remain before the tail, so a lone `-bcdfg` stays.
fn generated_name_head(word: &str) -> Option<&str> {
    let (rest, last) = word.rsplit_once('-')?;
    let has_name = |s: &str| s.bytes().any(|b| b != b'-');
    if is_pod_suffix(last) && has_name(rest) {
        if let Some((before, hash)) = rest.rsplit_once('-')
            && is_template_hash(hash)
            && has_name(before)
        {
            return Some(before);
        }
        return Some(rest);
    }
    (is_template_hash(last) && has_name(rest)).then_some(rest)
}

fn is_pod_suffix(s: &str) -> bool {
    s.len() == 5 && s.bytes().all(|b| SUFFIX_ALPHABET.contains(&b))
}

fn is_template_hash(s: &str) -> bool {
    (6..=10).contains(&s.len()) && s.bytes().all(|b| TEMPLATE_HASH_ALPHABET.contains(&b))
}

/// Emits the `-`-separated segments of `text`, replacing UUIDs (which span
/// five segments), hex ids and digit runs.
fn emit_segments(out: &mut String, text: &str) {
    let mut rest = text;
    let mut first = true;
    loop {
        if let Some(after) = strip_uuid(rest) {
            out.push_str("<uuid>");
            rest = after;
        } else {
            let (segment, after) = rest.split_once('-').map_or((rest, ""), |(s, _)| (s, &rest[s.len()..]));
            emit_segment(out, segment, first);
            rest = after;
        }
        first = false;
        match rest.strip_prefix('-') {
            Some(after) => {
                out.push('-');
                rest = after;
            }
            None => break,
        }
    }
}

/// `text` without a leading UUID that ends at a segment boundary.
fn strip_uuid(text: &str) -> Option<&str> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let bytes = text.as_bytes();
    let mut i = 0;
    for (n, len) in GROUPS.iter().enumerate() {
        if n > 0 {
            if bytes.get(i) != Some(&b'-') {
                return None;
            }
            i += 1;
        }
        let group = bytes.get(i..i + len)?;
        if !group.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        i += len;
    }
    match bytes.get(i) {
        None | Some(b'-') => text.get(i..),
        Some(_) => None,
    }
}

fn emit_segment(out: &mut String, segment: &str, first: bool) {
    if !first && is_template_hash(segment) {
        // A ReplicaSet hash not at the end: `nginx-7c66d668b-` (a generateName).
        out.push('*');
    } else if is_hex_id(segment) {
        out.push_str("<hex>");
    } else {
        let mut in_digits = false;
        for c in segment.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    out.push('#');
                }
                in_digits = true;
            } else {
                out.push(c);
                in_digits = false;
            }
        }
    }
}

/// Container ids, digests, short git hashes: 6+ hex chars mixing letters and
/// digits, or `0x` followed by hex.
fn is_hex_id(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    s.len() >= 6
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Drops the aggregation prefix and the repeat suffix, caps the length.
fn finish(mut out: String) -> String {
    let kept = strip_aggregation_prefix(&out).len();
    out.drain(..out.len() - kept);
    if out.len() > MAX_NORMALIZED_LEN {
        let cut = cut_point(&out);
        out.truncate(cut);
    }
    loop {
        out.truncate(out.trim_end().len());
        let Some(stem) = out.strip_suffix(REPEATED_SUFFIX) else {
            break;
        };
        out.truncate(stem.len());
    }
    out
}

/// Where to cut an over-long output: at most [`MAX_NORMALIZED_LEN`] bytes, on a
/// char boundary, and not inside a word (or between a word and its `#`), because a shortened word could
/// match a rule the whole word did not (`…-bcdfgh` cut to `…-bcdfg`).
fn cut_point(out: &str) -> usize {
    let bytes = out.as_bytes();
    let mut cut = MAX_NORMALIZED_LEN.min(out.len());
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    let splits_word = cut > 0 && cut < bytes.len() && is_sticky_byte(bytes[cut - 1]) && is_sticky_byte(bytes[cut]);
    if !splits_word {
        return cut;
    }
    let word_start = bytes[..cut]
        .iter()
        .rposition(|b| !is_sticky_byte(*b))
        .map_or(0, |i| i + 1);
    if word_start > 0 {
        return word_start;
    }
    // One giant word: cut right after a hyphen, leaving an empty last segment
    // that no tail rule matches; failing that, the word is a single segment,
    // which only digit rules (already applied) could change.
    bytes[..cut].iter().rposition(|b| *b == b'-').map_or(cut, |i| i + 1)
}

#[cfg(test)]
mod tests;
