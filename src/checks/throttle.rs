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
use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the suspects are read from the store.
const SUSPECTS_EVERY: Duration = Duration::from_millis(100);

pub struct FailureThrottle {
    window: SlidingWindow,
    per: Duration,
    shared: Option<SharedThrottle>,
    /// Failures within the last window (address, Unix ms), oldest first: what a graceful
    /// upgrade carries to the next process when there is no shared store (`ThrottleCarry`).
    recent: Mutex<VecDeque<(IpAddr, u64)>>,
    /// Bumped with every failure: the carry file is rewritten only when it moved.
    failures: AtomicU64,
}

/// Failures carried over at most (older ones are dropped first).
const MAX_CARRIED: usize = 100_000;

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
            recent: Mutex::new(VecDeque::new()),
            failures: AtomicU64::new(0),
        }
    }

    fn remember(&self, ip: IpAddr, at_ms: u64) {
        if let Ok(mut recent) = self.recent.lock() {
            let horizon = unix_ms().saturating_sub(self.per.as_millis() as u64);
            while recent
                .front()
                .is_some_and(|(_, t)| *t < horizon || recent.len() >= MAX_CARRIED)
            {
                recent.pop_front();
            }
            recent.push_back((ip, at_ms));
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The failures of the last window, a line each: `<address> <Unix ms>`.
    pub fn carry_text(&self) -> String {
        let horizon = unix_ms().saturating_sub(self.per.as_millis() as u64);
        let Ok(recent) = self.recent.lock() else {
            return String::new();
        };
        let mut out = String::new();
        for (ip, at) in recent.iter().filter(|(_, t)| *t >= horizon) {
            out.push_str(&format!("{ip} {at}\n"));
        }
        out
    }

    /// Take over the failures a previous process wrote (`carry_text`): each still within the
    /// window counts again, from now — an address may stay throttled up to one window longer,
    /// never shorter. Returns how many were taken.
    pub fn restore(&self, text: &str) -> usize {
        let horizon = unix_ms().saturating_sub(self.per.as_millis() as u64);
        let mut taken = 0;
        for line in text.lines() {
            let Some((ip, at)) = line.split_once(' ') else {
                continue;
            };
            let (Ok(ip), Ok(at)) = (ip.parse::<IpAddr>(), at.parse::<u64>()) else {
                continue;
            };
            if at >= horizon && taken < MAX_CARRIED {
                self.window.record(&ip);
                self.remember(ip, at);
                taken += 1;
            }
        }
        taken
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
        self.remember(*ip, unix_ms());
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

/// Keeps this process's failures in a file beside the pid file, for the process a graceful
/// upgrade starts next (`restore`): rewritten at most every 200 ms when failures came, and once
/// more when this process begins to shut down. Without a shared store only.
pub struct ThrottleCarry {
    pub throttle: Arc<FailureThrottle>,
    pub path: PathBuf,
    /// A failure to write was logged: once is enough.
    pub warned: std::sync::atomic::AtomicBool,
}

/// How often the carry file may be rewritten.
const CARRY_EVERY: Duration = Duration::from_millis(200);

impl ThrottleCarry {
    fn write(&self) {
        let text = self.throttle.carry_text();
        let Err(e) = crate::files::write_private(&self.path, text.as_bytes()) else {
            return;
        };
        if self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let what = format!(
            "the brute-force throttle's failures are not kept in {}: {e}; a graceful upgrade will start them from zero",
            self.path.display()
        );
        // No directory for the pid file (a development run of the sample config): there is
        // no upgrade to prepare for either.
        match e.kind() {
            std::io::ErrorKind::NotFound => log::info!("{what}"),
            _ => log::warn!("{what}"),
        }
    }
}

#[async_trait]
impl BackgroundService for ThrottleCarry {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut written = self.throttle.failures.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CARRY_EVERY) => {}
                _ = shutdown.changed() => {
                    self.write();
                    return;
                }
            }
            let now = self.throttle.failures.load(Ordering::Relaxed);
            if now != written {
                written = now;
                self.write();
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
    async fn failures_are_carried_to_the_next_process() {
        let old = FailureThrottle::new(3, Duration::from_secs(60), None);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..3 {
            old.record_failure(&a).await;
        }
        old.record_failure(&b).await;
        let text = old.carry_text();
        assert_eq!(text.lines().count(), 4, "{text}");
        let next = FailureThrottle::new(3, Duration::from_secs(60), None);
        let stale = format!("{a} 1000\nnot a line\n{text}");
        assert_eq!(
            next.restore(&stale),
            4,
            "the stale and broken lines are skipped"
        );
        assert_eq!(next.check(&a).await.unwrap_err().status, 429);
        assert!(next.check(&b).await.is_ok());
        assert_eq!(next.carry_text().lines().count(), 4, "and carried on again");
    }

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
