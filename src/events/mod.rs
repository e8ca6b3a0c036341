//! Near-real-time sync (issue 14): Okta events, from System Log polling and from the Event Hook
//! ([`hook`]), turned into hints — the users and groups to re-read — queued durably with the
//! cursor ([`crate::store::Store::events_take`]), and worked off by targeted reconciles
//! ([`crate::sync::Engine::run_targeted`]) under the daemon's one-writer rule.
//!
//! Events are hints, Okta is the truth: nothing here decides what happens in Postman. This
//! module owns which event types matter ([`EVENT_TYPES`]), the polling loop and the worker; it
//! must not plan, write to Postman, or apply anything outside the engine.

pub mod hook;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::daemon::schedule::DaemonState;
use crate::model::{OktaGroupId, OktaUserId};
use crate::okta::{LogCursor, LogEvent, OktaError};
use crate::store::{EventCause, EventWork, QueueKind, QueuedHint};
use crate::sync::targeted::Targets;
use crate::sync::{Engine, Outcome};

/// The event types that can change what Postman should hold (okta-api.md A7.2). Anything else
/// is ignored (counted in `events_ignored{reason="type"}`).
pub const EVENT_TYPES: &[&str] = &[
    // Direct assignment to the app: who is an app user, with which app profile and username.
    "application.user_membership.add",
    "application.user_membership.remove",
    "application.user_membership.update",
    "application.user_membership.change_username",
    "application.user_membership.revoke",
    "application.user_membership.deprovision",
    "application.user_membership.restore",
    // Group membership: a member of a group assigned to the app gains or loses it.
    "group.user_membership.add",
    "group.user_membership.remove",
    // A group assigned to or removed from the app: every member of it.
    "group.application_assignment.add",
    "group.application_assignment.remove",
    "group.application_assignment.update",
    // A deleted group: its members may lose the app (the next full run finds them if Okta no
    // longer lists the group's members).
    "group.lifecycle.delete",
    // User lifecycle: the Okta status decides active or inactive in Postman (A2.4).
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.unsuspend",
    "user.lifecycle.delete.initiated",
    // Profile: userName, given and family name come from the profile.
    "user.account.update_profile",
];

/// Rows one targeted reconcile works off (a burst of 1,000 changes is one or two runs).
const BATCH: usize = 2_000;
/// System Log pages one poll reads at most (1,000 events each) before it yields to the work.
const MAX_PAGES_PER_POLL: usize = 10;
/// A poll answered 403 (no `okta.logs.read`) is tried again this much later, in case the scope
/// is granted; meanwhile the schedule alone keeps Postman in step.
const DENIED_RETRY: Duration = Duration::from_secs(3600);
/// How often the worker looks again while work is queued but the writer is busy.
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// The least time one poll (with the client's retries) may take before it is dropped.
const POLL_BUDGET_FLOOR: Duration = Duration::from_secs(5);

/// Why an event causes no re-read (the `reason` label of `events_ignored`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    Type,
    Failed,
    OtherApp,
    NoTarget,
}

impl Ignored {
    pub fn label(self) -> &'static str {
        match self {
            Ignored::Type => "type",
            Ignored::Failed => "failed",
            Ignored::OtherApp => "other_app",
            Ignored::NoTarget => "no_target",
        }
    }
}

/// The users and groups one event names, or why it names none. Pure.
pub fn hints(ev: &LogEvent, app_id: &str) -> Result<Vec<(QueueKind, String)>, Ignored> {
    let t = ev.event_type.as_str();
    if !EVENT_TYPES.contains(&t) {
        return Err(Ignored::Type);
    }
    // A failed or denied action changed nothing.
    if ev.result.as_deref().is_some_and(|r| r != "SUCCESS") {
        return Err(Ignored::Failed);
    }
    // Assignment events name the app: another app's assignments are not ours.
    let about_apps =
        t.starts_with("application.") || t.starts_with("group.application_assignment.");
    if about_apps && !ev.app_targets.is_empty() && !ev.app_targets.iter().any(|a| a == app_id) {
        return Err(Ignored::OtherApp);
    }
    let out: Vec<(QueueKind, String)> =
        if t.starts_with("group.application_assignment.") || t == "group.lifecycle.delete" {
            ev.groups
                .iter()
                .map(|g| (QueueKind::Group, g.to_string()))
                .collect()
        } else {
            ev.users
                .iter()
                .map(|u| (QueueKind::User, u.to_string()))
                .collect()
        };
    if out.is_empty() {
        return Err(Ignored::NoTarget);
    }
    Ok(out)
}

