//! Logging setup: `tracing` to stderr (stdout is reserved for command output), pretty on a
//! terminal, JSON for systemd/Kubernetes. `RUST_LOG` overrides the configured level. Also the
//! daemon's notifications to systemd (`sd_notify`: READY, WATCHDOG, STOPPING), which are no-ops
//! when `NOTIFY_SOCKET` is unset (a terminal, Kubernetes, tests).
//!
//! Two hooks for a progress display on stderr (`cmd::progress`), which must share the terminal
//! with the log: while a bar is registered ([`set_progress_bar`]) every log line is written with
//! the bar lifted, so neither garbles the other; and the size of a run's plan, which the engine
//! logs as its `planned` event, is handed to [`on_plan_size`]'s callback so the bar knows its
//! length. This module must not draw anything itself.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use indicatif::ProgressBar;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
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
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(PlanSize.with_filter(filter_fn(|m| {
            m.is_event() && m.target().starts_with(PLANNED_TARGET)
        })))
        .try_init();
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

// ---------------------------------------------------------------------------------------------
// Progress hooks.

/// The bar on stderr, if one is shown; log lines are written with it lifted.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

type PlanSizeSink = Arc<dyn Fn(u64) + Send + Sync>;
static PLAN_SIZE: Mutex<Option<PlanSizeSink>> = Mutex::new(None);

/// Registers (or, with `None`, removes) the bar log lines must not garble.
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = bar;
}

/// Registers (or removes) the callback that learns how many user operations a run planned.
pub fn on_plan_size(sink: Option<PlanSizeSink>) {
    *PLAN_SIZE.lock().unwrap_or_else(PoisonError::into_inner) = sink;
}

/// Where the engine's `planned` event (message `planned`, one count field per operation kind)
/// comes from: any module of this crate, so the event can move with the engine's code.
const PLANNED_TARGET: &str = "okta_postman_sync::";
/// The fields of the `planned` event that are user operations (each calls the progress
/// callback once when carried out); `unchanged`, `withheld` and `deferred` are not.
const OPERATION_FIELDS: [&str; 5] = ["create", "update", "deactivate", "reactivate", "adopt"];

/// Sums the operation counts of the engine's `planned` event.
struct PlanSize;

impl<S: tracing::Subscriber> Layer<S> for PlanSize {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let sink = PLAN_SIZE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(sink) = sink else { return };
        let mut v = PlannedVisitor::default();
        event.record(&mut v);
        if v.is_planned {
            sink(v.operations);
        }
    }
}

#[derive(Default)]
struct PlannedVisitor {
    is_planned: bool,
    operations: u64,
}

impl Visit for PlannedVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if OPERATION_FIELDS.contains(&field.name()) {
            self.operations += value;
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && value == "planned" {
            self.is_planned = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "planned" {
            self.is_planned = true;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_size_is_the_sum_of_the_planned_operation_counts() {
        let seen = Arc::new(Mutex::new(None));
        let sink_seen = Arc::clone(&seen);
        on_plan_size(Some(Arc::new(move |n| {
            *sink_seen.lock().expect("lock") = Some(n);
        })));
        let subscriber = tracing_subscriber::registry().with(PlanSize);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "okta_postman_sync::engine", create = 3usize, update = 1usize,
                deactivate = 2usize, reactivate = 0usize, adopt = 4usize, unchanged = 50usize,
                withheld = 7usize, deferred = 1usize, "planned");
            tracing::info!(target: "okta_postman_sync::engine", create = 99usize, "plan");
        });
        on_plan_size(None);
        assert_eq!(*seen.lock().expect("lock"), Some(10));
    }
}
