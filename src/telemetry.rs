//! Logging setup: `tracing` to stderr (stdout is reserved for command output), pretty on a
//! terminal, JSON for systemd/Kubernetes. `RUST_LOG` overrides the configured level. Also the
//! daemon's notifications to systemd (`sd_notify`: READY, WATCHDOG, STOPPING), which are no-ops
//! when `NOTIFY_SOCKET` is unset (a terminal, Kubernetes, tests).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Pretty => builder.with_target(false).compact().try_init(),
    };
}

/// Tells systemd (`Type=notify`) that the daemon has started: the store is open and the HTTP
/// endpoints are listening. See https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
pub fn notify_ready() {
    notify(sd_notify::NotifyState::Ready);
}

/// The watchdog keep-alive (`WatchdogSec=`). The scheduler sends it only while the daemon is
/// healthy, so a stuck loop or run makes systemd restart the service.
pub fn notify_watchdog() {
    notify(sd_notify::NotifyState::Watchdog);
}

pub fn notify_stopping() {
    notify(sd_notify::NotifyState::Stopping);
}

fn notify(state: sd_notify::NotifyState<'_>) {
    // `false`: keep NOTIFY_SOCKET in the environment, the watchdog needs it for the whole run.
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::debug!(error = %e, "could not notify the service manager");
    }
}
