//! The daemon's scheduler: a first run at startup, then one run per cron tick (plus optional
//! jitter), never two at once (a tick that finds a run still active is skipped and logged), a
//! full run every `full_every`, and a clean stop on cancellation. Transient failures never end
//! the loop: a failed run is recorded and the next tick tries again, and a run that panics is
//! recorded as failed by the supervisor ([`spawn_supervised`]) without stopping the schedule.
//!
//! Time: the wall clock decides *when* a cron tick is (that is what cron means), but every age
//! that gates liveness, readiness or full runs inside the process is measured on the monotonic
//! clock ([`Instant`]), so a wall clock that jumps ahead and back cannot make a stale daemon look
//! fresh, stop full runs, or stop the schedule. Timing decisions are pure functions ([`next_run`],
//! [`due`], [`needs_full`], [`health`], [`stuck_after`]) so they are tested without clocks.
//!
//! It must not decide anything about a run's content: it only starts runs and watches them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::StoreHandle;
use crate::sync::users::plan::Operation;
use crate::sync::OpStatus;
use crate::sync::{Engine, Outcome, Progress, RunOptions, RunReport};

/// A run with no progress for this long is stuck, whatever the timeouts say (see [`stuck_after`]).
pub const STUCK_FLOOR: Duration = Duration::from_secs(30 * 60);

/// Shared between the scheduler and the HTTP endpoints.
pub struct DaemonState {
    /// Unix seconds of the scheduler loop's last heartbeat (for display; liveness uses the
    /// monotonic stamp below).
    pub heartbeat: AtomicI64,
    pub running: AtomicBool,
    /// Set while the event worker (issue 14) holds `running` for a targeted reconcile: short
    /// work, so a tick that finds it waits for it instead of being skipped.
    pub event_work: AtomicBool,
    pub skipped_ticks: AtomicI64,
    /// End of the last run whose outcome was `ok` (wall clock, for display; loaded from the
    /// store at startup). Readiness does not trust it blindly: see [`DaemonState::last_success_age`].
    pub last_success: Mutex<Option<DateTime<Utc>>>,
    /// Origin of the monotonic stamps below (milliseconds since `origin`, plus one; 0 = never).
    origin: Instant,
    beat_at: AtomicU64,
    progress_at: AtomicU64,
    success_at: AtomicU64,
    full_at: AtomicU64,
}

impl Default for DaemonState {
    fn default() -> Self {
        Self {
            heartbeat: AtomicI64::new(0),
            running: AtomicBool::new(false),
            event_work: AtomicBool::new(false),
            skipped_ticks: AtomicI64::new(0),
            last_success: Mutex::new(None),
            origin: Instant::now(),
            beat_at: AtomicU64::new(0),
            progress_at: AtomicU64::new(0),
            success_at: AtomicU64::new(0),
            full_at: AtomicU64::new(0),
        }
    }
}

/// What readiness knows about the last successful run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LastSuccess {
    Never,
    /// A run of this process succeeded this long ago (monotonic clock: immune to clock jumps).
    ThisProcess(Duration),
    /// Only the store knows, as a wall-clock time written by an earlier process (or before a
    /// clock jump). It may lie in the future.
    Recorded(DateTime<Utc>),
}