/// Sorts events into what to queue (with their cause) and counts what is ignored.
pub fn classify(
    events: &[LogEvent],
    app_id: &str,
    source: &str,
) -> (Vec<EventWork>, BTreeMap<&'static str, u64>) {
    let mut take = Vec::new();
    let mut ignored: BTreeMap<&'static str, u64> = BTreeMap::new();
    for ev in events {
        match hints(ev, app_id) {
            Ok(h) => take.push((
                EventCause {
                    uuid: ev.uuid.clone(),
                    event_type: ev.event_type.clone(),
                    published: ev.published,
                    source: source.to_string(),
                },
                h,
            )),
            Err(why) => *ignored.entry(why.label()).or_default() += 1,
        }
    }
    (take, ignored)
}

/// What one poll did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollSummary {
    pub pages: usize,
    pub events: usize,
    pub queued: usize,
    pub duplicates: usize,
    /// The queue was full: the cursor stayed, the events are read again later.
    pub overflow: bool,
}

/// One poll of the System Log: follows the stored `next` link (or, on the first poll, starts
/// at the start of the last successful full run), queues the hints of every new event and moves
/// the cursor, page by page, each page in one transaction.
pub async fn poll_once(engine: &Engine) -> Result<PollSummary, PollError> {
    let store = &engine.store;
    let (cursor, last_full) = store
        .call(|s| Ok((s.event_cursor()?, s.last_full_run()?)))
        .await
        .map_err(PollError::Store)?;
    let mut next: Option<String> = cursor.and_then(|(n, _)| n);
    let mut since: Option<DateTime<Utc>> = None;
    if next.is_none() {
        // No further back than a week: Okta keeps 90 days and refuses a `since` older than 180
        // (E0000053, A7.1), and a full run is due long before a week passes (`full_every`).
        let floor = Utc::now() - chrono::Duration::days(7);
        since = Some(last_full.map_or_else(Utc::now, |t| t.max(floor)));
    }
    let app_id = engine.okta.app_id().to_string();
    let mut summary = PollSummary::default();
    for _ in 0..MAX_PAGES_PER_POLL {
        let at = match (&next, since) {
            (Some(n), _) => LogCursor::Next(n.as_str()),
            (None, Some(t)) => LogCursor::Since(t),
            (None, None) => break,
        };
        let page = engine
            .okta
            .poll_logs(at, EVENT_TYPES)
            .await
            .map_err(PollError::Okta)?;
        summary.pages += 1;
        let read = page.events.len() + page.unreadable;
        summary.events += page.events.len();
        let metrics = &engine.metrics.events;
        metrics.received("system_log", page.events.len() as u64);
        metrics.ignored("unreadable", page.unreadable as u64);
        let (take, ignored) = classify(&page.events, &app_id, "system_log");
        for (why, n) in ignored {
            metrics.ignored(why, n);
        }
        let since_s = since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let new_next = page.next.clone();
        let taken = store
            .call(move |s| {
                let cursor = new_next.as_deref().map(|n| (Some(n), since_s.as_deref()));
                s.events_take(&take, cursor, Utc::now())
            })
            .await
            .map_err(PollError::Store)?;
        if taken.overflow {
            tracing::warn!(
                "the event queue is full: the System Log cursor waits until the queue drains"
            );
            summary.overflow = true;
            break;
        }
        metrics.ignored("duplicate", taken.duplicates as u64);
        summary.queued += taken.new_events;
        summary.duplicates += taken.duplicates;
        match page.next {
            Some(n) => {
                metrics.cursor_moved(Utc::now().timestamp_millis() as f64 / 1000.0);
                next = Some(n);
                since = None;
            }
            None => break,
        }
        // A short page is the end of what Okta has now (polling pages never end, A7.1).
        if read < 1000 {
            break;
        }
    }
    Ok(summary)
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("polling the Okta System Log: {0}")]
    Okta(OktaError),
    #[error("recording System Log events: {0}")]
    Store(crate::store::StoreError),
}

impl PollError {
    /// 403: the token or service app lacks `okta.logs.read` (or the admin role to read logs).
    pub fn is_denied(&self) -> bool {
        matches!(self, PollError::Okta(e) if e.status() == Some(403))
    }
}

