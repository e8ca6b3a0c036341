//! The Okta reads of near-real-time sync (issue 14): one page of the System Log as a polling
//! request (okta-api.md A7.1), one app user (A2, `getApplicationUser`; 404 = not assigned) and
//! one user's status (A2, `getUser`). They reuse the client's request path (auth, courtesy
//! pacing, retries, capped bodies) and convert Okta's JSON into small domain types here.
//!
//! Like the rest of the client it only reads, and it decides nothing: which events matter and
//! what a re-read means are the caller's (`events`, `sync::targeted`).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{decode_error, AttributeMapping, OktaClient, OktaError};
use crate::model::{DesiredUser, OktaGroupId, OktaUserId};

/// Events per System Log page: the largest `limit` Okta allows (A7.1), so a burst is read in
/// few requests. A page of 1,000 events is a few megabytes, inside the client's body cap.
const LOG_LIMIT: &str = "1000";
/// Most events taken from one page, whatever the body holds.
const MAX_EVENTS_PER_PAGE: usize = 1_000;

/// Where a poll starts: the first poll of a state file starts at a time, later ones follow the
/// `next` link Okta returned (opaque, A7.1: "always follow the next links").
#[derive(Clone, Copy, Debug)]
pub enum LogCursor<'a> {
    Since(DateTime<Utc>),
    Next(&'a str),
}

/// One System Log event, reduced to what decides re-reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub uuid: String,
    pub event_type: String,
    pub published: DateTime<Utc>,
    /// `outcome.result` (`SUCCESS`, `FAILURE`, ...), when present.
    pub result: Option<String>,
    pub users: Vec<OktaUserId>,
    pub groups: Vec<OktaGroupId>,
    /// Whether a target is an `AppInstance` with this client's app id.
    pub app_targets: Vec<String>,
}

/// One page of a polling request.
#[derive(Debug)]
pub struct LogPage {
    pub events: Vec<LogEvent>,
    /// Items that were not events we could read (no uuid, bad shape): ignored, counted.
    pub unreadable: usize,
    /// The absolute `next` URL to follow next time. Okta always sends one on polling requests;
    /// without it the caller keeps its cursor.
    pub next: Option<String>,
}

/// What a re-read of one app user found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppUserRead {
    Assigned(DesiredUser),
    /// Assigned, but the record cannot be mapped (never a reason to deactivate).
    Skipped(String),
    /// 404: not assigned to the app (any more).
    NotAssigned,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default, rename = "eventType")]
    event_type: Option<String>,
    #[serde(default)]
    published: Option<String>,
    #[serde(default)]
    outcome: Option<RawOutcome>,
    #[serde(default)]
    target: Option<Vec<RawTarget>>,
}

#[derive(Deserialize)]
struct RawOutcome {
    #[serde(default)]
    result: Option<String>,
}

