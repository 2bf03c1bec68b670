//! A bounded cache of verified JWTs, so that a client sending the same token again does not pay
//! for another signature check (an ES256 or RS256 verification costs far more than the rest of
//! the chain).
//!
//! What makes it safe:
//! - the key is the SHA-256 of the whole token: a token with one byte changed (its signature,
//!   say) is another key and goes through full verification;
//! - only successful verifications are stored, with the instant the token stops passing its
//!   `exp` check (`exp` plus the provider's leeway): an entry is never used at or after it;
//! - every entry remembers the generation of the key set that verified it: when the keys are
//!   replaced (a JWKS refresh that drops or rotates a key) every older entry stops counting;
//! - it is bounded: a full shard first drops expired entries, then an arbitrary one.
//!
//! What is stored for a token (`T`) is the verifier's business: `jwt` keeps the identity.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const SHARDS: usize = 16;

struct Entry<T> {
    identity: T,
    /// Unix seconds at which the token no longer passes `exp` (with leeway).
    valid_until: u64,
    /// The key-set generation that verified it.
    generation: u64,
}

pub struct TokenCache<T> {
    shards: Vec<Mutex<HashMap<[u8; 32], Entry<T>>>>,
    per_shard: usize,
}

/// Seconds since the Unix epoch, as `exp` counts them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

impl<T: Clone> TokenCache<T> {
    /// A cache of about `capacity` tokens; `None` for a capacity of 0 (caching off).
    pub fn new(capacity: usize) -> Option<TokenCache<T>> {
        if capacity == 0 {
            return None;
        }
        Some(TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        })
    }

    fn shard(&self, key: &TokenDigest) -> Option<&Mutex<HashMap<TokenDigest, Entry<T>>>> {
        self.shards.get(usize::from(key[0]) % SHARDS)
    }

    /// The identity of a token verified before, if its entry is still good at `now` for the
    /// key set of `generation`.
    pub fn get(&self, key: &TokenDigest, generation: u64, now: u64) -> Option<T> {
        let mut shard = self.shard(key)?.lock().ok()?;
        match shard.get(key) {
            Some(e) if e.generation == generation && now < e.valid_until => {
                Some(e.identity.clone())
            }
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(
        &self,
        key: TokenDigest,
        identity: T,
        generation: u64,
        valid_until: u64,
        now: u64,
    ) {
        if valid_until <= now {
            return;
        }
        let Some(Ok(mut shard)) = self.shard(&key).map(|s| s.lock()) else {
            return;
        };
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| now < e.valid_until && e.generation == generation);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key,
            Entry {
                identity,
                valid_until,
                generation,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> String {
        name.to_string()
    }

    #[test]
    fn entries_end_at_their_deadline_and_with_their_key_set() {
        let c = TokenCache::new(100).unwrap();
        let k = digest("a.b.c");
        c.insert(k, id("alice"), 1, 1000, 900);
        assert_eq!(c.get(&k, 1, 999), Some(id("alice")));
        assert_eq!(c.get(&k, 1, 1000), None, "not at the deadline");
        c.insert(k, id("alice"), 1, 1000, 900);
        assert_eq!(c.get(&k, 2, 950), None, "not for another key set");
        assert_eq!(c.get(&digest("a.b.d"), 1, 950), None);
        c.insert(k, id("alice"), 1, 1000, 1000);
        assert!(c.is_empty(), "an expired token is never stored");
    }

    #[test]
    fn it_stays_bounded() {
        let c = TokenCache::new(64).unwrap();
        for i in 0..10_000 {
            c.insert(digest(&format!("t{i}")), id("x"), 1, 2000, 1000);
        }
        assert!(c.len() <= 64, "{} entries", c.len());
        assert!(TokenCache::<String>::new(0).is_none());
    }
}
