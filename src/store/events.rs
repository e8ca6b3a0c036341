//! The state of near-real-time sync (issue 14): the System Log cursor, the uuids of events
//! already taken (dedup across polling and the Event Hook, and across restarts), the durable
//! queue of users and groups that events named, the event-driven deactivations inside the
//! rolling guard window, the deactivations that guard held back, and the last event applied.
//!
//! The one rule this file exists for: the cursor only moves in the same transaction that queues
//! the work the events caused ([`Store::events_take`]), and a queue row is only removed once the
//! targeted reconcile it fed has finished, and only if no newer event replaced it meanwhile
//! ([`Store::events_done`]). A restart or a `kill -9` anywhere therefore neither skips an event
//! (its work is queued before the cursor passes it) nor applies one twice (the re-read and the
//! journal make the repeated work a no-op). It must not decide what an event means (that is
//! `events`), nor talk to a network.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{clamp_count, ts, Store, StoreError};

/// Most rows the queue may hold: far above any real burst (the users of one org, plus groups),
/// low enough that a flood cannot grow the state file without end. Beyond it, new work is
/// refused (the poller keeps its cursor, the hook answers 503) until the queue drains.
pub const MAX_QUEUE: usize = 200_000;
/// A queue row whose re-read keeps failing is dropped after this many targeted runs; the next
/// full run repairs what it would have changed.
pub const MAX_ATTEMPTS: u32 = 5;
/// Event uuids are remembered this long: Okta redelivers hook calls within minutes and polling
/// never repeats itself, so a week is ample.
const SEEN_FOR_DAYS: i64 = 7;

/// The System Log cursor: the `next` link to follow, and the `since` the first poll used.
pub type Cursor = (Option<String>, Option<String>);
/// One event and the users and groups it names, as [`Store::events_take`] queues them.
pub type EventWork = (EventCause, Vec<(QueueKind, String)>);

/// What a queue row names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    User,
    Group,
}

impl QueueKind {
    fn as_str(self) -> &'static str {
        match self {
            QueueKind::User => "user",
            QueueKind::Group => "group",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "group" {
            QueueKind::Group
        } else {
            QueueKind::User
        }
    }
}

/// The event behind a piece of work: what every operation it causes names in its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventCause {
    pub uuid: String,
    pub event_type: String,
    pub published: DateTime<Utc>,
    /// `system_log` or `hook`.
    pub source: String,
}

/// One queued user or group, with the (latest) event that named it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueuedHint {
    pub kind: QueueKind,
    pub okta_id: String,
    pub cause: EventCause,
    pub attempts: u32,
}

/// What [`Store::events_take`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Events not seen before (their work is queued).
    pub new_events: usize,
    /// Events whose uuid was already taken (a hook redelivery, or polling and the hook both).
    pub duplicates: usize,
    /// The queue is full: nothing was written, the cursor did not move.
    pub overflow: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldDeactivation {
    pub okta_id: String,
    pub user_name: String,
    pub event_uuid: String,
    pub event_type: String,
    pub held_at: String,
}

/// What `/status` and `status` show about events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventStatus {
    /// The `next` link the next poll follows (opaque), or `None` before the first poll.
    pub cursor: Option<String>,
    /// The `since` the first poll used.
    pub cursor_since: Option<String>,
    /// When the cursor last moved.
    pub cursor_updated_at: Option<String>,
    pub last_applied: Option<serde_json::Value>,
    pub queued: usize,
    /// Deactivations the event guard held back since the last full run.
    pub held: Vec<HeldDeactivation>,
}

fn parse_time(path: &std::path::Path, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::BadValue {
            path: path.to_path_buf(),
            detail: format!("event time {s:?}: {e}"),
        })
}

