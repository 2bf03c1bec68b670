//! DPoP nonces (RFC 9449 §8): with `[security] dpop_nonce = true` a proof must carry a nonce
//! the gateway handed out recently, so a proof made in advance (by a script that got hold of
//! the key for a while) stops working once its nonce is out of date.
//!
//! Nothing is stored per client: the nonce of a window of time is HMAC-SHA256(secret, window
//! number), base64url, and the windows are `dpop_proof_lifetime` long (the current window's
//! nonces are made once and kept). The nonces of the current and
//! the previous window are accepted, so a nonce is good for one to two windows; a proof with
//! the previous window's nonce passes, and its response hands the client the current one.
//! Instances that share the secret (`dpop_nonce_secret_env` or `_file`) accept each other's
//! nonces; without it each process draws its own, and a client that meets another instance is
//! asked once to retry with that instance's nonce.

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use std::sync::Arc;
use std::time::Duration;

/// The shortest secret accepted: a nonce must not be guessable.
pub const MIN_SECRET_BYTES: usize = 32;
/// Bytes of the MAC a nonce carries (128 bits).
const NONCE_BYTES: usize = 16;

/// What a proof's nonce is worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceCheck {
    /// The current window's.
    Current,
    /// The previous window's: accepted, and `String` is the current nonce to hand out.
    Stale(String),
    /// Missing, made up, or older: the client must retry with the current nonce.
    Refused,
}

/// Issues and checks the nonces of one secret.
pub struct NonceIssuer {
    key: PKey<Private>,
    window: u64,
    /// The nonces of the last window asked about, made once per window (an HMAC costs ~2 µs).
    known: ArcSwapOption<Known>,
}

/// Window `n`'s nonce and its predecessor's.
struct Known {
    n: u64,
    current: String,
    previous: Option<String>,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl NonceIssuer {
    /// Nonces of `secret` (at least `MIN_SECRET_BYTES`), a new one every `window`.
    pub fn new(secret: &[u8], window: Duration) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret has {} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -base64 48`)",
                secret.len()
            ));
        }
        let key = PKey::hmac(secret).map_err(|e| format!("cannot make an HMAC key: {e}"))?;
        Ok(NonceIssuer {
            key,
            window: window.as_secs().max(1),
            known: ArcSwapOption::empty(),
        })
    }

    /// Nonces of a secret drawn at random for this process alone.
    pub fn random(window: Duration) -> Result<Self, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no random secret: {e}"))?;
        Self::new(&secret, window)
    }

    /// The nonce to hand out at `now` (Unix seconds).
    pub fn current(&self, now: u64) -> String {
        self.known(now / self.window).current.clone()
    }

    /// What a proof's `nonce` claim is worth at `now`.
    pub fn check(&self, nonce: Option<&str>, now: u64) -> NonceCheck {
        let Some(nonce) = nonce else {
            return NonceCheck::Refused;
        };
        let known = self.known(now / self.window);
        if nonce == known.current {
            NonceCheck::Current
        } else if known.previous.as_deref() == Some(nonce) {
            NonceCheck::Stale(known.current.clone())
        } else {
            NonceCheck::Refused
        }
    }

    /// The nonces of window `n`, made when a window is first asked about. Requests around a
    /// window's change may ask about two windows in turn; each answer is still right.
    fn known(&self, n: u64) -> Arc<Known> {
        if let Some(known) = self.known.load_full().filter(|k| k.n == n) {
            return known;
        }
        let made = Arc::new(Known {
            n,
            current: self.nonce_of(n),
            previous: n.checked_sub(1).map(|p| self.nonce_of(p)),
        });
        self.known.store(Some(made.clone()));
        made
    }

    /// The nonce of window `n`. Nonces are public (every 401 carries one), so comparing them
    /// in variable time leaks nothing.
    fn nonce_of(&self, n: u64) -> String {
        let mac = Signer::new(MessageDigest::sha256(), &self.key)
            .and_then(|mut signer| {
                signer.update(&n.to_be_bytes())?;
                signer.sign_to_vec()
            })
            .unwrap_or_default();
        URL_SAFE_NO_PAD.encode(mac.get(..NONCE_BYTES).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-shared";

    #[test]
    fn nonces_last_one_to_two_windows() {
        let issuer = NonceIssuer::new(SECRET, Duration::from_secs(60)).unwrap();
        let at = 1_800_000_000; // a window's start
        let nonce = issuer.current(at);
        assert_eq!(nonce.len(), 22, "{nonce}");
        assert_eq!(issuer.check(Some(&nonce), at), NonceCheck::Current);
        assert_eq!(issuer.check(Some(&nonce), at + 59), NonceCheck::Current);
        assert_eq!(
            issuer.check(Some(&nonce), at + 60),
            NonceCheck::Stale(issuer.current(at + 60))
        );
        assert_ne!(issuer.current(at + 60), nonce);
        assert_eq!(issuer.check(Some(&nonce), at + 120), NonceCheck::Refused);
        // A nonce of the future is not handed out and not accepted.
        assert_eq!(
            issuer.check(Some(&issuer.current(at + 60)), at),
            NonceCheck::Refused
        );
    }

    #[test]
    fn only_nonces_of_the_same_secret_pass() {
        let at = 1_800_000_000;
        let one = NonceIssuer::new(SECRET, Duration::from_secs(60)).unwrap();
        let same = NonceIssuer::new(SECRET, Duration::from_secs(60)).unwrap();
        assert_eq!(same.check(Some(&one.current(at)), at), NonceCheck::Current);
        let other = NonceIssuer::random(Duration::from_secs(60)).unwrap();
        assert_eq!(other.check(Some(&one.current(at)), at), NonceCheck::Refused);
        for made_up in ["", "x", "AAAAAAAAAAAAAAAAAAAAAA", &"A".repeat(10_000)] {
            assert_eq!(one.check(Some(made_up), at), NonceCheck::Refused);
        }
        assert_eq!(one.check(None, at), NonceCheck::Refused);
        let short = NonceIssuer::new(b"short", Duration::from_secs(60)).unwrap_err();
        assert!(short.contains("at least 32"), "{short}");
    }
}
