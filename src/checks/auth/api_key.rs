//! API keys (SPEC §3 step 6): taken from `Authorization: ApiKey <key>` or `X-API-Key`, never
//! from the query string; the presented key's SHA-256 is looked up among the `sha256:` hashes
//! of the config. Timing can only tell something about that digest, which says nothing about
//! the key: a key that differs by one character has an unrelated digest, so no key can be
//! guessed character by character.

use pingora_http::RequestHeader;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Longest key accepted; anything longer is malformed.
pub const MAX_KEY_BYTES: usize = 512;

/// What the request offers as an API key.
#[derive(Debug, PartialEq, Eq)]
pub enum PresentedKey<'a> {
    Absent,
    Key(&'a str),
    /// Several differing keys, an empty or oversized key, or bytes that cannot be a key.
    Malformed,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The key of a request, from `Authorization: ApiKey …` or a single `X-API-Key`.
pub fn presented(req: &RequestHeader) -> PresentedKey<'_> {
    let mut found: Option<&str> = None;
    for value in req.headers.get_all("authorization") {
        let Ok(text) = value.to_str() else { continue };
        let Some((scheme, rest)) = text.split_once(' ') else {
            continue;
        };
        if scheme.eq_ignore_ascii_case("apikey") {
            let key = rest.trim();
            if found.is_some_and(|f| f != key) || !valid_key(key) {
                return PresentedKey::Malformed;
            }
            found = Some(key);
        }
    }
    for value in req.headers.get_all("x-api-key") {
        let Ok(key) = value.to_str().map(str::trim) else {
            return PresentedKey::Malformed;
        };
        if found.is_some_and(|f| f != key) || !valid_key(key) {
            return PresentedKey::Malformed;
        }
        found = Some(key);
    }
    match found {
        Some(key) => PresentedKey::Key(key),
        None => PresentedKey::Absent,
    }
}

/// A configured key: whose it is, its label (named in the access log and metrics, never the
/// key) and the last moment it is valid.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    pub consumer: u32,
    pub label: Option<Arc<str>>,
    pub not_after: Option<SystemTime>,
}

impl ApiKeyEntry {
    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.not_after.is_some_and(|end| now > end)
    }
}

/// Every configured key hash with its entry.
#[derive(Debug, Default)]
pub struct ApiKeyIndex {
    entries: HashMap<[u8; 32], ApiKeyEntry>,
}

impl ApiKeyIndex {
    pub fn insert(&mut self, hash: [u8; 32], entry: ApiKeyEntry) -> Result<(), String> {
        if self.entries.contains_key(&hash) {
            return Err("this key hash is listed twice (for this or another consumer)".into());
        }
        self.entries.insert(hash, entry);
        Ok(())
    }

    /// Every key's entry (for `check`'s warnings on keys about to expire).
    pub fn entries(&self) -> impl Iterator<Item = &ApiKeyEntry> {
        self.entries.values()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The consumer whose key this is: one hash-table lookup of the key's digest, whatever
    /// the number of keys (a scan of 1,000 hashes cost 57 µs).
    pub fn find(&self, key: &str) -> Option<&ApiKeyEntry> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.entries.get(&digest)
    }
}

