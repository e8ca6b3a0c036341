//! okta-postman-sync-sim: stateful simulators of Okta and Postman's SCIM API, served by axum on
//! `127.0.0.1:0`. They are used by the product's unit and integration tests, the fault-injection
//! suite, the benchmarks and the `demo` command, so there is one implementation for all of them.
//! Each fake owns its state behind an `Arc<std::sync::Mutex<..>>` that is never held across an
//! `.await`, mirrors the documented behaviour described in the workspace's `docs/postman-scim.md`
//! and `docs/okta-api.md` (cited per behaviour), and can inject faults from a seeded RNG so runs
//! replay.
//!
//! It is its own crate so that fakes stay out of the product: the product depends on it only as
//! a dev-dependency and, for `demo`, through the default-on `demo` cargo feature. A release binary
//! built with `--no-default-features` contains none of this code. It must not depend on the
//! product crate (that would be a cycle through `demo`), so it has its own id types ([`ids`]) and
//! shares only the ring-backed JWT provider (`okta-postman-sync-jwt-ring`) with it; nothing in
//! the product's `okta`, `scim`, `plan` or `apply` may depend on it.

pub mod faults;
pub mod ids;
pub mod okta;
pub mod okta_oauth;
pub mod postman;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::Router;
use tokio::sync::oneshot;

pub use faults::{Disruption, Fault, FaultConfig, Malformed, Rejection};
pub use ids::{OktaGroupId, OktaUserId, ScimGroupId, ScimUserId};
pub use okta::{FakeOkta, OktaSimConfig, OktaStats, PopulateSummary, UserSpec};
pub use okta_oauth::{OAuthSim, OAuthStats, SimServiceApp, TestKeyPair};
pub use postman::{
    AuthScheme, FakePostman, MemberRemoval, PostmanSimConfig, PostmanStats, PutSemantics,
    SimScimGroup, SimScimUser,
};

/// Errors from the simulators' own API (their mutators), not from the HTTP side: those are
/// answered to the client as the real service would.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulated {service} has no user {id}")]
    UnknownUser { service: &'static str, id: String },
    #[error("simulated {service} has no group {id}")]
    UnknownGroup { service: &'static str, id: String },
    #[error("simulated {service} already has {what} {value}")]
    Duplicate {
        service: &'static str,
        what: &'static str,
        value: String,
    },
}

/// Counters every fake keeps about the requests it served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounters {
    /// Requests received, by HTTP method.
    pub by_method: BTreeMap<String, u64>,
    /// Responses sent, by HTTP status. Connection resets are not responses: see `faults`.
    pub by_status: BTreeMap<u16, u64>,
    /// 429 responses served, from the rate limiter and from injected faults.
    pub rate_limited: u64,
    /// Injected faults, by kind (`"500"`, `"timeout"`, `"reset"`, `"malformed"`, ...).
    pub faults: BTreeMap<String, u64>,
}

impl RequestCounters {
    fn record_method(&mut self, method: &str) {
        *self.by_method.entry(method.to_string()).or_default() += 1;
    }

    fn record_status(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
        if status == 429 {
            self.rate_limited += 1;
        }
    }

    fn record_fault(&mut self, kind: &str) {
        *self.faults.entry(kind.to_string()).or_default() += 1;
    }
}

/// Locks a fake's state. A panic in a test thread while holding the lock must not make every
/// later request panic too, so a poisoned lock is recovered: the state is plain data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running axum server on 127.0.0.1 that stops when this value is dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Binds `127.0.0.1:0`, builds the router for the bound base URL (the fakes put absolute
    /// URLs in `Link` headers and `meta.location`) and spawns it on the current tokio runtime.
    async fn start(make_router: impl FnOnce(String) -> Router) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = make_router(format!("http://{addr}"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async move {
                // Either an explicit stop or the handle being dropped ends the server.
                let _ = stopped.await;
            };
            if let Err(err) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%err, "simulator server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            stop: Some(stop),
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Timestamps in the format both APIs use (`2021-02-22T04:24:13.000Z`).
fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The current time as an API timestamp. Formatting is cached per millisecond: `populate`
/// stamps 100k users, and most of them within the same few milliseconds.
fn now_timestamp() -> String {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    let millis = now.timestamp_millis();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != millis {
            *cache = (millis, timestamp(now));
        }
        cache.1.clone()
    })
}

/// Parses a raw query string (already percent-encoded) into its decoded pairs. Later duplicates
/// win, which is what both services' frameworks do in practice for the parameters we read.
fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// Decodes `%XX` escapes, leaving `+` alone. Postman's filter examples percent-encode characters
/// inside the quoted value (`taylor%2Dlee@example.com`,
/// docs/postman-scim.md#listing-and-filtering), on top of the query string's own encoding, so the
/// value is decoded once more after query parsing.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_inside_filter_values() {
        assert_eq!(
            percent_decode("taylor%2Dlee%2Btest%40example.com"),
            "taylor-lee+test@example.com"
        );
        assert_eq!(percent_decode("a+b%"), "a+b%");
        assert_eq!(percent_decode("100%zz"), "100%zz");
    }
}
