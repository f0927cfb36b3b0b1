//! Writes a JSON object member by member: the client's raw member bytes are copied as they
//! came (no re-serialization), and only the members a provider needs changed are written anew.

use bytes::Bytes;
use serde::Serialize;

pub struct BodyWriter {
    out: Vec<u8>,
}

impl BodyWriter {
    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        Self { out }
    }

    /// A member whose value is already JSON text.
    pub fn raw(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.out.extend_from_slice(value);
    }

    /// A member serialized from `value` (a wire type of strings, numbers and JSON values, whose
    /// serialization into memory cannot fail).
    pub fn value(&mut self, key: &str, value: &impl Serialize) {
        self.key(key);
        let _ = serde_json::to_writer(&mut self.out, value);
    }

    pub fn finish(mut self) -> Bytes {
        self.out.push(b'}');
        Bytes::from(self.out)
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        // Serializing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, key);
        self.out.push(b':');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_raw_members_and_serializes_new_ones() {
        let mut body = BodyWriter::with_capacity(64);
        body.raw("temperature", b"0.70");
        body.value("model", &"m\"x");
        body.raw("a\"b", b"[1, 2]");
        assert_eq!(
            &body.finish()[..],
            br#"{"temperature":0.70,"model":"m\"x","a\"b":[1, 2]}"#
        );
        assert_eq!(&BodyWriter::with_capacity(2).finish()[..], b"{}");
    }
}
