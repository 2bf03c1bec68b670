//! JSON bodies as the rules see them, as ModSecurity's JSON processor gives them: every
//! scalar in document order, named by its path (`json.items.array_0.sku`; an empty key is
//! `empty-key`), numbers and booleans as serde_json writes them, `null` empty. Every member is
//! kept: `{"q":"<attack>","q":"x"}` gives two `json.q` values (a parsed map would keep only
//! the last, and an upstream that reads the first would get what was never scanned).
//!
//! The engine reads a body with `read` (`eval::body`). A route that validates JSON parses its
//! body once in step 9 (`checks::body`), which writes the same members as it goes, through
//! `Path` and `Sink`, into `Members`; step 10 hands them to the engine instead of the body
//! being parsed again.

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Where the scalars of a document go, each with the path it was found at.
pub trait Sink {
    fn scalar(&mut self, path: &str, value: &[u8]);
}

/// The path of the value being read, from `json`.
#[derive(Debug)]
pub struct Path(String);

impl Default for Path {
    fn default() -> Self {
        Path(String::from("json"))
    }
}

impl Path {
    /// Into an object's member; gives the length to go `back` to.
    pub fn key(&mut self, key: &str) -> usize {
        let len = self.0.len();
        self.0.push('.');
        self.0
            .push_str(if key.is_empty() { "empty-key" } else { key });
        len
    }

    /// Into an array's element `i`; gives the length to go `back` to.
    pub fn index(&mut self, i: usize) -> usize {
        let len = self.0.len();
        self.0.push_str(".array_");
        self.0.push_str(itoa::Buffer::new().format(i));
        len
    }

    pub fn back(&mut self, len: usize) {
        self.0.truncate(len);
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writers of scalars as the rules see them.
pub fn integer(sink: &mut dyn Sink, path: &Path, v: impl itoa::Integer) {
    sink.scalar(path.as_str(), itoa::Buffer::new().format(v).as_bytes());
}

pub fn float(sink: &mut dyn Sink, path: &Path, v: f64) {
    let text = serde_json::Number::from_f64(v).map(|n| n.to_string());
    sink.scalar(path.as_str(), text.unwrap_or_default().as_bytes());
}

pub fn boolean(sink: &mut dyn Sink, path: &Path, v: bool) {
    sink.scalar(path.as_str(), if v { b"true" } else { b"false" });
}

pub fn null(sink: &mut dyn Sink, path: &Path) {
    sink.scalar(path.as_str(), b"");
}

/// The members of a document in three buffers (names, values, where each ends): a few
/// allocations for any number of members.
#[derive(Debug, Default)]
pub struct Members {
    names: String,
    values: Vec<u8>,
    ends: Vec<(usize, usize)>,
}

impl Sink for Members {
    fn scalar(&mut self, path: &str, value: &[u8]) {
        self.names.push_str(path);
        self.values.extend_from_slice(value);
        self.ends.push((self.names.len(), self.values.len()));
    }
}

impl Members {
    /// Room for the members of a body of `len` bytes, as most documents have them (the names
    /// of an array of objects are longer than the body): the buffers do not grow while read.
    /// Past 64 KiB they grow as needed instead (a large body is often one long value).
    pub fn for_body(len: usize) -> Self {
        let len = len.min(64 * 1024);
        Members {
            names: String::with_capacity(len.saturating_mul(2)),
            values: Vec::with_capacity(len),
            ends: Vec::with_capacity(len / 16),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let starts = std::iter::once((0, 0)).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|((n0, v0), (n1, v1))| {
            (
                self.names.get(n0..*n1).unwrap_or_default(),
                self.values.get(v0..*v1).unwrap_or_default(),
            )
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Reads a document into `sink`, as the body is parsed. On a parse error the members read so
/// far stay (more is inspected, never less); `false` then.
pub fn read(body: &[u8], sink: &mut dyn Sink) -> bool {
    let mut path = Path::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    Reader {
        path: &mut path,
        sink,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .is_ok()
}

/// A serde visitor that hands each scalar of a document to a sink under its path.
struct Reader<'a> {
    path: &'a mut Path,
    sink: &'a mut dyn Sink,
}

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        boolean(self.sink, self.path, v);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        integer(self.sink, self.path, v);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        integer(self.sink, self.path, v);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        float(self.sink, self.path, v);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.sink.scalar(self.path.as_str(), v.as_bytes());
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        null(self.sink, self.path);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        for i in 0usize.. {
            let len = self.path.index(i);
            let more = items.next_element_seed(Reader {
                path: self.path,
                sink: self.sink,
            })?;
            self.path.back(len);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let len = self.path.key(&key);
            map.next_value_seed(Reader {
                path: self.path,
                sink: self.sink,
            })?;
            self.path.back(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_back_in_order_whatever_their_lengths() {
        let mut m = Members::default();
        assert!(m.is_empty());
        m.scalar("json.a", b"");
        m.scalar("json.bb", b"xyz");
        m.scalar("json", b"1");
        let got: Vec<(&str, &[u8])> = m.iter().collect();
        assert_eq!(
            got,
            [("json.a", &b""[..]), ("json.bb", b"xyz"), ("json", b"1")]
        );
        assert_eq!(m.len(), 3);
    }
}
