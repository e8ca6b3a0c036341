//! Prometheus metrics: one registry per process, shared by the clients, the engine and the HTTP
//! server. Counters are cheap to bump from anywhere; the text encoding happens only on scrape.
//! This module owns the metric names; it must not decide anything about the sync itself.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// Every metric the daemon exports. Create one with [`Metrics::new`] and share it in an `Arc`.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    run_duration: Histogram,
    operations: Family<Labels, Counter>,
    okta_requests: Family<Labels, Counter>,
    scim_requests: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    rate_limit_wait: Family<Labels, Counter<f64, AtomicU64>>,
    last_success: Gauge<f64, AtomicU64>,
    managed_users: Family<Labels, Gauge>,
    unmanaged_members: Gauge,
    quarantined: Gauge,
    unresolved_writes: Family<Labels, Gauge>,
    managed_groups: Gauge,
    run_panics: Counter,
    http_refused: Family<Labels, Counter>,
    /// Near-real-time sync (issue 14).
    pub events: EventMetrics,
    /// Completed HTTP exchanges with Okta or Postman, for the scheduler's progress watch (not
    /// exported: the labelled request counters above already are).
    exchanges: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("okta_postman_sync");
        let runs = Family::<Labels, Counter>::default();
        registry.register("runs", "Reconcile runs by outcome", runs.clone());
        let run_duration = Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]);
        registry.register(
            "run_duration_seconds",
            "Wall time of reconcile runs",
            run_duration.clone(),
        );
        let operations = Family::<Labels, Counter>::default();
        registry.register(
            "operations",
            "SCIM operations by kind and result",
            operations.clone(),
        );
        let okta_requests = Family::<Labels, Counter>::default();
        registry.register(
            "okta_requests",
            "Okta API requests by HTTP status (0 = transport error)",
            okta_requests.clone(),
        );
        let scim_requests = Family::<Labels, Counter>::default();
        registry.register(
            "scim_requests",
            "Postman SCIM requests by method and HTTP status (0 = transport error)",
            scim_requests.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        registry.register("retries", "Retried requests by API", retries.clone());
        let rate_limit_wait = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "Seconds spent waiting for rate-limit budget, by API",
            rate_limit_wait.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the end of the last successful run",
            last_success.clone(),
        );
        let managed_users = Family::<Labels, Gauge>::default();
        registry.register(
            "managed_users",
            "Postman members managed by this daemon, by state",
            managed_users.clone(),
        );
        let unmanaged_members = Gauge::default();
        registry.register(
            "unmanaged_members",
            "Postman members that no Okta user matches (never touched), as of the last full run",
            unmanaged_members.clone(),
        );
        let quarantined = Gauge::default();
        registry.register(
            "quarantined_users",
            "Users whose operations keep failing and are retried with a long backoff",
            quarantined.clone(),
        );
        let unresolved_writes = Family::<Labels, Gauge>::default();
        registry.register(
            "unresolved_writes",
            "Interrupted writes whose outcome could not be verified yet, by state (retrying, parked); their users are held",
            unresolved_writes.clone(),
        );
        let managed_groups = Gauge::default();
        registry.register(
            "managed_groups",
            "Postman groups managed by this daemon",
            managed_groups.clone(),
        );
        let run_panics = Counter::default();
        registry.register(
            "run_panics",
            "Runs that ended abnormally (a panic) and were recorded as failed by the scheduler",
            run_panics.clone(),
        );
        let http_refused = Family::<Labels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections closed by the endpoint's limits, by reason (peer_limit, full, evicted)",
            http_refused.clone(),
        );
        let events = EventMetrics::register(&mut registry);
        Self {
            events,
            registry,
            runs,
            run_duration,
            operations,
            okta_requests,
            scim_requests,
            retries,
            rate_limit_wait,
            last_success,
            managed_users,
            unmanaged_members,
            quarantined,
            unresolved_writes,
            managed_groups,
            run_panics,
            http_refused,
            exchanges: AtomicU64::new(0),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn run_finished(&self, outcome: &str, seconds: f64) {
        self.runs
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
        self.run_duration.observe(seconds);
    }

    pub fn operation(&self, kind: &str, result: &str) {
        self.operations
            .get_or_create(&labels(&[("kind", kind), ("result", result)]))
            .inc();
    }

    /// One Okta HTTP exchange. `status` 0 means no response (transport error).
    pub fn okta_request(&self, status: u16) {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        self.okta_requests
            .get_or_create(&labels(&[("status", &status.to_string())]))
            .inc();
    }

    /// One SCIM HTTP exchange. `status` 0 means no response (transport error).
    pub fn scim_request(&self, method: &str, status: u16) {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        self.scim_requests
            .get_or_create(&labels(&[
                ("method", method),
                ("status", &status.to_string()),
            ]))
            .inc();
    }

    /// `api` is `okta` or `scim`.
    pub fn retry(&self, api: &str) {
        self.retries.get_or_create(&labels(&[("api", api)])).inc();
    }

    /// `api` is `okta` or `scim`.
    pub fn rate_limit_wait(&self, api: &str, seconds: f64) {
        if seconds > 0.0 {
            self.rate_limit_wait
                .get_or_create(&labels(&[("api", api)]))
                .inc_by(seconds);
        }
    }

    pub fn set_last_success(&self, unix_seconds: f64) {
        self.last_success.set(unix_seconds);
    }

    pub fn set_managed_users(&self, active: i64, inactive: i64) {
        self.managed_users
            .get_or_create(&labels(&[("state", "active")]))
            .set(active);
        self.managed_users
            .get_or_create(&labels(&[("state", "inactive")]))
            .set(inactive);
    }

    pub fn set_unmanaged_members(&self, n: i64) {
        self.unmanaged_members.set(n);
    }

    pub fn set_quarantined(&self, n: i64) {
        self.quarantined.set(n);
    }

    /// Interrupted writes that recovery could not settle: still `retrying`, or `parked`.
    pub fn set_unresolved_writes(&self, retrying: i64, parked: i64) {
        for (state, n) in [("retrying", retrying), ("parked", parked)] {
            self.unresolved_writes
                .get_or_create(&labels(&[("state", state)]))
                .set(n);
        }
    }

    pub fn set_managed_groups(&self, n: i64) {
        self.managed_groups.set(n);
    }

    /// A run ended abnormally: counted as a failed run and as a panic.
    pub fn run_panicked(&self) {
        self.runs
            .get_or_create(&labels(&[("outcome", "failed")]))
            .inc();
        self.run_panics.inc();
    }

    /// `reason` is `peer_limit`, `full` or `evicted` (never the peer's address: no personal
    /// data in labels).
    pub fn http_connection_refused(&self, reason: &str) {
        self.http_refused
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// Completed HTTP exchanges with Okta or Postman so far (any status, transport errors too).
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }
}

