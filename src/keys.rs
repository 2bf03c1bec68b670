//! API key helpers for the CLI: `hash-key` and `gen-key`. Only hashes go into the config.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The config string for a key: `sha256:<hex of SHA-256 of the key bytes>`.
pub fn config_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new random key: 32 bytes from the OS, URL-safe base64 without padding (43 characters).
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("cannot read random bytes from the OS: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The key read from stdin: one line, its line ending removed; empty or multi-line is refused.
pub fn key_from_input(input: &str) -> Result<&str, String> {
    let key = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(input);
    if key.is_empty() {
        return Err(
            "no key on standard input; pipe one in, e.g. `echo -n KEY | portcullis hash-key`"
                .into(),
        );
    }
    if key.contains(['\n', '\r']) {
        return Err("more than one line on standard input; give exactly one key".into());
    }
    if key.trim() != key {
        return Err(
            "the key starts or ends with white space; remove it (it would be part of the hash)"
                .into(),
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            config_hash("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn input_handling() {
        assert_eq!(key_from_input("abc\n"), Ok("abc"));
        assert_eq!(key_from_input("abc\r\n"), Ok("abc"));
        assert_eq!(key_from_input("abc"), Ok("abc"));
        assert!(key_from_input("").is_err());
        assert!(key_from_input("\n").is_err());
        assert!(key_from_input("a\nb\n").is_err());
        assert!(key_from_input(" abc\n").is_err());
    }
}
