//! Progress of a run's writes, fed by the engine's per-operation callback
//! ([`crate::sync::Progress`]). On a terminal: an `indicatif` bar on stderr with a rate and an
//! ETA. Not on a terminal (a pipe, a log file, systemd): `indicatif` draws nothing, so no
//! carriage-return frames ever reach a file, and a long `reconcile` instead logs a progress line
//! (done/total, rate, ETA) every [`LOG_EVERY`] or every [`LOG_STEP_PERCENT`] %.
//!
//! This module only displays: it must not change what a run does or how long it takes.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::sync::users::plan::Operation;
use crate::sync::{OpStatus, Progress, ProgressSink};

/// Off a terminal, a progress line at least this often while operations complete...
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// ...and whenever another this-many percent of the plan is done.
pub const LOG_STEP_PERCENT: u64 = 5;

/// A plan smaller than this is over before a progress line would help; none are logged.
const LOG_MIN_OPERATIONS: u64 = 100;

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  [{bar:30}] {pos}/{len} operations, {rate}, {elapsed} elapsed, ETA {eta}",
    )
    // The template is a constant; a mistake in it shows as the default style, not a failure.
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    // Per minute: the unit of Postman's write limit (180/min).
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/min", state.per_sec() * 60.0);
        },
    )
    .progress_chars("#>.")
}

/// The demo's bar: drawn on a terminal, hidden otherwise (the demo logs only warnings).
pub struct DemoBar {
    bar: ProgressBar,
}

/// A bar for the demo's first reconcile, sized by its dry run.
pub fn demo_bar(total: usize) -> DemoBar {
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(bar_style());
    DemoBar { bar }
}

impl DemoBar {
    pub fn callback(&self) -> Progress {
        let bar = self.bar.clone();
        Arc::new(move |_: &Operation, _: &OpStatus| bar.inc(1))
    }

    /// Leaves the last frame on the terminal (the demo's story reads on from it), on a line of
    /// its own.
    pub fn finish(self) {
        self.bar.finish();
        if !self.bar.is_hidden() {
            eprintln!();
        }
    }
}

/// The progress of one `reconcile` run. Its size comes from the engine's
/// [`ProgressSink::planned`]: until the plan is known, nothing is drawn or logged.
pub struct RunProgress {
    bar: Option<ProgressBar>,
    state: Arc<LogState>,
}

struct LogState {
    started: Mutex<Option<Instant>>,
    total: AtomicU64,
    done: AtomicU64,
    /// When the last line was logged, and at what percentage step.
    last: Mutex<(Instant, u64)>,
}

impl RunProgress {
    /// Starts watching a run: a bar when stderr is a terminal, progress lines otherwise.
    pub fn start() -> Self {
        let state = Arc::new(LogState {
            started: Mutex::new(None),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            last: Mutex::new((Instant::now(), 0)),
        });
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            // Hidden until the plan is known: the reads before it log their own lines.
            bar.set_style(bar_style());
            crate::telemetry::set_progress_bar(Some(bar.clone()));
            bar
        });
        Self { bar, state }
    }

    /// What the engine reports to.
    pub fn sink(&self) -> Progress {
        Arc::new(RunSink {
            bar: self.bar.clone(),
            state: Arc::clone(&self.state),
        })
    }

    /// Removes the bar (the report follows on stdout) and the hooks.
    pub fn finish(self) {
        crate::telemetry::set_progress_bar(None);
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

struct RunSink {
    bar: Option<ProgressBar>,
    state: Arc<LogState>,
}

impl ProgressSink for RunSink {
    fn planned(&self, total: usize) {
        let total = total as u64;
        self.state.total.store(total, Ordering::Relaxed);
        *self
            .state
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.reset_eta();
        }
    }

    fn done(&self, _: &Operation, _: &OpStatus) {
        let done = self.state.done.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => self.state.maybe_log(done, Instant::now()),
        }
    }
}

impl LogState {
    fn maybe_log(&self, done: u64, now: Instant) {
        let total = self.total.load(Ordering::Relaxed);
        let Some(started) = *self.started.lock().unwrap_or_else(PoisonError::into_inner) else {
            return;
        };
        if total < LOG_MIN_OPERATIONS {
            return;
        }
        let step = done.min(total) * 100 / total / LOG_STEP_PERCENT;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let due = step > last.1 || now.duration_since(last.0) >= LOG_EVERY;
        if !due {
            return;
        }
        *last = (now, step);
        drop(last);
        let line = progress_line(done, total, now.duration_since(started));
        tracing::info!(
            done,
            total,
            per_minute = line.per_minute,
            eta_seconds = line.eta.map(|d| d.as_secs()),
            "progress: {done}/{total} operations, {:.0}/min, ETA {}",
            line.per_minute,
            line.eta
                .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
                .unwrap_or_else(|| "unknown".into()),
        );
    }
}

/// The numbers of one progress line: rate so far, and the time left at that rate.
#[derive(Debug, PartialEq)]
struct Line {
    per_minute: f64,
    eta: Option<Duration>,
}

fn progress_line(done: u64, total: u64, elapsed: Duration) -> Line {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return Line {
            per_minute: 0.0,
            eta: None,
        };
    }
    let per_second = done as f64 / secs;
    let left = total.saturating_sub(done) as f64;
    Line {
        per_minute: per_second * 60.0,
        eta: Some(Duration::from_secs_f64(left / per_second)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_the_work_left_at_the_rate_so_far() {
        // 180 writes a minute, Postman's limit: 900 of 3600 done after 5 minutes.
        let l = progress_line(900, 3600, Duration::from_secs(300));
        assert_eq!(l.per_minute, 180.0);
        assert_eq!(l.eta, Some(Duration::from_secs(900)));
        assert_eq!(progress_line(0, 10, Duration::from_secs(1)).eta, None);
    }

    #[test]
    fn off_a_terminal_a_line_is_due_every_five_percent_or_thirty_seconds() {
        let t0 = Instant::now();
        let state = LogState {
            started: Mutex::new(Some(t0)),
            total: AtomicU64::new(1000),
            done: AtomicU64::new(0),
            last: Mutex::new((t0, 0)),
        };
        state.maybe_log(49, t0 + Duration::from_secs(1));
        assert_eq!(state.last.lock().expect("lock").1, 0, "4.9 % is not a step");
        state.maybe_log(50, t0 + Duration::from_secs(2));
        assert_eq!(
            *state.last.lock().expect("lock"),
            (t0 + Duration::from_secs(2), 1)
        );
        state.maybe_log(51, t0 + Duration::from_secs(33));
        assert_eq!(
            state.last.lock().expect("lock").0,
            t0 + Duration::from_secs(33),
            "30 s passed"
        );
    }
}
