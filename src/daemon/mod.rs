//! The long-running daemon, built: [`run_with`] runs the scheduler ([`schedule`]) and serves the
//! HTTP endpoints ([`http`]) until a `CancellationToken` fires, then stops starting new work, lets
//! the run in flight stop between operations, and returns. Shutdown is a parameter, so tests stop
//! the daemon without signals.
//!
//! This module must not read the command line, print, or decide exit codes: `cmd::run` loads the
//! config, takes the single-writer lock, binds the listener and maps the result.

pub mod http;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::retry::RetryPolicy;
use crate::sync::Engine;
use http::{AppState, StatusToken};
use schedule::{engine_runner, scheduler, DaemonState, Runner, SchedulerLimits};

/// How long a stopping daemon waits for the run in flight. Reads stop at once and a write on the
/// wire gets `apply::WRITE_GRACE` (3 s), so the run normally ends well inside this; the bound
/// keeps the whole exit under the 10 s the issue promises (systemd's and Kubernetes' grace
/// periods are longer).
pub const STOP_GRACE: Duration = Duration::from_secs(6);

/// `/healthz` fails when the scheduler loop (which wakes at least every 5 s) has not beaten for
/// this long. Half of the unit's `WatchdogSec=60s`, so the endpoint reports it first.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(30);

/// Reads the optional `/status` token (`[server] status_token_file`, else
/// `OKTA_POSTMAN_SYNC_STATUS_TOKEN`, else the systemd credential `status-token`).
pub fn load_status_token(config: &Config) -> Result<Option<StatusToken>, ConfigError> {
    let key = "server.status_token_file";
    match config
        .status_token
        .load_optional(key, "the /status token")?
    {
        None => Ok(None),
        Some(secret) => StatusToken::new(secret)
            .map(Some)
            .map_err(|problem| ConfigError::Invalid { key, problem }),
    }
}

/// How long a run may go without progress before `/healthz` fails and the watchdog stops: see
/// [`schedule::stuck_after`]. Uses the production retry budget and the longer of the two
/// request timeouts.
pub fn stuck_limit(config: &Config) -> Duration {
    schedule::stuck_after(
        RetryPolicy::default().max_elapsed,
        config.okta.timeout.max(config.postman.timeout),
    )
}

/// Runs the daemon with everything built; returns when `cancel` fires and the scheduler has
/// stopped. Tests call this directly (shutdown is a parameter, not a signal). Reads the
/// `/status` token from the config (an unreadable one is an `InvalidInput` error).
pub async fn run_with(
    engine: Arc<Engine>,
    listener: Option<tokio::net::TcpListener>,
    cancel: CancellationToken,
    state: Arc<DaemonState>,
) -> std::io::Result<()> {
    let token = load_status_token(&engine.config)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let runner = engine_runner(Arc::clone(&engine));
    run_with_runner(engine, runner, token, listener, cancel, state).await
}

/// [`run_with`] with the run itself as a parameter (tests inject a run that panics) and the
/// `/status` token already read.
pub async fn run_with_runner(
    engine: Arc<Engine>,
    runner: Runner,
    status_token: Option<StatusToken>,
    listener: Option<tokio::net::TcpListener>,
    cancel: CancellationToken,
    state: Arc<DaemonState>,
) -> std::io::Result<()> {
    // The last success survives restarts: readiness does not flap after a deploy (readiness
    // does not trust one that lies in the future, see `http::readiness`).
    if let Ok(Some(t)) = engine.store.call(|s| s.last_success()).await {
        *state.last_success.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
    engine.refresh_gauges().await;
    state.beat();
    let limits = SchedulerLimits {
        stop_grace: STOP_GRACE,
        liveness_window: LIVENESS_WINDOW,
        stuck_after: stuck_limit(&engine.config),
    };
    // Issue 14: the event worker (System Log polling, the hook's queue) beside the scheduler.
    let (hook, events_worker) = start_events(&engine, &state, &cancel)?;
    let server = match listener {
        Some(l) => {
            let app = AppState {
                daemon: Arc::clone(&state),
                metrics: Arc::clone(&engine.metrics),
                store: engine.store.clone(),
                stale_after: engine.config.sync.stale_after,
                liveness_window: limits.liveness_window,
                stuck_after: limits.stuck_after,
                status_token,
                hook: hook.clone(),
            };
            let c = cancel.clone();
            Some(tokio::spawn(http::serve(l, app, c)))
        }
        None => None,
    };
    crate::telemetry::notify_ready();
    scheduler(engine, runner, state, cancel.clone(), limits).await;
    crate::telemetry::notify_stopping();
    cancel.cancel();
    if let Some(w) = events_worker {
        if tokio::time::timeout(STOP_GRACE, w).await.is_err() {
            tracing::warn!(
                "the event worker did not stop in time; its queue is kept for the next start"
            );
        }
    }
    if let Some(s) = server {
        match s.await {
            Ok(r) => r?,
            Err(e) => tracing::warn!(error = %e, "the HTTP server task ended abnormally"),
        }
    }
    Ok(())
}

/// Reads the Event Hook secret (`[events] hook_secret_file`, else `OKTA_EVENT_HOOK_SECRET`, else
/// the systemd credential `okta-event-hook-secret`).
pub fn load_hook_secret(config: &Config) -> Result<crate::events::hook::HookSecret, ConfigError> {
    let key = "events.hook_secret_file";
    let secret = config
        .events
        .hook_secret
        .load(key, "the Okta Event Hook secret")?;
    crate::events::hook::HookSecret::new(secret)
        .map_err(|problem| ConfigError::Invalid { key, problem })
}

type EventsStart = (
    Option<Arc<crate::events::hook::HookState>>,
    Option<tokio::task::JoinHandle<()>>,
);

/// Starts the event worker when `[events]` asks for it, and builds the hook's state.
fn start_events(
    engine: &Arc<Engine>,
    state: &Arc<DaemonState>,
    cancel: &CancellationToken,
) -> std::io::Result<EventsStart> {
    let cfg = &engine.config.events;
    if !cfg.enabled() {
        return Ok((None, None));
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let hook = if cfg.hook {
        let secret = load_hook_secret(&engine.config)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Some(Arc::new(crate::events::hook::HookState {
            secret,
            store: engine.store.clone(),
            metrics: Arc::clone(&engine.metrics),
            wake: Arc::clone(&wake),
            app_id: engine.okta.app_id().to_string(),
        }))
    } else {
        None
    };
    tracing::info!(
        system_log = cfg.system_log,
        poll_interval_seconds = cfg.poll_interval.as_secs_f64(),
        hook = cfg.hook,
        "near-real-time sync on"
    );
    let worker = tokio::spawn(crate::events::worker(
        Arc::clone(engine),
        Arc::clone(state),
        wake,
        cancel.clone(),
    ));
    Ok((hook, Some(worker)))
}