/// The metrics of near-real-time sync (issue 14), registered with the others.
pub struct EventMetrics {
    received: Family<Labels, Counter>,
    ignored: Family<Labels, Counter>,
    targeted: Family<Labels, Counter>,
    lag: Histogram,
    cursor_updated: Gauge<f64, AtomicU64>,
    held: Gauge,
}

impl EventMetrics {
    fn register(registry: &mut Registry) -> Self {
        let received = Family::<Labels, Counter>::default();
        registry.register(
            "events_received",
            "Okta events received, by source (system_log, hook); duplicates included",
            received.clone(),
        );
        let ignored = Family::<Labels, Counter>::default();
        registry.register(
            "events_ignored",
            "Okta events that caused no re-read, by reason (type, duplicate, failed, other_app, unreadable)",
            ignored.clone(),
        );
        let targeted = Family::<Labels, Counter>::default();
        registry.register(
            "targeted_reconciles",
            "Targeted reconciles run for events, by outcome",
            targeted.clone(),
        );
        let lag = Histogram::new([
            0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0, 900.0,
        ]);
        registry.register(
            "event_lag_seconds",
            "From an event's Okta `published` time to the end of the Postman write it caused",
            lag.clone(),
        );
        let cursor_updated = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "event_cursor_updated_timestamp_seconds",
            "Unix time the System Log cursor last moved (its age is now minus this)",
            cursor_updated.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "event_held_deactivations",
            "Event-driven deactivations the rolling event guard holds for the next full run",
            held.clone(),
        );
        Self {
            received,
            ignored,
            targeted,
            lag,
            cursor_updated,
            held,
        }
    }

    pub fn received(&self, source: &str, n: u64) {
        self.received
            .get_or_create(&labels(&[("source", source)]))
            .inc_by(n);
    }

    pub fn ignored(&self, reason: &str, n: u64) {
        if n > 0 {
            self.ignored
                .get_or_create(&labels(&[("reason", reason)]))
                .inc_by(n);
        }
    }

    pub fn targeted(&self, outcome: &str) {
        self.targeted
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
    }

    pub fn lag(&self, seconds: f64) {
        self.lag.observe(seconds.max(0.0));
    }

    pub fn cursor_moved(&self, unix_seconds: f64) {
        self.cursor_updated.set(unix_seconds);
    }

    pub fn set_held(&self, n: i64) {
        self.held.set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_metrics_carry_the_prefix_and_labels() {
        let m = Metrics::new();
        m.scim_request("POST", 201);
        m.rate_limit_wait("scim", 1.5);
        let text = m.encode();
        assert!(text
            .contains("okta_postman_sync_scim_requests_total{method=\"POST\",status=\"201\"} 1"));
        assert!(text.contains("okta_postman_sync_rate_limit_wait_seconds_total{api=\"scim\"} 1.5"));
    }
}
