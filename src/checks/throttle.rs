//! SPEC §3 step 5: the brute-force throttle. Failed authentications are counted per client IP
//! with `pingora-limits` (a sliding estimate over two fixed windows); past the limit the IP gets
//! 429 with `Retry-After` before any credential is looked at.

use crate::problem::Refusal;
use pingora_limits::rate::Rate;
use std::net::IpAddr;
use std::time::Duration;

pub struct FailureThrottle {
    rate: Rate,
    limit: f64,
    per: Duration,
}

impl FailureThrottle {
    pub fn new(failures: u32, per: Duration) -> Self {
        FailureThrottle {
            rate: Rate::new(per),
            limit: f64::from(failures),
            per,
        }
    }

    /// Failures in the last window, estimated: the current window plus the unexpired part of
    /// the previous one. Also returns the seconds until the estimate falls below the limit.
    fn estimate(&self, ip: &IpAddr) -> (f64, u64) {
        let limit = self.limit;
        let per = self.per.as_secs_f64();
        self.rate.rate_with(ip, |c| {
            let prev = c.prev_samples as f64;
            let curr = c.curr_samples as f64;
            let frac = c.current_interval_fraction;
            let estimate = prev * (1.0 - frac) + curr;
            let wait = if curr >= limit {
                // The current window must end, then its count must decay below the limit.
                (1.0 - frac) * per + per * (1.0 - limit / curr.max(1.0))
            } else if prev > 0.0 {
                // The previous window's share must decay: prev * (1 - f) + curr < limit.
                let needed = 1.0 - (limit - curr) / prev;
                (needed - frac).max(0.0) * per
            } else {
                0.0
            };
            (estimate, wait.ceil().max(1.0) as u64)
        })
    }

    pub fn check(&self, ip: &IpAddr) -> Result<(), Refusal> {
        let (estimate, wait) = self.estimate(ip);
        if estimate >= self.limit {
            return Err(Refusal::new(
                429,
                "auth_failures_throttled",
                "too many failed authentications from this address; retry later",
            )
            .with_header("Retry-After", wait.to_string()));
        }
        Ok(())
    }

    pub fn record_failure(&self, ip: &IpAddr) {
        self.rate.observe(ip, 1);
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
    }
}