#[derive(Deserialize)]
struct RawTarget {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Converts one `LogEvent` JSON object (a System Log item or an Event Hook's `data.events[]`
/// element: the same schema, A7.3). `None` when it has no uuid or event type. Targets are
/// found by `type`, never by position (A7.1).
pub fn parse_log_event(item: Value) -> Option<LogEvent> {
    let raw: RawEvent = serde_json::from_value(item).ok()?;
    let uuid = raw.uuid.filter(|u| !u.is_empty() && u.len() <= 128)?;
    let event_type = raw.event_type.filter(|t| !t.is_empty() && t.len() <= 200)?;
    let published = raw
        .published
        .and_then(|p| DateTime::parse_from_rfc3339(&p).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    let mut ev = LogEvent {
        uuid,
        event_type,
        published,
        result: raw.outcome.and_then(|o| o.result),
        users: Vec::new(),
        groups: Vec::new(),
        app_targets: Vec::new(),
    };
    // Okta's targets are a handful; a huge array is not an event we act on in full.
    for t in raw.target.unwrap_or_default().into_iter().take(64) {
        let (Some(id), Some(kind)) = (t.id.filter(|i| !i.is_empty()), t.kind) else {
            continue;
        };
        match kind.as_str() {
            "User" => ev.users.push(OktaUserId(id)),
            "UserGroup" | "Group" => ev.groups.push(OktaGroupId(id)),
            "AppInstance" => ev.app_targets.push(id),
            _ => {}
        }
    }
    Some(ev)
}

impl OktaClient {
    /// The app id this client reads (events about other apps are ignored).
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// One page of a System Log polling request: `sortOrder=ASCENDING`, no `until` (A7.1), the
    /// event types of `event_types` as a server-side `filter` (the caller filters again).
    pub async fn poll_logs(
        &self,
        cursor: LogCursor<'_>,
        event_types: &[&str],
    ) -> Result<LogPage, OktaError> {
        let first = self.url(&["logs"], &[]);
        let url = match cursor {
            LogCursor::Next(link) => self.log_link(&first, link)?,
            LogCursor::Since(t) => {
                let filter = event_types
                    .iter()
                    .map(|t| format!("eventType eq \"{t}\""))
                    .collect::<Vec<_>>()
                    .join(" or ");
                let since = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                self.url(
                    &["logs"],
                    &[
                        ("since", since.as_str()),
                        ("sortOrder", "ASCENDING"),
                        ("limit", LOG_LIMIT),
                        ("filter", filter.as_str()),
                    ],
                )
            }
        };
        let fetched = self.get(&url).await?;
        let endpoint = url.path();
        let items: Vec<Value> = serde_json::from_slice(&fetched.body).map_err(|e| {
            decode_error(
                endpoint,
                format!("the System Log page is not a JSON array: {e}"),
            )
        })?;
        let mut page = LogPage {
            events: Vec::new(),
            unreadable: 0,
            next: None,
        };
        for item in items.into_iter().take(MAX_EVENTS_PER_PAGE) {
            match parse_log_event(item) {
                Some(e) => page.events.push(e),
                None => page.unreadable += 1,
            }
        }
        // Resolved against the page, kept only on the org's origin (the token follows it). On
        // an empty page the link may be the page itself: polling waits there for new events.
        page.next = match fetched.next {
            Some(raw) => Some(self.log_link(&url, &raw)?.into()),
            None => None,
        };
        Ok(page)
    }

    /// A System Log `next` link, used as given (opaque, A7.1) but only on the org's origin.
    /// Unlike a listing's next link it may repeat the page just read: a polling request's
    /// pages never end, and an empty one points at itself until events arrive.
    fn log_link(&self, current: &url::Url, raw: &str) -> Result<url::Url, OktaError> {
        let endpoint = current.path();
        let next = current.join(raw).map_err(|e| OktaError::BadNextLink {
            endpoint: endpoint.to_string(),
            detail: format!("not a URL ({e})"),
        })?;
        if next.origin() != self.inner.org_url.origin() {
            return Err(OktaError::ForeignNextLink {
                endpoint: endpoint.to_string(),
                origin: next.origin().ascii_serialization(),
            });
        }
        Ok(next)
    }

    /// Re-reads one app user for an event, through the same read `why` uses
    /// ([`OktaClient::get_app_user`]). A record that does not decode is skipped (never a
    /// reason to deactivate), as an item of a full read is.
    pub async fn read_app_user(
        &self,
        id: &OktaUserId,
        mapping: &AttributeMapping,
    ) -> Result<AppUserRead, OktaError> {
        Ok(match self.get_app_user(id, mapping).await {
            Ok(None) => AppUserRead::NotAssigned,
            Ok(Some(view)) => match view.mapped {
                Ok(u) => AppUserRead::Assigned(u),
                Err(why) => AppUserRead::Skipped(why),
            },
            Err(OktaError::Decode { detail, .. }) => AppUserRead::Skipped(format!(
                "Okta's app user record could not be read: {detail}"
            )),
            Err(e) => return Err(e),
        })
    }

    /// One user's `status` (through [`OktaClient::get_user`]); `None` when Okta has no such
    /// user.
    pub async fn read_user_status(&self, id: &OktaUserId) -> Result<Option<String>, OktaError> {
        Ok(self
            .get_user(id.as_str())
            .await?
            .map(|u| u.status.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_found_by_type_not_position() {
        let e = parse_log_event(serde_json::json!({
            "uuid": "u1", "eventType": "group.user_membership.add",
            "published": "2026-11-28T12:00:00.000Z",
            "outcome": {"result": "SUCCESS"},
            "target": [
                {"id": "00g1", "type": "UserGroup"},
                {"id": "00u1", "type": "User"},
                {"type": "User"}
            ]
        }))
        .expect("event");
        assert_eq!(e.users, vec![OktaUserId::new("00u1")]);
        assert_eq!(e.groups, vec![OktaGroupId::new("00g1")]);
        assert_eq!(e.result.as_deref(), Some("SUCCESS"));
        assert!(parse_log_event(serde_json::json!({"eventType": "x"})).is_none());
        assert!(parse_log_event(serde_json::json!([1, 2])).is_none());
    }
}
