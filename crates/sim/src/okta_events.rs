//! The fake Okta's System Log (okta-api.md A7.1) and single-user read (A2, `getUser`), as a
//! child module of `okta.rs` (it shares its state and middleware: auth, faults, counters).
//!
//! Every mutator of [`FakeOkta`] that changes something the daemon cares about records the
//! LogEvent Okta would (A7.2): targets found by `type`, `outcome.result = SUCCESS`, a uuid, and
//! `published`. `GET /api/v1/logs` behaves like Okta's polling requests: persistence order,
//! `since` or the opaque `after` (mutually exclusive), `filter` on `eventType eq "…"` joined by
//! `or`, `limit` up to 1000, and a `next` link on every page, even an empty one. Tests can turn
//! recording off (a change that produces no event), replay or insert raw events (duplicates,
//! out of order), deny the System Log (403, no `okta.logs.read`), and take the recorded events
//! to deliver them as Event Hook calls. Read-only over HTTP, like the rest of the fake.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{
    link_headers, lock, now_timestamp, okta_error, parse_query, query_string, Arc, FakeOkta, Shared,
};

/// Most events one page returns (A7.1: `limit` 0–1000).
const MAX_LIMIT: usize = 1000;

/// The recorded events, in persistence order.
#[derive(Debug)]
pub(super) struct SystemLog {
    app_id: String,
    /// (sequence, event); the sequence is the opaque `after` cursor.
    events: Vec<(u64, Value)>,
    seq: u64,
    /// Mutators record events (default on).
    recording: bool,
    /// `/api/v1/logs` answers 403 E0000006.
    denied: bool,
    /// Requests `/api/v1/logs` served.
    pub(super) polls: u64,
}

impl SystemLog {
    pub(super) fn new(app_id: &str) -> Self {
        Self {
            app_id: app_id.to_string(),
            events: Vec::new(),
            seq: 0,
            recording: true,
            denied: false,
            polls: 0,
        }
    }

    /// Records one event of `event_type` whose targets are `(type, id)` pairs; `app` adds the
    /// app instance as a target (assignment events name it).
    pub(super) fn record(&mut self, event_type: &str, targets: &[(&str, &str)], app: bool) {
        if !self.recording {
            return;
        }
        let mut target: Vec<Value> = targets
            .iter()
            .map(|(t, id)| json!({"id": id, "type": t, "alternateId": id, "displayName": id}))
            .collect();
        if app {
            target.push(json!({"id": self.app_id, "type": "AppInstance", "alternateId": "Postman", "displayName": "Postman"}));
        }
        self.seq += 1;
        let uuid = format!("{:08x}-5a1e-4e00-8000-{:012x}", self.seq >> 16, self.seq);
        let event = json!({
            "uuid": uuid,
            "published": now_timestamp(),
            "eventType": event_type,
            "version": "0",
            "severity": "INFO",
            "displayMessage": event_type,
            "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com", "displayName": "Admin"},
            "outcome": {"result": "SUCCESS"},
            "target": target,
            "transaction": {"type": "WEB", "id": format!("tx{}", self.seq)},
        });
        self.events.push((self.seq, event));
    }

    fn push_raw(&mut self, event: Value) {
        self.seq += 1;
        self.events.push((self.seq, event));
    }
}

impl FakeOkta {
    /// Whether changes record System Log events (on by default). Off simulates a change whose
    /// event never arrives.
    pub fn set_system_log_recording(&self, on: bool) {
        self.with(|s| s.log.recording = on);
    }

    /// `GET /api/v1/logs` answers 403, as for a token without `okta.logs.read`.
    pub fn deny_system_log(&self, denied: bool) {
        self.with(|s| s.log.denied = denied);
    }

    /// Every event recorded so far, in persistence order (to deliver as hook calls).
    pub fn log_events(&self) -> Vec<Value> {
        self.with(|s| s.log.events.iter().map(|(_, e)| e.clone()).collect())
    }

    /// Appends a raw event (a replay of an earlier one, or one `published` in the past).
    pub fn push_log_event(&self, event: Value) {
        self.with(|s| s.log.push_raw(event));
    }

    /// Requests served on `/api/v1/logs`.
    pub fn log_polls(&self) -> u64 {
        self.with(|s| s.log.polls)
    }
}