impl DaemonState {
    fn stamp(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Time since a stamp, or `None` for "never".
    fn age(&self, stamp: &AtomicU64) -> Option<Duration> {
        match stamp.load(Ordering::Relaxed) {
            0 => None,
            s => Some(Duration::from_millis(self.stamp().saturating_sub(s))),
        }
    }

    pub fn beat(&self) {
        self.heartbeat
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        self.beat_at.store(self.stamp(), Ordering::Relaxed);
    }

    /// The run in flight made progress (it started, an operation or an HTTP exchange completed).
    pub fn progressed(&self) {
        self.progress_at.store(self.stamp(), Ordering::Relaxed);
    }

    /// Records a finished run of this process.
    fn finished(&self, report: &RunReport) {
        if report.outcome == Outcome::Ok {
            *self.last_success.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.finished_at);
            self.success_at.store(self.stamp(), Ordering::Relaxed);
        }
        // The store's rule for "last full run" (`Store::last_full_run`): full and Postman read.
        if report.full && matches!(report.outcome, Outcome::Ok | Outcome::Partial) {
            self.full_at.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// The last success as readiness should judge it.
    pub fn last_success_age(&self) -> LastSuccess {
        if let Some(age) = self.age(&self.success_at) {
            return LastSuccess::ThisProcess(age);
        }
        match *self.last_success.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(t) => LastSuccess::Recorded(t),
            None => LastSuccess::Never,
        }
    }

    /// Whether the daemon is alive by the rule of [`health`]: the loop beats and no run is stuck.
    pub fn health(&self, liveness_window: Duration, stuck_after: Duration) -> Result<(), String> {
        let quiet = if self.running.load(Ordering::SeqCst) {
            self.age(&self.progress_at)
        } else {
            None
        };
        health(self.age(&self.beat_at), liveness_window, quiet, stuck_after)
    }
}

/// The liveness rule, shared by `/healthz` and the systemd watchdog. Unhealthy when the
/// scheduler loop has not beaten within `liveness_window` (it beats at least every 5 s), or when
/// a run is in flight and has made no progress for `stuck_after` (`run_quiet_for` is `None` when
/// no run is in flight). The messages carry durations only, never personal data.
pub fn health(
    heartbeat_age: Option<Duration>,
    liveness_window: Duration,
    run_quiet_for: Option<Duration>,
    stuck_after: Duration,
) -> Result<(), String> {
    match heartbeat_age {
        None => return Err("the scheduler loop has not started".to_string()),
        Some(age) if age > liveness_window => {
            return Err(format!(
                "the scheduler loop has not run for {} s (limit {} s)",
                age.as_secs(),
                liveness_window.as_secs()
            ))
        }
        Some(_) => {}
    }
    match run_quiet_for {
        Some(quiet) if quiet > stuck_after => Err(format!(
            "the run in flight has made no progress for {} s (limit {} s): it is stuck",
            quiet.as_secs(),
            stuck_after.as_secs()
        )),
        _ => Ok(()),
    }
}

/// How long a run may go without progress before it counts as stuck: three times the longest
/// single step, at least [`STUCK_FLOOR`]. The longest step is one request that exhausts its
/// retry budget (`retry_budget`, the retry policy's `max_elapsed`, which includes its waits) and
/// then one more attempt that runs into the request timeout. Progress is the run starting, an
/// operation completing, or any HTTP exchange with Okta or Postman completing, so a slow but
/// working run (long paging, rate-limit pacing) never looks stuck.
pub fn stuck_after(retry_budget: Duration, request_timeout: Duration) -> Duration {
    retry_budget
        .saturating_add(request_timeout)
        .saturating_mul(3)
        .max(STUCK_FLOOR)
}

/// The next time a run should start after `after`: the next cron tick plus `jitter * fraction`
/// (`fraction` in [0, 1), drawn by the caller).
pub fn next_run(
    schedule: &cron::Schedule,
    after: DateTime<Utc>,
    jitter: Duration,
    fraction: f64,
) -> Option<DateTime<Utc>> {
    let tick = schedule.after(&after).next()?;
    let extra = jitter.mul_f64(fraction.clamp(0.0, 1.0));
    Some(crate::limits::time_after(tick, extra))
}

/// Whether the scheduled run is due: at the cron time on the wall clock, or when the same wait
/// has passed on the monotonic clock. The second half keeps the schedule going when the wall
/// clock is set back (otherwise a clock that jumped a year ahead and came back would stop every
/// run for a year); the first keeps cron times exact while the clock behaves.
pub fn due(
    now: DateTime<Utc>,
    next: DateTime<Utc>,
    now_mono: Instant,
    next_mono: Option<Instant>,
) -> bool {
    now >= next || next_mono.is_some_and(|m| now_mono >= m)
}

/// Whether the run starting at `now` must be a full run, judged from the store's last full run.
/// A last full run recorded in the future (the clock was ahead then) proves nothing about now:
/// a full run is due.
pub fn needs_full(
    last_full: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    full_every: Duration,
) -> bool {
    match last_full {
        None => true,
        Some(t) => match (now - t).to_std() {
            Ok(age) => age >= full_every,
            Err(_) => true,
        },
    }
}

/// One run, as the scheduler starts it. Production runs [`Engine::run`] ([`engine_runner`]);
/// tests may inject a run that panics.
pub type Runner = Arc<
    dyn Fn(RunOptions, CancellationToken, Progress) -> BoxFuture<'static, RunReport> + Send + Sync,
>;

/// The production runner: [`Engine::run`] with the scheduler's progress callback.
pub fn engine_runner(engine: Arc<Engine>) -> Runner {
    Arc::new(move |opts, cancel, progress| {
        let engine = Arc::clone(&engine);
        Box::pin(async move { engine.run(&opts, &cancel, Some(progress)).await })
    })
}

/// The scheduler's fixed parameters.
#[derive(Clone, Debug)]
pub struct SchedulerLimits {
    /// How long a stopping scheduler waits for the run in flight.
    pub stop_grace: Duration,
    /// See [`health`].
    pub liveness_window: Duration,
    /// See [`stuck_after`].
    pub stuck_after: Duration,
}

/// The text of a panic payload (`panic!` with a literal or a format string).
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(no message)".to_string(),
        },
    }
}

