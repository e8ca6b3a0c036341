//! `run`: the long-running daemon. Loads the config (exit 2 when it is bad), takes the
//! single-writer lock on the state (exit 1 when another process holds it), serves the HTTP
//! endpoints when `[server] listen` is set, and runs the scheduler until SIGTERM/SIGINT; then it
//! stops starting new work, lets the run in flight stop between operations, and exits 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{cancel_on_signals, prepare_engine, EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
use crate::engine::Engine;
use crate::http::AppState;
use crate::schedule::{scheduler, DaemonState};

/// How long a stopping daemon waits for the run in flight (Kubernetes allows 30 s in all).
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// Runs the daemon with everything built; returns when `cancel` fires and the scheduler has
/// stopped. Tests call this directly (shutdown is a parameter, not a signal).
pub async fn run_with(
    engine: Arc<Engine>,
    listener: Option<tokio::net::TcpListener>,
    cancel: CancellationToken,
    state: Arc<DaemonState>,
) -> std::io::Result<()> {
    // The last success survives restarts: readiness does not flap after a deploy.
    if let Ok(Some(t)) = crate::apply::with_store(&engine.store, |s| s.last_success()).await {
        *state.last_success.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
    engine.refresh_gauges().await;
    state.beat();
    let server = match listener {
        Some(l) => {
            let app = AppState {
                daemon: Arc::clone(&state),
                metrics: Arc::clone(&engine.metrics),
                store: Arc::clone(&engine.store),
                stale_after: engine.config.sync.stale_after,
                liveness_window: Duration::from_secs(60),
            };
            let c = cancel.clone();
            Some(tokio::spawn(crate::http::serve(l, app, c)))
        }
        None => None,
    };
    scheduler(engine, state, cancel.clone(), STOP_GRACE).await;
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
        "daemon started"
    );
    match run_with(engine, listener, cancel, Arc::new(DaemonState::default())).await {
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
