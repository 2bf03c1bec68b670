//! SPEC §3 step 5: the brute-force throttle. Failed authentications are counted per client IP
//! over a sliding window (`rate_limit::SlidingWindow`); past the limit the IP gets
//! 429 with `Retry-After` before any credential is looked at.
//!
//! With `[rate_limit_store]` the count is shared: every failure is also counted in Redis (per
//! twentieth of the window, under a hash of the address) and the address is named a suspect
//! there for one window. Each instance reads the suspects every 100 ms (`SuspectReader`); a
//! request from a suspect address — or one that failed here — is checked against the shared
//! count before its credential is looked at, so failures spread over instances, or over a
//! graceful upgrade (the new process reads the same store), spend one budget. Other addresses
//! cost no Redis round trip. When Redis cannot answer, `on_store_error` decides, as for the
//! shared limits: `local` keeps this instance's count, `deny` refuses with 503.

use super::rate_limit::shared::{frees_at, unix_ms, OnStoreError, SharedLimiter};
use super::rate_limit::SlidingWindow;
use crate::problem::{Family, Refusal};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often the suspects are read from the store.
const SUSPECTS_EVERY: Duration = Duration::from_millis(100);

pub struct FailureThrottle {
    window: SlidingWindow,
    per: Duration,
    shared: Option<SharedThrottle>,
}

struct SharedThrottle {
    store: Arc<SharedLimiter>,
    /// Hashed addresses that failed at any instance within one window; `None` until first read
    /// (until then every address is checked against the store: a new process, just upgraded,
    /// knows no suspects yet).
    suspects: ArcSwapOption<HashSet<[u8; 16]>>,
}

/// The name of an address in the store: a hash, so that Redis never holds client addresses.
fn ip_key(ip: &IpAddr) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("throttle-ip:{ip}").as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn throttled(retry_after: u64) -> Refusal {
    Refusal::new(
        429,
        "auth_failures_throttled",
        "too many failed authentications from this address; retry later",
    )
    .in_family(Family::Authentication)
    .with_header("Retry-After", retry_after.to_string())
}

impl FailureThrottle {
    /// A throttle of `failures` per `per`, shared through `store` when given.
    pub fn new(failures: u32, per: Duration, store: Option<Arc<SharedLimiter>>) -> Self {
        FailureThrottle {
            window: SlidingWindow::new(failures, per),
            per,
            shared: store.map(|store| SharedThrottle {
                store,
                suspects: ArcSwapOption::empty(),
            }),
        }
    }

    /// Step 5 for a route: public routes take no credentials, so they are never throttled.
    pub async fn check_route(
        throttle: Option<&Self>,
        public: bool,
        ip: &IpAddr,
    ) -> Result<(), Refusal> {
        match throttle {
            Some(throttle) if !public => throttle.check(ip).await,
            _ => Ok(()),
        }
    }

    pub async fn check(&self, ip: &IpAddr) -> Result<(), Refusal> {
        let state = self.window.peek(ip);
        if state.used >= self.window.limit() {
            return Err(throttled(state.retry_after));
        }
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let key = ip_key(ip);
        let known = shared.suspects.load();
        if state.used == 0 && known.as_ref().is_some_and(|s| !s.contains(&key)) {
            return Ok(());
        }
        match shared.store.failures(key, self.per).await {
            Ok((counts, bucket, bucket_ms)) => {
                let limit = u64::from(self.window.limit());
                if counts.iter().sum::<u64>() >= limit {
                    let until = frees_at(&counts, limit, bucket, bucket_ms);
                    let seconds = until.saturating_sub(unix_ms()).div_ceil(1000).max(1);
                    return Err(throttled(seconds));
                }
                Ok(())
            }
            Err(_) if shared.store.on_error == OnStoreError::Deny => {
                Err(SharedLimiter::store_down())
            }
            Err(_) => Ok(()),
        }
    }

    pub async fn record_failure(&self, ip: &IpAddr) {
        self.window.record(ip);
        if let Some(shared) = &self.shared {
            // A store error is counted and logged by the store; this instance's count stands.
            let _ = shared.store.record_failure(ip_key(ip), self.per).await;
        }
    }

    /// Read the suspects from the store now (the `SuspectReader` does it every 100 ms).
    pub async fn refresh_suspects(&self) {
        if let Some(shared) = &self.shared {
            if let Ok(list) = shared.store.suspects().await {
                shared
                    .suspects
                    .store(Some(Arc::new(list.into_iter().collect())));
            }
        }
    }
}

/// Reads the shared throttle's suspects from the store, every 100 ms.
pub struct SuspectReader {
    pub throttle: Arc<FailureThrottle>,
}

#[async_trait]
impl BackgroundService for SuspectReader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.throttle.refresh_suspects().await;
            tokio::select! {
                _ = tokio::time::sleep(SUSPECTS_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_after_the_limit_and_only_that_ip() {
        let t = FailureThrottle::new(3, Duration::from_secs(60), None);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            t.record_failure(&a).await;
            assert!(t.check(&a).await.is_ok());
        }
        t.record_failure(&a).await;
        let refusal = t.check(&a).await.unwrap_err();
        assert_eq!(refusal.status, 429);
        let retry: u64 = refusal.headers[0].1.parse().unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
        assert!(t.check(&b).await.is_ok());
        assert_eq!(refusal.family, Family::Authentication);
        assert!(FailureThrottle::check_route(Some(&t), false, &a)
            .await
            .is_err());
        assert!(FailureThrottle::check_route(Some(&t), true, &a)
            .await
            .is_ok());
        assert!(FailureThrottle::check_route(None, false, &a).await.is_ok());
        assert_ne!(ip_key(&a), ip_key(&b));
    }
}