/// Starts one run in its own task and supervises it: whatever happens to the run (it returns,
/// panics, or its task is cancelled) the supervisor clears `running`. A run that did not return
/// is recorded as failed in the store (every run row still unfinished: there is only one writer
/// and no other run in flight), counted in `okta_postman_sync_run_panics_total`, and logged; the
/// schedule goes on.
pub fn spawn_supervised(
    runner: &Runner,
    opts: RunOptions,
    cancel: CancellationToken,
    state: Arc<DaemonState>,
    store: StoreHandle,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    state.running.store(true, Ordering::SeqCst);
    state.progressed();
    let progress: Progress = {
        let state = Arc::clone(&state);
        Arc::new(move |_: &Operation, _: &OpStatus| state.progressed())
    };
    let run = tokio::spawn(runner(opts, cancel, progress));
    tokio::spawn(async move {
        match run.await {
            Ok(report) => {
                state.finished(&report);
            }
            Err(e) => {
                let why = if e.is_panic() {
                    format!("the run panicked: {}", panic_text(e.into_panic()))
                } else {
                    "the run's task was cancelled before it finished".to_string()
                };
                tracing::error!(
                    error = %why,
                    "the run ended abnormally; it is recorded as failed and the schedule goes on \
                     (please report this as a bug, with the log around it)"
                );
                metrics.run_panicked();
                let reason = why.clone();
                match store
                    .call(move |s| s.fail_unfinished_runs(Utc::now(), &reason))
                    .await
                {
                    Ok(_) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not record the abnormally ended run as failed; `status` shows it \
                         as unfinished until the next run"
                    ),
                }
            }
        }
        state.running.store(false, Ordering::SeqCst);
    })
}

