//! Logging setup: `tracing` to stderr (stdout is reserved for command output), pretty on a
//! terminal, JSON for systemd/Kubernetes. `RUST_LOG` overrides the configured level. Also the
//! daemon's notifications to systemd (`sd_notify`: READY, WATCHDOG, STOPPING), which are no-ops
//! when `NOTIFY_SOCKET` is unset (a terminal, Kubernetes, tests).
//!
//! One hook for a progress display on stderr (`cmd::progress`), which must share the terminal
//! with the log: while a bar is registered ([`set_progress_bar`]) every log line is written with
//! the bar lifted, so neither garbles the other. This module must not draw anything itself.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The level applies to the log only (a per-layer filter): the plan size reaches the progress
    // display at any level.
    let log = tracing_subscriber::fmt::layer().with_writer(Stderr);
    let log = match format {
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => log.with_target(false).compact().with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(log).try_init();
}

/// Tells systemd (`Type=notify`) that the daemon has started: the store is open and the HTTP
/// endpoints are listening. See <https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html>
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

// ---------------------------------------------------------------------------------------------
// Progress hooks.

/// The bar on stderr, if one is shown; log lines are written with it lifted.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Registers (or, with `None`, removes) the bar log lines must not garble.
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = bar;
}

/// stderr, with the progress bar (if any) lifted while a line is written.
#[derive(Clone, Copy)]
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match bar {
            // The formatter writes each event in one call, so a line is never split around a
            // redraw.
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf).map(|()| buf.len())),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