/// The event types of `eventType eq "…"` clauses joined by `or` (other filters are not needed
/// by the daemon and match everything here).
fn filter_types(filter: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for clause in filter.split(" or ") {
        let c = clause.trim().trim_start_matches('(').trim_end_matches(')');
        let rest = c.strip_prefix("eventType eq ")?;
        out.push(rest.trim().trim_matches('"').to_string());
    }
    Some(out)
}

pub(super) async fn list_logs(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = parse_query(raw.as_deref());
    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    state.log.polls += 1;
    if state.log.denied {
        return okta_error(
            state,
            StatusCode::FORBIDDEN,
            "E0000006",
            "You do not have permission to perform the requested action",
        );
    }
    if query.contains_key("since") && query.contains_key("after") {
        return okta_error(
            state,
            StatusCode::BAD_REQUEST,
            "E0000001",
            "Api validation failed: since and after are mutually exclusive",
        );
    }
    if query
        .get("sortOrder")
        .is_some_and(|o| o != "ASCENDING" && o != "DESCENDING")
    {
        return okta_error(
            state,
            StatusCode::BAD_REQUEST,
            "E0000001",
            "Api validation failed: sortOrder",
        );
    }
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if n <= MAX_LIMIT => n,
        _ => {
            return okta_error(
                state,
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: limit",
            )
        }
    };
    let types = query.get("filter").and_then(|f| filter_types(f));
    let after: u64 = match query.get("after").map(|a| a.parse::<u64>()) {
        None => 0,
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            return okta_error(
                state,
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: after",
            )
        }
    };
    let since = query.get("since").cloned();
    let mut page = Vec::new();
    let mut last = after;
    for (seq, ev) in state.log.events.iter().filter(|(seq, _)| *seq > after) {
        if page.len() >= limit {
            break;
        }
        // Persistence order; `since` compares `published` (RFC 3339 in UTC sorts as text).
        if let Some(s) = &since {
            if ev
                .get("published")
                .and_then(Value::as_str)
                .is_some_and(|p| p < s.as_str())
            {
                last = *seq;
                continue;
            }
        }
        last = *seq;
        let t = ev.get("eventType").and_then(Value::as_str).unwrap_or("");
        if types.as_ref().is_none_or(|ts| ts.iter().any(|x| x == t)) {
            page.push(ev.clone());
        }
    }
    // Polling requests always have a next link, even when the page is empty (A7.1).
    let mut pairs: Vec<(&str, String)> = vec![
        ("limit", limit.to_string()),
        ("sortOrder", "ASCENDING".to_string()),
        ("after", last.to_string()),
    ];
    if let Some(f) = query.get("filter") {
        pairs.push(("filter", f.clone()));
    }
    let base = &shared.base_url;
    let self_url = format!("{base}/api/v1/logs?{}", raw.unwrap_or_default());
    let next_url = format!("{base}/api/v1/logs?{}", query_string(&pairs));
    let headers = link_headers(&shared.config, &self_url, Some(&next_url));
    (headers, Json(Value::Array(page))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::{OktaSimConfig, UserSpec};

    #[tokio::test]
    async fn polling_pages_follow_next_links_that_never_end() {
        let fake = FakeOkta::start(OktaSimConfig {
            token: "t".to_string().into(),
            ..OktaSimConfig::default()
        })
        .await
        .expect("start");
        let id = fake.add_user(UserSpec::new("a@example.com", "A", "B"));
        fake.assign_user(&id).expect("assign");
        fake.suspend(&id).expect("suspend");
        let client = reqwest::Client::new();
        let url = format!(
            "{}/api/v1/logs?since=2000-01-01T00:00:00.000Z&sortOrder=ASCENDING&limit=1",
            fake.base_url()
        );
        let r = client
            .get(&url)
            .header("Authorization", "SSWS t")
            .send()
            .await
            .expect("get");
        let link = r
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.contains("next"))
            .expect("next")
            .to_string();
        let body: Vec<Value> = r.json().await.expect("json");
        assert_eq!(body.len(), 1);
        assert_eq!(body[0]["eventType"], "application.user_membership.add");
        let next = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("url")
            .to_string();
        let r = client
            .get(&next)
            .header("Authorization", "SSWS t")
            .send()
            .await
            .expect("get");
        let body: Vec<Value> = r.json().await.expect("json");
        assert_eq!(body[0]["eventType"], "user.lifecycle.suspend");
        fake.deny_system_log(true);
        let r = client
            .get(&url)
            .header("Authorization", "SSWS t")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403);
    }
}
