//! SPEC §3 step 5: the brute-force throttle. Failed authentications are counted per client IP
//! over a sliding window (`rate_limit::SlidingWindow`); past the limit the IP gets
//! 429 with `Retry-After` before any credential is looked at.

use super::rate_limit::SlidingWindow;
use crate::problem::{Family, Refusal};
use std::net::IpAddr;
use std::time::Duration;

pub struct FailureThrottle {
    window: SlidingWindow,
}

impl FailureThrottle {
    pub fn new(failures: u32, per: Duration) -> Self {
        FailureThrottle {
            window: SlidingWindow::new(failures, per),
        }
    }

    /// Step 5 for a route: public routes take no credentials, so they are never throttled.
    pub fn check_route(throttle: Option<&Self>, public: bool, ip: &IpAddr) -> Result<(), Refusal> {
        match throttle {
            Some(throttle) if !public => throttle.check(ip),
            _ => Ok(()),
        }
    }

    pub fn check(&self, ip: &IpAddr) -> Result<(), Refusal> {
        let state = self.window.peek(ip);
        if state.used >= self.window.limit() {
            return Err(Refusal::new(
                429,
                "auth_failures_throttled",
                "too many failed authentications from this address; retry later",
            )
            .in_family(Family::Authentication)
            .with_header("Retry-After", state.retry_after.to_string()));
        }
        Ok(())
    }

    pub fn record_failure(&self, ip: &IpAddr) {
        self.window.record(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_only_that_ip() {
        let t = FailureThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 {
            t.record_failure(&a);
            assert!(t.check(&a).is_ok());
        }
        t.record_failure(&a);
        let refusal = t.check(&a).unwrap_err();
        assert_eq!(refusal.status, 429);
        let retry: u64 = refusal.headers[0].1.parse().unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
        assert!(t.check(&b).is_ok());
        assert_eq!(refusal.family, Family::Authentication);
        assert!(FailureThrottle::check_route(Some(&t), false, &a).is_err());
        assert!(FailureThrottle::check_route(Some(&t), true, &a).is_ok());
        assert!(FailureThrottle::check_route(None, false, &a).is_ok());
    }
}
