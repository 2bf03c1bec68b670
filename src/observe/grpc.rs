//! `portcullis_grpc_requests_total{route,service,method,grpc_status}`. Service and method come
//! from the request path, which a client chooses: the first 1,000 distinct pairs a process sees
//! are labels, later ones are counted as `other` (a prefix route would otherwise let anyone
//! mint series without bound).

use super::metrics::Metrics;
use std::collections::HashSet;
use std::sync::Mutex;

/// Distinct (service, method) labels kept per process.
const MAX_LABELS: usize = 1000;

/// The pairs already used as labels.
#[derive(Default)]
pub struct GrpcLabels {
    known: Mutex<HashSet<(String, String)>>,
}

impl GrpcLabels {
    /// Count one gRPC call of `route` to `path` that ended with `status`.
    pub fn count(&self, metrics: &Metrics, route: &str, path: &str, status: &str) {
        let (service, method) = match service_and_method(path) {
            Some(pair) if self.admit(pair) => pair,
            _ => ("other", "other"),
        };
        metrics
            .grpc_requests_total
            .with_label_values(&[route, service, method, status])
            .inc();
    }

    fn admit(&self, (service, method): (&str, &str)) -> bool {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let key = (service.to_string(), method.to_string());
        if known.contains(&key) {
            return true;
        }
        if known.len() >= MAX_LABELS {
            return false;
        }
        known.insert(key);
        true
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
pub fn service_and_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    };
    (ok(service) && ok(method)).then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_method_come_from_the_path() {
        assert_eq!(
            service_and_method("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        for bad in ["/", "/a", "/a/", "//b", "/a/b/c", "/a b/c", "nope"] {
            assert_eq!(service_and_method(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_are_bounded() {
        let metrics = Metrics::new().unwrap();
        let labels = GrpcLabels::default();
        for i in 0..MAX_LABELS + 50 {
            labels.count(&metrics, "r", &format!("/pkg.S{i}/M"), "0");
        }
        labels.count(&metrics, "r", "/pkg.S0/M", "0");
        labels.count(&metrics, "r", "/not a grpc path", "0");
        let other = metrics
            .grpc_requests_total
            .with_label_values(&["r", "other", "other", "0"])
            .get();
        assert_eq!(other, 51);
        let first = metrics
            .grpc_requests_total
            .with_label_values(&["r", "pkg.S0", "M", "0"])
            .get();
        assert_eq!(first, 2);
    }
}
