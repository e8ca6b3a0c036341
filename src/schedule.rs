//! The daemon's scheduler: a first run at startup, then one run per cron tick (plus optional
//! jitter), never two at once (a tick that finds a run still active is skipped and logged), a
//! full run every `full_every`, and a clean stop on cancellation. Transient failures never end
//! the loop: a failed run is recorded and the next tick tries again. Timing decisions are pure
//! functions ([`next_run`], [`needs_full`]) so they are tested without clocks.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Outcome, RunOptions, RunReport};

/// Shared between the scheduler and the HTTP endpoints.
#[derive(Default)]
pub struct DaemonState {
    /// Unix seconds of the scheduler loop's last heartbeat (liveness).
    pub heartbeat: AtomicI64,
    pub running: AtomicBool,
    pub skipped_ticks: AtomicI64,
    /// End of the last run whose outcome was `ok`.
    pub last_success: Mutex<Option<DateTime<Utc>>>,
    pub last_report: Mutex<Option<RunReport>>,
}

impl DaemonState {
    pub fn beat(&self) {
        self.heartbeat
            .store(Utc::now().timestamp(), Ordering::Relaxed);
    }
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
    Some(tick + chrono::Duration::from_std(extra).unwrap_or_default())
}

/// Whether the run starting at `now` must be a full run.
pub fn needs_full(
    last_full: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    full_every: Duration,
) -> bool {
    match last_full {
        None => true,
        Some(t) => (now - t).to_std().map(|d| d >= full_every).unwrap_or(false),
    }
}

/// Runs until `cancel` fires. Waits for an in-flight run to stop (it stops between operations)
/// for at most `stop_grace` after cancellation.
pub async fn scheduler(
    engine: Arc<Engine>,
    state: Arc<DaemonState>,
    cancel: CancellationToken,
    stop_grace: Duration,
) {
    let schedule = match cron::Schedule::from_str(&engine.config.sync.schedule) {
        Ok(s) => s,
        Err(e) => {
            // The config validated the expression already; this cannot happen in practice.
            tracing::error!(error = %e, "invalid schedule");
            return;
        }
    };
    let jitter = engine.config.sync.jitter;
    let full_every = engine.config.sync.full_every;
    let mut in_flight: Option<tokio::task::JoinHandle<()>> = None;
    let mut next = Utc::now(); // the first run starts at startup
    loop {
        state.beat();
        let now = Utc::now();
        if now >= next {
            if state.running.load(Ordering::SeqCst) {
                state.skipped_ticks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("the previous run is still going: skipping this scheduled run");
            } else {
                let last_full = crate::apply::with_store(&engine.store, |s| s.last_full_run())
                    .await
                    .unwrap_or(None);
                let opts = RunOptions {
                    full: needs_full(last_full, now, full_every),
                    ..RunOptions::default()
                };
                state.running.store(true, Ordering::SeqCst);
                let (engine, state2, cancel2) =
                    (Arc::clone(&engine), Arc::clone(&state), cancel.clone());
                in_flight = Some(tokio::spawn(async move {
                    let report = engine.run(&opts, &cancel2, None).await;
                    if report.outcome == Outcome::Ok {
                        *state2
                            .last_success
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(report.finished_at);
                    }
                    *state2.last_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
                    state2.running.store(false, Ordering::SeqCst);
                }));
            }
            let fraction = rand::thread_rng().gen::<f64>();
            next = match next_run(&schedule, Utc::now(), jitter, fraction) {
                Some(t) => t,
                None => {
                    tracing::warn!("the schedule has no future run; the daemon idles");
                    DateTime::<Utc>::MAX_UTC
                }
            };
            tracing::debug!(next = %next, "next run scheduled");
        }
        // Sleep until the next tick, waking regularly for the liveness heartbeat.
        let wait = (next - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(5));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some(handle) = in_flight {
        if !handle.is_finished() {
            tracing::info!("waiting for the run in flight to stop between operations");
        }
        if tokio::time::timeout(stop_grace, handle).await.is_err() {
            tracing::warn!("the run in flight did not stop in time; abandoning it (the journal resolves it next run)");
        }
    }
}

#[cfg(test)]
mod tests {
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
}