impl Store {
    /// The System Log cursor: the `next` link to follow, and the `since` of the first poll.
    pub fn event_cursor(&self) -> Result<Option<Cursor>, StoreError> {
        self.conn
            .query_row(
                "SELECT next_link, since FROM event_cursor WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// In one transaction: remembers each event's uuid, queues the users and groups of every
    /// event not seen before (a row already queued keeps its oldest `published`, for the lag,
    /// and takes the newer event's uuid and type, for the reason), and moves the cursor to
    /// `cursor` (`(next_link, since)`) when given. A full queue writes nothing.
    pub fn events_take(
        &mut self,
        events: &[EventWork],
        cursor: Option<(Option<&str>, Option<&str>)>,
        now: DateTime<Utc>,
    ) -> Result<Taken, StoreError> {
        let queued: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM event_queue", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let adding: usize = events.iter().map(|(_, h)| h.len()).sum();
        if clamp_count(queued) as usize + adding > MAX_QUEUE {
            return Ok(Taken {
                overflow: true,
                ..Taken::default()
            });
        }
        let now_s = ts(now);
        let seen_cutoff = ts(now - chrono::Duration::days(SEEN_FOR_DAYS));
        self.in_tx(|tx| {
            let mut taken = Taken::default();
            for (cause, hints) in events {
                let fresh = tx.execute(
                    "INSERT OR IGNORE INTO event_seen (uuid, seen_at) VALUES (?1, ?2)",
                    params![cause.uuid, now_s],
                )?;
                if fresh == 0 {
                    taken.duplicates += 1;
                    continue;
                }
                taken.new_events += 1;
                for (kind, id) in hints {
                    tx.execute(
                        "INSERT INTO event_queue
                             (kind, okta_id, event_uuid, event_type, published, source, attempts, queued_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)
                         ON CONFLICT (kind, okta_id) DO UPDATE SET
                             event_uuid = excluded.event_uuid,
                             event_type = excluded.event_type,
                             source = excluded.source,
                             published = MIN(published, excluded.published),
                             attempts = 0",
                        params![
                            kind.as_str(),
                            id,
                            cause.uuid,
                            cause.event_type,
                            ts(cause.published),
                            cause.source,
                            now_s
                        ],
                    )?;
                }
            }
            if let Some((next, since)) = cursor {
                tx.execute(
                    "INSERT INTO event_cursor (id, next_link, since, updated_at) VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET next_link = excluded.next_link,
                         since = COALESCE(excluded.since, since), updated_at = excluded.updated_at",
                    params![next, since, now_s],
                )?;
            }
            tx.execute(
                "DELETE FROM event_seen WHERE seen_at < ?1",
                params![seen_cutoff],
            )?;
            Ok(taken)
        })
    }

    /// Up to `limit` queued rows, oldest event first.
    pub fn event_queue(&self, limit: usize) -> Result<Vec<QueuedHint>, StoreError> {
        let path = self.path.clone();
        let rows: Vec<(String, String, String, String, String, String, i64)> = self.collect_rows(
            "SELECT kind, okta_id, event_uuid, event_type, published, source, attempts
                 FROM event_queue ORDER BY published, kind, okta_id LIMIT ?1",
            params![limit as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )?;
        rows.into_iter()
            .map(
                |(kind, okta_id, uuid, event_type, published, source, attempts)| {
                    Ok(QueuedHint {
                        kind: QueueKind::parse(&kind),
                        okta_id,
                        cause: EventCause {
                            uuid,
                            event_type,
                            published: parse_time(&path, &published)?,
                            source,
                        },
                        attempts: clamp_count(attempts),
                    })
                },
            )
            .collect()
    }

    /// After a targeted reconcile: removes the rows it finished (only while they still carry the
    /// event it worked from: a newer event that arrived meanwhile keeps its row), counts an
    /// attempt on the rows to try again (a re-read or a write failed) and drops those past
    /// `MAX_ATTEMPTS` (returned, for the log), and records the last event applied.
    pub fn events_done(
        &mut self,
        done: &[QueuedHint],
        failed: &[QueuedHint],
        applied: Option<&EventCause>,
        now: DateTime<Utc>,
    ) -> Result<Vec<QueuedHint>, StoreError> {
        self.in_tx(|tx| {
            for h in done {
                tx.execute(
                    "DELETE FROM event_queue WHERE kind = ?1 AND okta_id = ?2 AND event_uuid = ?3",
                    params![h.kind.as_str(), h.okta_id, h.cause.uuid],
                )?;
            }
            let mut dropped = Vec::new();
            for h in failed {
                if h.attempts + 1 >= MAX_ATTEMPTS {
                    tx.execute(
                        "DELETE FROM event_queue WHERE kind = ?1 AND okta_id = ?2",
                        params![h.kind.as_str(), h.okta_id],
                    )?;
                    dropped.push(h.clone());
                } else {
                    tx.execute(
                        "UPDATE event_queue SET attempts = attempts + 1 WHERE kind = ?1 AND okta_id = ?2",
                        params![h.kind.as_str(), h.okta_id],
                    )?;
                }
            }
            if let Some(c) = applied {
                tx.execute(
                    "INSERT INTO event_applied (id, event_uuid, event_type, published, applied_at)
                     VALUES (1, ?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET event_uuid = excluded.event_uuid,
                         event_type = excluded.event_type, published = excluded.published,
                         applied_at = excluded.applied_at",
                    params![c.uuid, c.event_type, ts(c.published), ts(now)],
                )?;
            }
            Ok(dropped)
        })
    }

    /// Event-driven deactivations since `since` (the rolling guard window).
    pub fn event_deactivations_since(&self, since: DateTime<Utc>) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM event_deactivations WHERE at >= ?1",
                params![ts(since)],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(clamp_count(n) as usize)
    }

    /// Counts deactivations against the window before they are sent (a crash mid-apply counts
    /// them rather than forgets them), records the ones held back, and forgets window entries
    /// older than `prune_before`.
    pub fn event_guard_record(
        &mut self,
        deactivating: &[String],
        held: &[HeldDeactivation],
        now: DateTime<Utc>,
        prune_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now_s = ts(now);
        self.in_tx(|tx| {
            for id in deactivating {
                tx.execute(
                    "INSERT INTO event_deactivations (okta_id, at) VALUES (?1, ?2)",
                    params![id, now_s],
                )?;
            }
            for h in held {
                tx.execute(
                    "INSERT INTO event_held (okta_id, user_name, event_uuid, event_type, held_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (okta_id) DO UPDATE SET user_name = excluded.user_name,
                         event_uuid = excluded.event_uuid, event_type = excluded.event_type,
                         held_at = excluded.held_at",
                    params![h.okta_id, h.user_name, h.event_uuid, h.event_type, now_s],
                )?;
            }
            tx.execute(
                "DELETE FROM event_deactivations WHERE at < ?1",
                params![ts(prune_before)],
            )?;
            Ok(())
        })
    }

    /// The deactivations held back since the start of the last full run (a full run plans them
    /// again under the normal guard, so older ones are settled).
    pub fn event_held(&self) -> Result<Vec<HeldDeactivation>, StoreError> {
        let since = self
            .last_full_run()?
            .map(ts)
            .unwrap_or_else(|| "0000".to_string());
        self.collect_rows(
            "SELECT okta_id, user_name, event_uuid, event_type, held_at FROM event_held
                 WHERE held_at > ?1 ORDER BY user_name",
            params![since],
            |r| {
                Ok(HeldDeactivation {
                    okta_id: r.get(0)?,
                    user_name: r.get(1)?,
                    event_uuid: r.get(2)?,
                    event_type: r.get(3)?,
                    held_at: r.get(4)?,
                })
            },
        )
    }

    pub fn event_status(&self) -> Result<EventStatus, StoreError> {
        let cursor: Option<(Option<String>, Option<String>, String)> = self
            .conn
            .query_row(
                "SELECT next_link, since, updated_at FROM event_cursor WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let last_applied: Option<serde_json::Value> = self
            .conn
            .query_row(
                "SELECT event_uuid, event_type, published, applied_at FROM event_applied WHERE id = 1",
                [],
                |r| {
                    Ok(serde_json::json!({
                        "uuid": r.get::<_, String>(0)?,
                        "event_type": r.get::<_, String>(1)?,
                        "published": r.get::<_, String>(2)?,
                        "applied_at": r.get::<_, String>(3)?,
                    }))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let queued: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM event_queue", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let (cursor, cursor_since, cursor_updated_at) = match cursor {
            Some((c, s, u)) => (c, s, Some(u)),
            None => (None, None, None),
        };
        Ok(EventStatus {
            cursor,
            cursor_since,
            cursor_updated_at,
            last_applied,
            queued: clamp_count(queued) as usize,
            held: self.event_held()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::now;

    fn cause(uuid: &str, minute: i64) -> EventCause {
        EventCause {
            uuid: uuid.into(),
            event_type: "application.user_membership.remove".into(),
            published: now() + chrono::Duration::minutes(minute),
            source: "system_log".into(),
        }
    }

    #[test]
    fn a_duplicate_event_queues_nothing_and_the_cursor_moves_with_the_work() {
        let mut s = Store::in_memory().expect("mem");
        let ann = vec![(QueueKind::User, "00uann".to_string())];
        let t = s
            .events_take(
                &[(cause("e1", 0), ann.clone())],
                Some((Some("next-1"), None)),
                now(),
            )
            .expect("take");
        assert_eq!((t.new_events, t.duplicates), (1, 0));
        assert_eq!(
            s.event_cursor().expect("cursor"),
            Some((Some("next-1".into()), None))
        );
        let t = s
            .events_take(&[(cause("e1", 0), ann)], None, now())
            .expect("again");
        assert_eq!((t.new_events, t.duplicates), (0, 1));
        assert_eq!(s.event_queue(10).expect("queue").len(), 1);
    }

    #[test]
    fn a_newer_event_during_the_run_keeps_its_queue_row() {
        let mut s = Store::in_memory().expect("mem");
        let ann = vec![(QueueKind::User, "00uann".to_string())];
        s.events_take(&[(cause("e1", 0), ann.clone())], None, now())
            .expect("take");
        let worked = s.event_queue(10).expect("queue");
        // e2 arrives while the targeted run works from e1.
        s.events_take(&[(cause("e2", 1), ann)], None, now())
            .expect("take");
        s.events_done(&worked, &[], Some(&worked[0].cause), now())
            .expect("done");
        let left = s.event_queue(10).expect("queue");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].cause.uuid, "e2");
        // The row keeps the oldest published time (the lag is measured from it).
        assert_eq!(left[0].cause.published, now());
        s.events_done(&left, &[], None, now()).expect("done");
        assert!(s.event_queue(10).expect("queue").is_empty());
    }

    #[test]
    fn a_row_whose_re_read_keeps_failing_is_dropped_after_the_last_attempt() {
        let mut s = Store::in_memory().expect("mem");
        s.events_take(
            &[(cause("e1", 0), vec![(QueueKind::User, "00uann".into())])],
            None,
            now(),
        )
        .expect("take");
        for _ in 0..MAX_ATTEMPTS - 1 {
            let q = s.event_queue(10).expect("queue");
            assert!(s.events_done(&[], &q, None, now()).expect("f").is_empty());
        }
        let q = s.event_queue(10).expect("queue");
        assert_eq!(s.events_done(&[], &q, None, now()).expect("f").len(), 1);
        assert!(s.event_queue(10).expect("queue").is_empty());
    }

    #[test]
    fn the_guard_window_counts_recent_deactivations_only() {
        let mut s = Store::in_memory().expect("mem");
        let old = now() - chrono::Duration::hours(2);
        s.event_guard_record(&["a".into()], &[], old, old)
            .expect("old");
        s.event_guard_record(&["b".into(), "c".into()], &[], now(), old)
            .expect("new");
        assert_eq!(
            s.event_deactivations_since(now() - chrono::Duration::hours(1))
                .expect("count"),
            2
        );
    }
}
