//! The daemon's HTTP endpoints: `/healthz` (liveness: the scheduler loop is alive), `/readyz`
//! (readiness: the store is open and the last successful run is recent), `/metrics`
//! (Prometheus text) and `/status` (JSON of the last runs and failing users). Read-only: nothing
//! here can trigger or change a run.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::apply::{with_store, SharedStore};
use crate::metrics::Metrics;
use crate::schedule::DaemonState;

#[derive(Clone)]
pub struct AppState {
    pub daemon: Arc<DaemonState>,
    pub metrics: Arc<Metrics>,
    pub store: SharedStore,
    pub stale_after: Duration,
    /// The scheduler is considered dead when its heartbeat is older than this.
    pub liveness_window: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// Serves until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn healthz(State(s): State<AppState>) -> Response {
    let beat = s.daemon.heartbeat.load(Ordering::Relaxed);
    let age = Utc::now().timestamp() - beat;
    if beat > 0 && age <= s.liveness_window.as_secs() as i64 {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the scheduler loop has not run for {age} s\n"),
        )
            .into_response()
    }
}

/// Why the daemon is not ready, or `None` when it is.
pub fn readiness(
    last_success: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
    stale_after: Duration,
) -> Option<String> {
    match last_success {
        None => Some("no successful run yet".to_string()),
        Some(t) => {
            let age = (now - t).to_std().unwrap_or(Duration::ZERO);
            (age > stale_after).then(|| {
                format!(
                    "the last successful run ended {} s ago, more than [sync] stale_after ({} s)",
                    age.as_secs(),
                    stale_after.as_secs()
                )
            })
        }
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let last = *s
        .daemon
        .last_success
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match readiness(last, Utc::now(), s.stale_after) {
        None => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Response {
    let running = s.daemon.running.load(Ordering::SeqCst);
    let skipped = s.daemon.skipped_ticks.load(Ordering::Relaxed);
    match with_store(&s.store, |st| crate::status::collect(st, 20)).await {
        Ok(report) => Json(json!({
            "running": running,
            "skipped_ticks": skipped,
            "managed_active": report.managed_active,
            "managed_inactive": report.managed_inactive,
            "unmanaged_members": report.unmanaged.len(),
            "failures": report.failures,
            "quarantined": report.quarantined,
            "interrupted_writes": report.interrupted_writes,
            "last_success": report.last_success,
            "runs": report.runs,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_requires_a_recent_successful_run() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        assert!(readiness(None, now, hour).is_some());
        assert!(readiness(Some(now - chrono::Duration::minutes(10)), now, hour).is_none());
        let stale = readiness(Some(now - chrono::Duration::hours(2)), now, hour).expect("stale");
        assert!(stale.contains("stale_after"), "{stale}");
    }
}
