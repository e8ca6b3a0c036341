//! The Okta Event Hook receiver (okta-api.md A7.3), served on `[server] listen`:
//! `GET /okta/events` answers Okta's one-time verification (the `X-Okta-Verification-Challenge`
//! header echoed as `{"verification": "…"}`), and `POST /okta/events` takes a delivery
//! (`data.events[]`, System Log `LogEvent`s) only with the configured `Authorization` value,
//! compared in constant time; anything else is 401 and no work. An accepted delivery is queued
//! durably (the same queue and dedup as polling) and acknowledged at once (204): Okta gives a
//! hook 3 s and retries at most once, so the work itself happens in the event worker.
//!
//! Bounds: the body is read only after the secret matched, at most [`MAX_BODY_BYTES`]; at most
//! [`MAX_EVENTS`] events are taken from one delivery; the store write has [`ACK_WITHIN`]. A
//! full queue or a busy store answers 503, which Okta retries once; the System Log (when
//! polled) and the next full run catch anything lost. This module must not plan or write.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::okta::parse_log_event;
use crate::store::StoreHandle;

/// Where Okta calls (the hook's URL in the Admin Console ends with this path).
pub const PATH: &str = "/okta/events";
/// Largest delivery body read. Okta batches events close in time; a thousand events of a few
/// hundred bytes to a few kilobytes each stay well below it.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most events taken from one delivery.
pub const MAX_EVENTS: usize = 1_000;
/// Longest verification challenge echoed back (Okta's are short random strings).
const MAX_CHALLENGE: usize = 512;
/// The store write of a delivery must finish within this, inside Okta's 3 s.
pub const ACK_WITHIN: Duration = Duration::from_secs(2);
/// Shortest accepted secret: a guessable one would let anyone make the daemon re-read users.
pub const MIN_SECRET_LEN: usize = 16;

/// The hook's `Authorization` value. Never printed: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct HookSecret(Arc<SecretString>);

impl std::fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSecret(<redacted>)")
    }
}

impl HookSecret {
    pub fn new(secret: SecretString) -> Result<Self, String> {
        let t = secret.expose_secret();
        if t.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the Event Hook secret is shorter than {MIN_SECRET_LEN} characters: generate one with \
                 e.g. `openssl rand -hex 32` and enter the same value as the hook's Authorization \
                 header in Okta"
            ));
        }
        if !t.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(
                "the Event Hook secret must be printable ASCII (it is an HTTP header value)".into(),
            );
        }
        Ok(Self(Arc::new(secret)))
    }

    /// Whether an `Authorization` header carries exactly the secret. Constant time in the
    /// position of the first difference (`subtle`); only the length can leak.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.0.expose_secret().as_bytes();
        presented.trim_ascii().ct_eq(expected).into()
    }
}

/// What the hook endpoints need.
#[derive(Clone)]
pub struct HookState {
    pub secret: HookSecret,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    /// Wakes the event worker.
    pub wake: Arc<Notify>,
    pub app_id: String,
}

pub fn routes(state: Arc<HookState>) -> Router {
    Router::new()
        .route(PATH, get(verify).post(deliver))
        .with_state(state)
}

fn problem(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "error": text }))).into_response()
}

/// Okta's one-time verification: echo the challenge. Harmless to anyone (it does no work and
/// reveals nothing), so it needs no secret.
async fn verify(headers: HeaderMap) -> Response {
    match headers
        .get("x-okta-verification-challenge")
        .and_then(|v| v.to_str().ok())
    {
        Some(c) if !c.is_empty() && c.len() <= MAX_CHALLENGE => {
            Json(json!({ "verification": c })).into_response()
        }
        _ => problem(
            StatusCode::BAD_REQUEST,
            "GET /okta/events is Okta's Event Hook verification: it needs the \
             X-Okta-Verification-Challenge header",
        ),
    }
}

async fn deliver(State(h): State<Arc<HookState>>, req: Request<Body>) -> Response {
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| h.secret.accepts(v.as_bytes()));
    if !authorized {
        h.metrics.events.ignored("unauthorized", 1);
        return problem(
            StatusCode::UNAUTHORIZED,
            "this Event Hook call lacks the configured Authorization value ([events] \
             hook_secret_file, OKTA_EVENT_HOOK_SECRET or the credential okta-event-hook-secret); \
             nothing was done",
        );
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the delivery is larger than 1 MiB or was cut off",
            )
        }
    };
    let envelope: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return problem(StatusCode::BAD_REQUEST, "the delivery is not JSON"),
    };
    let Some(items) = envelope
        .get("data")
        .and_then(|d| d.get("events"))
        .and_then(Value::as_array)
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "the delivery has no data.events array (Okta's event hook envelope)",
        );
    };
    let total = items.len();
    let events: Vec<_> = items
        .iter()
        .take(MAX_EVENTS)
        .filter_map(|i| parse_log_event(i.clone()))
        .collect();
    h.metrics.events.received("hook", events.len() as u64);
    h.metrics
        .events
        .ignored("unreadable", (total.min(MAX_EVENTS) - events.len()) as u64);
    let (take, ignored) = super::classify(&events, &h.app_id, "hook");
    for (why, n) in ignored {
        h.metrics.events.ignored(why, n);
    }
    if take.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let write = h
        .store
        .call(move |s| s.events_take(&take, None, Utc::now()));
    match tokio::time::timeout(ACK_WITHIN, write).await {
        Ok(Ok(t)) if !t.overflow => {
            h.metrics.events.ignored("duplicate", t.duplicates as u64);
            h.wake.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Ok(_)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event queue is full; Okta retries once, and the next full run repairs the rest",
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not queue an Event Hook delivery");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state database could not take the delivery",
            )
        }
        Err(_) => {
            // The write may still finish; a retry by Okta is deduplicated by uuid.
            h.wake.notify_one();
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state database is busy",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_must_match_exactly_and_is_never_printed() {
        let s = HookSecret::new(SecretString::from("0123456789abcdef-hook")).expect("secret");
        assert!(s.accepts(b"0123456789abcdef-hook"));
        assert!(!s.accepts(b"0123456789abcdef-hoo"));
        assert!(!s.accepts(b"Bearer 0123456789abcdef-hook"));
        assert!(!format!("{s:?}").contains("0123"));
        assert!(HookSecret::new(SecretString::from("short")).is_err());
    }
}