/// Parse a `sha256:<64 hex>` config string.
pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hint = "write \"sha256:<64 hex digits>\" as printed by `portcullis hash-key`";
    let hex_part = text
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("not a key hash; {hint} (plain keys never go in the config)"))?;
    let bytes = hex::decode(hex_part).map_err(|_| format!("invalid hex; {hint}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("a SHA-256 hash has 64 hex digits; {hint}"))
}

/// `not_after`: a date (`2027-06-30`, valid through that day, UTC) or an RFC 3339 time.
pub fn parse_not_after(text: &str) -> Result<SystemTime, String> {
    let hint = "write a date such as \"2027-06-30\" (valid through that day, UTC) or a time such as \"2027-06-30T12:00:00Z\"";
    let full = if text.len() == 10 {
        format!("{text}T23:59:59Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339(&full).map_err(|_| format!("invalid time {text:?}; {hint}"))
}

/// Roughly how many bits of entropy a key has: its length times the bits of the alphabet its
/// characters come from (lower case, upper case, digits, others), and none for a key of few
/// distinct characters. A SHA-256 hash is fast to guess against: only long random keys are safe.
pub fn entropy_bits(key: &str) -> f64 {
    type Class = (fn(&u8) -> bool, f64);
    let classes: [Class; 4] = [
        (u8::is_ascii_lowercase, 26.0),
        (u8::is_ascii_uppercase, 26.0),
        (u8::is_ascii_digit, 10.0),
        (
            |b: &u8| b.is_ascii_graphic() && !b.is_ascii_alphanumeric(),
            32.0,
        ),
    ];
    let alphabet: f64 = classes
        .iter()
        .filter(|(is, _)| key.bytes().any(|b| is(&b)))
        .map(|(_, size)| size)
        .sum();
    let distinct = key.bytes().collect::<std::collections::HashSet<u8>>().len();
    if distinct < 8 || alphabet < 2.0 {
        return 0.0;
    }
    key.len() as f64 * alphabet.log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        crate::checks::test_request("GET", "/", headers)
    }

    #[test]
    fn where_keys_come_from() {
        assert_eq!(presented(&req(&[])), PresentedKey::Absent);
        assert_eq!(
            presented(&req(&[("Authorization", "ApiKey abc")])),
            PresentedKey::Key("abc")
        );
        assert_eq!(
            presented(&req(&[("Authorization", "apikey abc")])),
            PresentedKey::Key("abc")
        );
        assert_eq!(
            presented(&req(&[("X-API-Key", "abc")])),
            PresentedKey::Key("abc")
        );
        assert_eq!(
            presented(&req(&[("Authorization", "Bearer t")])),
            PresentedKey::Absent
        );
        assert_eq!(
            presented(&req(&[("X-API-Key", "a"), ("X-API-Key", "b")])),
            PresentedKey::Malformed
        );
        assert_eq!(
            presented(&req(&[("X-API-Key", "a"), ("Authorization", "ApiKey b")])),
            PresentedKey::Malformed
        );
        assert_eq!(
            presented(&req(&[("X-API-Key", "")])),
            PresentedKey::Malformed
        );
        assert_eq!(
            presented(&req(&[("X-API-Key", &"k".repeat(600))])),
            PresentedKey::Malformed
        );
    }

    #[test]
    fn lookup_by_hash() {
        let mut index = ApiKeyIndex::default();
        let hash = |k: &str| -> [u8; 32] { Sha256::digest(k.as_bytes()).into() };
        let of = |consumer: u32| ApiKeyEntry {
            consumer,
            label: None,
            not_after: None,
        };
        index.insert(hash("alpha"), of(0)).unwrap();
        index.insert(hash("beta"), of(1)).unwrap();
        index.insert(hash("beta-rotated"), of(1)).unwrap();
        let found = |k: &str| index.find(k).map(|e| e.consumer);
        assert_eq!(found("alpha"), Some(0));
        assert_eq!(found("beta"), Some(1));
        assert_eq!(found("beta-rotated"), Some(1));
        assert_eq!(found("alphb"), None);
        assert_eq!(found(""), None);
        assert!(index.insert(hash("alpha"), of(2)).is_err());
    }

    #[test]
    fn hash_strings() {
        assert!(parse_hash(
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        )
        .is_ok());
        assert!(
            parse_hash("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08").is_err()
        );
        assert!(parse_hash("sha256:abc").is_err());
        assert!(parse_hash(
            "sha256:zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        )
        .is_err());
    }

    #[test]
    fn key_lifetimes_and_entropy() {
        let day = parse_not_after("2027-06-30").unwrap();
        assert_eq!(
            day,
            humantime::parse_rfc3339("2027-06-30T23:59:59Z").unwrap()
        );
        assert!(parse_not_after("2027-06-30T12:00:00Z").is_ok());
        for bad in ["30/06/2027", "2027-13-01", "soon", ""] {
            assert!(parse_not_after(bad).is_err(), "{bad}");
        }
        let entry = ApiKeyEntry {
            consumer: 0,
            label: None,
            not_after: Some(day),
        };
        assert!(!entry.expired(day));
        assert!(entry.expired(day + std::time::Duration::from_secs(1)));
        // gen-key's 43 characters of URL-safe base64: about 256 bits.
        assert!(entropy_bits("k-0123456789abcdefghijklmnopqrstuvwxyzABCDE") > 250.0);
        for weak in [
            "password123",
            "0123456789abcdef",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(entropy_bits(weak) < 128.0, "{weak}");
        }
    }
}
