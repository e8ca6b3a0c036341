//! `run`: the long-running daemon. Loads the config (exit 2 when it is bad), takes the
//! single-writer lock on the state (exit 1 when another process holds it), reads the optional
//! `/status` token and binds `[server] listen` (exit 2 when either fails), then hands over to
//! [`crate::daemon::run_with_runner`] until SIGTERM/SIGINT, and exits 0. The daemon's behaviour
//! (schedule, limits, watchdog, endpoints) lives in [`crate::daemon`], not here.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{cancel_on_signals, load_config, CliError};
use crate::bootstrap;
use crate::daemon::schedule::{engine_runner, DaemonState};
use crate::daemon::{load_status_token, run_with_runner};
use crate::exit::Exit;

pub async fn run(config_path: &Path) -> Result<Exit, CliError> {
    let config = load_config(config_path)?;
    // `_lock`: held until the daemon returns.
    let bootstrap::App {
        config,
        engine,
        lock: _lock,
    } = bootstrap::assemble_daemon(config)?;
    let token = load_status_token(&config)?;
    // Read once here so a missing or weak Event Hook secret is a config error at startup.
    if config.events.hook {
        crate::daemon::load_hook_secret(&config)?;
    }
    if token.is_none() && config.listen.is_some() {
        tracing::info!(
            "no /status token configured ([server] status_token_file): /status shows counts only"
        );
    }
    let engine = Arc::new(engine);
    let listener = match config.listen {
        None => None,
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            CliError::config(format!(
                "cannot listen on {addr} (config key `server.listen`): {e}"
            ))
        })?),
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
            Ok(Exit::Ok)
        }
        Err(e) => {
            // Logged, not printed: under systemd or Kubernetes the log is where it is read.
            tracing::error!(error = %e, "HTTP server failed");
            Ok(Exit::Failed)
        }
    }
}