/// Runs until `cancel` fires. Waits for an in-flight run to stop (it stops between operations)
/// for at most `limits.stop_grace` after cancellation. Sends the systemd watchdog keep-alive on
/// every wake-up (at least every 5 s) while [`DaemonState::health`] holds, so systemd restarts a
/// daemon whose loop or run is stuck.
pub async fn scheduler(
    engine: Arc<Engine>,
    runner: Runner,
    state: Arc<DaemonState>,
    cancel: CancellationToken,
    limits: SchedulerLimits,
) {
    // Parsed once, by the config.
    let schedule = engine.config.sync.schedule.clone();
    let jitter = engine.config.sync.jitter;
    let full_every = engine.config.sync.full_every;
    let mut in_flight: Option<tokio::task::JoinHandle<()>> = None;
    // The first run starts at startup.
    let mut next = Utc::now();
    let mut next_mono = Some(Instant::now());
    let mut exchanges = engine.metrics.exchanges();
    let mut unhealthy = false;
    loop {
        state.beat();
        // Any completed HTTP exchange with Okta or Postman is progress of the run in flight.
        let seen = engine.metrics.exchanges();
        if seen != exchanges {
            exchanges = seen;
            state.progressed();
        }
        match state.health(limits.liveness_window, limits.stuck_after) {
            Ok(()) => {
                crate::telemetry::notify_watchdog();
                if unhealthy {
                    tracing::info!("the daemon is healthy again");
                }
                unhealthy = false;
            }
            Err(why) => {
                if !unhealthy {
                    tracing::error!(
                        problem = %why,
                        "the daemon is unhealthy: /healthz fails and the systemd watchdog is no \
                         longer fed, so the service manager restarts it"
                    );
                }
                unhealthy = true;
            }
        }
        let now = Utc::now();
        if due(now, next, Instant::now(), next_mono) {
            // Taken here, not only in `spawn_supervised`: the event worker takes it too.
            let taken = state
                .running
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if !taken && state.event_work.load(Ordering::SeqCst) {
                // A targeted reconcile is short: run right after it rather than skip the tick.
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            if !taken {
                state.skipped_ticks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("the previous run is still going: skipping this scheduled run");
            } else {
                let full = match state.age(&state.full_at) {
                    // A full run of this process: its age on the monotonic clock is the truth.
                    Some(age) => age >= full_every,
                    None => {
                        let last_full = engine
                            .store
                            .call(|s| s.last_full_run())
                            .await
                            .unwrap_or(None);
                        needs_full(last_full, now, full_every)
                    }
                };
                let opts = RunOptions {
                    full,
                    trigger: crate::store::Trigger::schedule(),
                    // An outage fails the run after about one period of retrying, in all: the
                    // next tick tries again instead of being skipped behind it.
                    retry_budget: Some(crate::bootstrap::daemon_retry_budget(&schedule, now)),
                    ..RunOptions::default()
                };
                in_flight = Some(spawn_supervised(
                    &runner,
                    opts,
                    cancel.clone(),
                    Arc::clone(&state),
                    engine.store.clone(),
                    Arc::clone(&engine.metrics),
                ));
            }
            let fraction = rand::thread_rng().gen::<f64>();
            let after = Utc::now();
            next = match next_run(&schedule, after, jitter, fraction) {
                Some(t) => t,
                None => {
                    tracing::warn!("the schedule has no future run; the daemon idles");
                    DateTime::<Utc>::MAX_UTC
                }
            };
            next_mono = (next - after)
                .to_std()
                .ok()
                .and_then(|d| Instant::now().checked_add(d));
            tracing::debug!(next = %next, "next run scheduled");
        }
        // Sleep until the next tick, waking regularly for the heartbeat and the watchdog.
        let mut wait = (next - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(5));
        if let Some(m) = next_mono {
            wait = wait.min(m.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(handle) = in_flight {
        if !handle.is_finished() {
            tracing::info!("waiting for the run in flight to stop between operations");
        }
        if tokio::time::timeout(limits.stop_grace, handle)
            .await
            .is_err()
        {
            tracing::warn!("the run in flight did not stop in time; abandoning it (the journal resolves it next run)");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn next_run_follows_the_cron_schedule_and_adds_jitter() {
        let s = cron::Schedule::from_str("0 */15 * * * *").expect("cron");
        assert_eq!(
            next_run(&s, t("2026-11-28T10:07:00Z"), Duration::ZERO, 0.0),
            Some(t("2026-11-28T10:15:00Z"))
        );
        assert_eq!(
            next_run(&s, t("2026-11-28T10:07:00Z"), Duration::from_secs(60), 0.5),
            Some(t("2026-11-28T10:15:30Z"))
        );
        // A 5-field crontab expression, normalised by the config.
        let five = crate::config::normalise_schedule("0 3 * * *").expect("5 fields");
        let s = cron::Schedule::from_str(&five).expect("cron");
        assert_eq!(
            next_run(&s, t("2026-11-28T10:07:00Z"), Duration::ZERO, 0.0),
            Some(t("2026-11-29T03:00:00Z"))
        );
    }

    #[test]
    fn absurd_jitter_saturates_instead_of_panicking() {
        let s = cron::Schedule::from_str("0 */15 * * * *").expect("cron");
        let far = next_run(
            &s,
            t("2026-11-28T10:07:00Z"),
            Duration::from_secs(u64::MAX),
            0.99,
        );
        assert!(far.is_some_and(|f| f > t("2026-11-28T10:15:00Z")));
    }

    #[test]
    fn a_full_run_is_due_first_and_then_every_full_every() {
        let day = Duration::from_secs(86400);
        assert!(needs_full(None, t("2026-11-28T10:00:00Z"), day));
        assert!(!needs_full(
            Some(t("2026-11-28T00:00:00Z")),
            t("2026-11-28T10:00:00Z"),
            day
        ));
        assert!(needs_full(
            Some(t("2026-11-27T09:00:00Z")),
            t("2026-11-28T10:00:00Z"),
            day
        ));
    }

    #[test]
    fn a_last_full_run_in_the_future_makes_a_full_run_due() {
        // The clock ran a year ahead during the last full run, then came back.
        let day = Duration::from_secs(86400);
        assert!(needs_full(
            Some(t("2027-11-28T10:00:00Z")),
            t("2026-11-28T10:00:00Z"),
            day
        ));
        assert!(needs_full(
            Some(DateTime::<Utc>::MAX_UTC),
            t("2026-11-28T10:00:00Z"),
            day
        ));
    }

    #[test]
    fn the_schedule_goes_on_when_the_wall_clock_is_set_back() {
        let start = Instant::now();
        let wait = Duration::from_secs(900);
        let next_mono = start.checked_add(wait);
        // Cron said 10:15; the clock was then set back a year. The wall clock says "not yet",
        // the monotonic clock says the 15 minutes have passed.
        let later = start + wait + Duration::from_secs(1);
        assert!(due(
            t("2025-11-28T10:16:00Z"),
            t("2026-11-28T10:15:00Z"),
            later,
            next_mono
        ));
        // Neither clock says it is time.
        assert!(!due(
            t("2026-11-28T10:10:00Z"),
            t("2026-11-28T10:15:00Z"),
            start,
            next_mono
        ));
        // The wall clock alone is enough (cron times stay exact while the clock behaves).
        assert!(due(
            t("2026-11-28T10:15:00Z"),
            t("2026-11-28T10:15:00Z"),
            start,
            next_mono
        ));
        // A schedule with no future tick never fires on the monotonic clock.
        assert!(!due(
            t("2026-11-28T10:15:00Z"),
            DateTime::<Utc>::MAX_UTC,
            later,
            None
        ));
    }

    #[test]
    fn health_fails_when_the_loop_stops_beating_or_a_run_makes_no_progress() {
        let window = Duration::from_secs(60);
        let stuck = Duration::from_secs(1800);
        let s = Duration::from_secs;
        assert!(health(Some(s(3)), window, None, stuck).is_ok());
        assert!(health(Some(s(3)), window, Some(s(1799)), stuck).is_ok());
        let e = health(Some(s(3)), window, Some(s(1801)), stuck).expect_err("stuck run");
        assert!(e.contains("no progress"), "{e}");
        let e = health(Some(s(61)), window, None, stuck).expect_err("stuck loop");
        assert!(e.contains("scheduler loop"), "{e}");
        assert!(health(None, window, None, stuck).is_err());
        // A long run that keeps progressing is healthy however long it has lasted: only the
        // time since its last progress counts.
        assert!(health(Some(s(1)), window, Some(s(5)), stuck).is_ok());
    }

    #[test]
    fn a_run_is_stuck_after_three_times_its_longest_step_and_never_sooner_than_the_floor() {
        let s = Duration::from_secs;
        // Defaults: 300 s retry budget + 30 s timeout = 330 s; 3 x 330 s < 30 min floor.
        assert_eq!(stuck_after(s(300), s(30)), STUCK_FLOOR);
        assert_eq!(stuck_after(s(1200), s(300)), s(4500));
        assert_eq!(stuck_after(Duration::MAX, s(30)), Duration::MAX);
    }

    #[test]
    fn daemon_state_health_uses_the_monotonic_heartbeat() {
        let st = DaemonState::default();
        let (w, k) = (Duration::from_secs(60), STUCK_FLOOR);
        assert!(st.health(w, k).is_err(), "no heartbeat yet");
        st.beat();
        assert!(st.health(w, k).is_ok());
        // The wall-clock heartbeat is only for display: setting it far in the past does not
        // make the daemon unhealthy.
        st.heartbeat.store(0, Ordering::Relaxed);
        assert!(st.health(w, k).is_ok());
        st.running.store(true, Ordering::SeqCst);
        st.progressed();
        assert!(st.health(w, k).is_ok());
    }

    #[test]
    fn a_recorded_success_is_used_until_this_process_has_its_own() {
        let st = DaemonState::default();
        assert_eq!(st.last_success_age(), LastSuccess::Never);
        let future = t("2030-01-01T00:00:00Z");
        *st.last_success.lock().expect("lock") = Some(future);
        assert_eq!(st.last_success_age(), LastSuccess::Recorded(future));
        let now = Utc::now();
        st.finished(&RunReport {
            run_id: "r1".into(),
            dry_run: false,
            full: false,
            outcome: Outcome::Ok,
            counts: Default::default(),
            operations: Vec::new(),
            withheld: Vec::new(),
            deferred: Vec::new(),
            left_alone: Vec::new(),
            refusal: None,
            unmanaged_members: None,
            skipped_okta_users: Vec::new(),
            errors: Vec::new(),
            started_at: now,
            finished_at: now,
            plan_id: None,
            plan_differences: None,
            saved_plan: None,
        });
        assert!(matches!(st.last_success_age(), LastSuccess::ThisProcess(_)));
    }
}