/// What one pass over the queue did.
#[derive(Debug, Default)]
pub struct DrainSummary {
    pub runs: usize,
    pub rows: usize,
    /// The writer was busy (a scheduled run): the queue waits.
    pub busy: bool,
    /// Rows kept for another try (a read or a write failed): the worker comes back to them
    /// after a poll interval even without new events.
    pub kept: usize,
    /// The report of each targeted reconcile.
    pub reports: Vec<crate::sync::RunReport>,
}

/// Works off the queue with targeted reconciles, each taken as the one writer (`running`),
/// until the queue is empty, the writer is busy, or `cancel` fires.
pub async fn drain(
    engine: &Engine,
    state: &DaemonState,
    cancel: &CancellationToken,
) -> Result<DrainSummary, crate::store::StoreError> {
    let mut summary = DrainSummary::default();
    loop {
        if cancel.is_cancelled() {
            return Ok(summary);
        }
        let queue = engine.store.call(|s| s.event_queue(BATCH)).await?;
        if queue.is_empty() {
            return Ok(summary);
        }
        if state
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            summary.busy = true;
            return Ok(summary);
        }
        let slot = WriterSlot::taken(state);
        let result = work_off(engine, &queue, cancel).await;
        drop(slot);
        let (report, kept) = result?;
        summary.reports.push(report);
        summary.kept += kept;
        summary.runs += 1;
        summary.rows += queue.len();
        if queue.len() < BATCH {
            return Ok(summary);
        }
    }
}

/// The daemon's one run slot, held by event work: released when dropped, even by a panic
/// unwinding through the targeted run, so the scheduler is never locked out.
struct WriterSlot<'a>(&'a DaemonState);

impl<'a> WriterSlot<'a> {
    /// Marks the slot (already won with `compare_exchange` on `running`) as event work.
    fn taken(state: &'a DaemonState) -> Self {
        state.event_work.store(true, Ordering::SeqCst);
        state.progressed();
        Self(state)
    }
}

