//! `run`: the long-running daemon. Loads the config (exit 2 when it is bad), takes the
//! single-writer lock on the state (exit 1 when another process holds it), serves the HTTP
//! endpoints when `[server] listen` is set, tells systemd it is ready, and runs the scheduler
//! until SIGTERM/SIGINT; then it stops starting new work, lets the run in flight stop between
//! operations, and exits 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{cancel_on_signals, prepare_engine, EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::http::{AppState, StatusToken};
use crate::retry::RetryPolicy;
use crate::schedule::{engine_runner, scheduler, DaemonState, Runner, SchedulerLimits};

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
/// [`crate::schedule::stuck_after`]. Uses the production retry budget and the longer of the two
/// request timeouts.
pub fn stuck_limit(config: &Config) -> Duration {
    crate::schedule::stuck_after(
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
            };
            let c = cancel.clone();
            Some(tokio::spawn(crate::http::serve(l, app, c)))
        }
        None => None,
    };
    crate::telemetry::notify_ready();
    scheduler(engine, runner, state, cancel.clone(), limits).await;
    crate::telemetry::notify_stopping();
    cancel.cancel();
    if let Some(s) = server {
        match s.await {
            Ok(r) => r?,
            Err(e) => tracing::warn!(error = %e, "the HTTP server task ended abnormally"),
        }
    }
    Ok(())
}

pub async fn run_daemon(config_path: &Path) -> u8 {
    let (config, engine, _lock) = match prepare_engine(config_path, true) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let token = match load_status_token(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    if token.is_none() && config.listen.is_some() {
        tracing::info!(
            "no /status token configured ([server] status_token_file): /status shows counts only"
        );
    }
    let engine = Arc::new(engine);
    let listener = match config.listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: cannot listen on {addr} (config key `server.listen`): {e}");
                return EXIT_CONFIG;
            }
        },
    };
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    tracing::info!(
        schedule = %config.sync.schedule,
        listen = ?config.listen,
        state = %config.sync.state_path.display(),
        status_token = token.is_some(),
        "daemon started"
    );
    let runner = engine_runner(Arc::clone(&engine));
    let state = Arc::new(DaemonState::default());
    match run_with_runner(engine, runner, token, listener, cancel, state).await {
        Ok(()) => {
            tracing::info!("daemon stopped");
            EXIT_OK
        }
        Err(e) => {
            tracing::error!(error = %e, "HTTP server failed");
            EXIT_FAILED
        }
    }
}
