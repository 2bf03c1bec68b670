//! What a WebSocket tunnel reports: `portcullis_websocket_tunnels{route}` (open now),
//! `portcullis_websocket_closed_total{route,reason}`, and the close reason for the upgrade
//! request's access-log line (`websocket_close`).

use super::metrics::Metrics;
use crate::stream::tunnel::TunnelEvents;
use prometheus::{IntCounter, IntGauge};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// One tunnel's events, counted under its route.
pub struct TunnelReport {
    open: IntGauge,
    closed: prometheus::IntCounterVec,
    route: String,
    counted_open: AtomicBool,
    /// Why it closed, once it has.
    pub reason: OnceLock<&'static str>,
}

impl TunnelReport {
    pub fn new(metrics: &Metrics, route: &str) -> Arc<Self> {
        Arc::new(TunnelReport {
            open: metrics.websocket_tunnels.with_label_values(&[route]),
            closed: metrics.websocket_closed_total.clone(),
            route: route.to_string(),
            counted_open: AtomicBool::new(false),
            reason: OnceLock::new(),
        })
    }
}

impl TunnelEvents for TunnelReport {
    fn opened(&self) {
        if !self.counted_open.swap(true, Ordering::Relaxed) {
            self.open.inc();
        }
    }

    fn closed(&self, reason: &'static str) {
        if self.reason.set(reason).is_err() {
            return;
        }
        if self.counted_open.swap(false, Ordering::Relaxed) {
            self.open.dec();
        }
        let counter: IntCounter = self
            .closed
            .with_label_values(&[self.route.as_str(), reason]);
        counter.inc();
    }
}