impl Drop for WriterSlot<'_> {
    fn drop(&mut self) {
        self.0.event_work.store(false, Ordering::SeqCst);
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// One targeted reconcile over `queue`, and the queue rows settled after it. Returns the run's
/// report and how many rows stay queued for another try.
async fn work_off(
    engine: &Engine,
    queue: &[QueuedHint],
    cancel: &CancellationToken,
) -> Result<(crate::sync::RunReport, usize), crate::store::StoreError> {
    let mut targets = Targets::default();
    for h in queue {
        match h.kind {
            QueueKind::User => {
                targets
                    .users
                    .insert(OktaUserId(h.okta_id.clone()), h.cause.clone());
            }
            QueueKind::Group => {
                targets
                    .groups
                    .insert(OktaGroupId(h.okta_id.clone()), h.cause.clone());
            }
        }
    }
    let out = engine.run_targeted(&targets, cancel).await;
    if cancel.is_cancelled() && out.report.outcome == Outcome::Failed {
        // Stopped: everything stays queued, and no attempt is counted.
        return Ok((out.report, queue.len()));
    }
    let failed_whole = out.report.outcome == Outcome::Failed;
    let (failed, done): (Vec<QueuedHint>, Vec<QueuedHint>) = queue.iter().cloned().partition(|h| {
        failed_whole
            || match h.kind {
                QueueKind::User => out.failed_users.contains(&OktaUserId(h.okta_id.clone())),
                QueueKind::Group => out.failed_groups.contains(&OktaGroupId(h.okta_id.clone())),
            }
    });
    for (cause, at) in &out.applied {
        let lag = (*at - cause.published).num_milliseconds() as f64 / 1000.0;
        engine.metrics.events.lag(lag);
    }
    let last = out
        .applied
        .iter()
        .map(|(c, _)| c)
        .max_by_key(|c| c.published)
        .cloned();
    let tried = failed.len();
    let dropped = engine
        .store
        .call(move |s| s.events_done(&done, &failed, last.as_ref(), Utc::now()))
        .await?;
    let kept = tried - dropped.len();
    for d in dropped {
        tracing::warn!(
            subject = %d.okta_id,
            event = %d.cause.uuid,
            event_type = %d.cause.event_type,
            "re-reading for this event kept failing; it is dropped, and the next full run repairs what it would have changed"
        );
    }
    let held = engine.store.call(|s| s.event_held()).await?;
    engine.metrics.events.set_held(held.len() as i64);
    Ok((out.report, kept))
}

/// The event worker of the daemon: polls the System Log every `[events] poll_interval` (when
/// `system_log` is on), wakes when the hook queues work, and drains the queue as the one writer.
/// Returns when `cancel` fires.
pub async fn worker(
    engine: Arc<Engine>,
    state: Arc<DaemonState>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let cfg = engine.config.events.clone();
    let mut next_poll = Instant::now();
    let mut warned_denied = false;
    loop {
        if cfg.system_log && Instant::now() >= next_poll {
            next_poll = Instant::now() + cfg.poll_interval;
            // Fast recovery: a poll that keeps retrying through an outage is dropped after a
            // few intervals (it only reads; its cursor did not move), and the next poll starts
            // fresh as soon as Okta answers again.
            let budget = (cfg.poll_interval * 3).max(POLL_BUDGET_FLOOR);
            let poll = tokio::time::timeout(budget, poll_once(&engine));
            match cancel.run_until_cancelled(poll).await {
                None => break,
                Some(Err(_)) => {
                    tracing::warn!(seconds = budget.as_secs(), "a System Log poll took too long (Okta slow or failing); the next poll tries again");
                    next_poll = Instant::now();
                }
                Some(Ok(r)) => match r {
                    Ok(s) if s.queued > 0 => {
                        tracing::debug!(events = s.events, queued = s.queued, "System Log poll");
                    }
                    Ok(_) => {}
                    Err(e) if e.is_denied() => {
                        if !warned_denied {
                            tracing::warn!(
                                error = %e,
                                "Okta refused to show the System Log (403): grant the OAuth scope okta.logs.read (or use an admin token that can read logs). Falling back to the schedule alone; polling is tried again hourly"
                            );
                            warned_denied = true;
                        }
                        next_poll = Instant::now() + DENIED_RETRY;
                    }
                    // Transient (after the client's own retries): the next poll tries again.
                    Err(e) => {
                        tracing::warn!(error = %e, "System Log poll failed; the next poll tries again")
                    }
                },
            }
        }
        let (busy, kept) = match drain(&engine, &state, &cancel).await {
            Ok(s) => (s.busy, s.kept > 0),
            Err(e) => {
                tracing::error!(error = %e, "working off the event queue failed; trying again shortly");
                (true, false)
            }
        };
        let until_poll = if cfg.system_log {
            next_poll.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        let wait = if busy {
            until_poll.min(BUSY_RETRY)
        } else if kept {
            // Work that failed is tried again after a poll interval, hook deliveries or not.
            until_poll.min(cfg.poll_interval)
        } else {
            until_poll
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str, users: &[&str], groups: &[&str], apps: &[&str]) -> LogEvent {
        LogEvent {
            uuid: "u".into(),
            event_type: t.into(),
            published: Utc::now(),
            result: Some("SUCCESS".into()),
            users: users.iter().map(|u| OktaUserId::new(*u)).collect(),
            groups: groups.iter().map(|g| OktaGroupId::new(*g)).collect(),
            app_targets: apps.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn each_family_names_what_it_changes_and_the_rest_is_ignored() {
        let app = "0oapostman";
        assert_eq!(
            hints(
                &ev("application.user_membership.remove", &["00u1"], &[], &[app]),
                app
            ),
            Ok(vec![(QueueKind::User, "00u1".into())])
        );
        assert_eq!(
            hints(
                &ev("group.user_membership.add", &["00u1"], &["00g1"], &[]),
                app
            ),
            Ok(vec![(QueueKind::User, "00u1".into())])
        );
        assert_eq!(
            hints(
                &ev(
                    "group.application_assignment.remove",
                    &[],
                    &["00g1"],
                    &[app]
                ),
                app
            ),
            Ok(vec![(QueueKind::Group, "00g1".into())])
        );
        assert_eq!(
            hints(
                &ev(
                    "application.user_membership.add",
                    &["00u1"],
                    &[],
                    &["0oaother"]
                ),
                app
            ),
            Err(Ignored::OtherApp)
        );
        assert_eq!(
            hints(&ev("user.session.start", &["00u1"], &[], &[]), app),
            Err(Ignored::Type)
        );
        let mut failed = ev("user.lifecycle.suspend", &["00u1"], &[], &[]);
        failed.result = Some("FAILURE".into());
        assert_eq!(hints(&failed, app), Err(Ignored::Failed));
        assert_eq!(
            hints(&ev("user.lifecycle.suspend", &[], &[], &[]), app),
            Err(Ignored::NoTarget)
        );
    }
}
