//! Just enough Kubernetes protobuf to read what kubectl POSTs as protobuf (a
//! SelfSubjectAccessReview inside the `k8s\0` + runtime.Unknown envelope). Answers go back
//! as JSON, which every client accepts.

use serde_json::{Value, json};

/// The magic prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\x00";

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// Length-delimited fields of a message as (field number, bytes); other wire types skipped.
fn fields(buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((key >> 3, &buf[pos..end]));
                pos = end;
            }
            5 => pos += 4,
            _ => return None,
        }
    }
    Some(out)
}

fn field<'a>(fs: &[(u64, &'a [u8])], n: u64) -> Option<&'a [u8]> {
    fs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

fn string(fs: &[(u64, &[u8])], n: u64) -> String {
    field(fs, n)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Whether a request body is Kubernetes protobuf.
pub(crate) fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// Decodes a protobuf SelfSubjectAccessReview into its JSON shape.
pub(crate) fn self_subject_access_review(body: &[u8]) -> Option<Value> {
    let unknown = fields(body.strip_prefix(MAGIC)?)?;
    let raw = field(&unknown, 2)?;
    let review = fields(raw)?;
    let spec = fields(field(&review, 2).unwrap_or_default())?;
    let mut out = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {}
    });
    if let Some(ra) = field(&spec, 1) {
        let ra = fields(ra)?;
        out["spec"]["resourceAttributes"] = json!({
            "namespace": string(&ra, 1),
            "verb": string(&ra, 2),
            "group": string(&ra, 3),
            "version": string(&ra, 4),
            "resource": string(&ra, 5),
            "subresource": string(&ra, 6),
            "name": string(&ra, 7),
        });
    }
    if let Some(nra) = field(&spec, 2) {
        let nra = fields(nra)?;
        out["spec"]["nonResourceAttributes"] = json!({ "path": string(&nra, 1), "verb": string(&nra, 2) });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_kubectl_style_ssar() {
        let ra = [ld(1, b"default"), ld(2, b"watch"), ld(5, b"events")].concat();
        let spec = ld(1, &ra);
        let review = [ld(1, b""), ld(2, &spec)].concat();
        let type_meta = [ld(1, b"authorization.k8s.io/v1"), ld(2, b"SelfSubjectAccessReview")].concat();
        let body = [MAGIC.to_vec(), ld(1, &type_meta), ld(2, &review)].concat();
        assert!(is_protobuf(&body));
        let v = self_subject_access_review(&body).unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "watch");
        assert_eq!(v["spec"]["resourceAttributes"]["resource"], "events");
        assert_eq!(v["spec"]["resourceAttributes"]["namespace"], "default");
    }
}
