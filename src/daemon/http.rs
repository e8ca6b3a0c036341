//! The daemon's HTTP endpoints: `/healthz` (liveness: the scheduler loop beats and no run is
//! stuck), `/readyz` (readiness: the last successful run is recent), `/metrics` (Prometheus
//! text) and `/status` (counts for anyone; the details of the last runs and failing users only
//! with the bearer token of `[server] status_token_file`). Read-only: nothing here can trigger or
//! change a run. `/healthz`, `/readyz`, `/metrics` and the counts-only `/status` carry no
//! personal data (no userNames, emails, Okta ids or error texts).
//!
//! The server is our own accept loop over hyper rather than `axum::serve`, because a neighbour
//! must not be able to starve it ([`HttpLimits`]): every connection must finish its request
//! headers within a few seconds, a peer address may hold only a few connections, the total is
//! capped, and when the cap is full the oldest connection that has not finished its headers is
//! evicted to make room. So hundreds of half-sent requests, from one address or many, cannot
//! keep the kubelet's `/healthz` probe out. Keep-alive is off: every connection carries one
//! request, which bounds its life and makes "still sending headers" a simple flag.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::schedule::{DaemonState, LastSuccess};
use crate::metrics::Metrics;
use crate::store::StoreHandle;

/// The bearer token that unlocks `/status` details. Never printed: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct StatusToken(Arc<SecretString>);

impl std::fmt::Debug for StatusToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusToken(<redacted>)")
    }
}

/// Shortest accepted token: a guessable token would protect nothing.
pub const MIN_STATUS_TOKEN_LEN: usize = 16;

impl StatusToken {
    /// Checks the shape of a token read from `[server] status_token_file` (or its env/credential).
    pub fn new(secret: SecretString) -> Result<Self, String> {
        let t = secret.expose_secret();
        if t.len() < MIN_STATUS_TOKEN_LEN {
            return Err(format!(
                "the /status token is shorter than {MIN_STATUS_TOKEN_LEN} characters: generate one \
                 with e.g. `openssl rand -hex 32`"
            ));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the /status token contains spaces or non-ASCII characters: it must be usable in \
                 an `Authorization: Bearer` header (e.g. `openssl rand -hex 32`)"
                    .to_string(),
            );
        }
        Ok(Self(Arc::new(secret)))
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`, the scheme
    /// case-insensitive as RFC 9110 §11.1 says). The comparison takes the same time wherever the
    /// first differing byte is (`subtle`); only the length can leak, which the minimum length
    /// and a random token make useless.
    pub fn accepts(&self, authorization: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Some((scheme, presented)) = authorization.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let presented = presented.trim().as_bytes();
        let expected = self.0.expose_secret().as_bytes();
        presented.ct_eq(expected).into()
    }
}

#[derive(Clone)]
pub struct AppState {
    pub daemon: Arc<DaemonState>,
    pub metrics: Arc<Metrics>,
    pub store: StoreHandle,
    pub stale_after: Duration,
    /// The scheduler is considered dead when its heartbeat is older than this.
    pub liveness_window: Duration,
    /// A run without progress for this long is stuck (see [`super::schedule::stuck_after`]).
    pub stuck_after: Duration,
    /// `None`: `/status` shows counts only, to everyone.
    pub status_token: Option<StatusToken>,
    /// `[events] hook = true`: the Event Hook receiver (issue 14) is routed too.
    pub hook: Option<Arc<crate::events::hook::HookState>>,
}

/// Limits of the HTTP server. The defaults are what the daemon uses; tests may shorten them.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// A connection must have sent its whole request head within this (hyper's
    /// `header_read_timeout`; it starts when the connection is accepted).
    pub header_read_timeout: Duration,
    /// Time to produce a response once the head is in.
    pub request_timeout: Duration,
    /// Hard limit on a connection's whole life (head, handler, and writing the answer to a slow
    /// reader).
    pub connection_lifetime: Duration,
    /// Concurrent connections in all.
    pub max_connections: usize,
    /// Concurrent connections from one peer address.
    pub max_per_peer: usize,
    /// Read buffer for the request head (hyper's minimum is 8 KiB).
    pub max_head_bytes: usize,
    /// Request header fields.
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            // A probe or a scrape sends its head in one packet; 5 s is generous on any network.
            header_read_timeout: Duration::from_secs(5),
            // The slowest handler is /status (a few SQLite reads); the kubelet gives up at 5 s.
            request_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(30),
            // Well below the smallest file limit we have seen (128), leaving room for the
            // outgoing HTTPS connections and SQLite; probes and scrapes need a handful.
            max_connections: 64,
            // A kubelet, a Prometheus and an operator's curl each need one or two.
            max_per_peer: 8,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let hook = state.hook.clone();
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state);
    match hook {
        Some(h) => router.merge(crate::events::hook::routes(h)),
        None => router,
    }
}

/// Serves with the default [`HttpLimits`] until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, HttpLimits::default(), cancel).await
}

/// One admitted connection's entry in the [`Connections`] table.
struct Slot {
    peer: IpAddr,
    /// Set once hyper has parsed the request head (the handler was called).
    head_done: Arc<AtomicBool>,
    evict: CancellationToken,
}

/// The table of open connections. Ids grow, so the smallest id is the oldest connection.
#[derive(Default)]
struct Table {
    next_id: u64,
    slots: BTreeMap<u64, Slot>,
    per_peer: HashMap<IpAddr, usize>,
}

#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Table>>);

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    PeerLimit,
    Full,
}

/// Removes its slot when the connection ends (unless an eviction already did).
struct Admitted {
    table: Connections,
    id: u64,
    head_done: Arc<AtomicBool>,
    evict: CancellationToken,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, id: u64) {
        let mut t = self.lock();
        if let Some(slot) = t.slots.remove(&id) {
            release_peer(&mut t.per_peer, slot.peer);
        }
    }

    /// Admits a connection from `peer`, evicting the oldest connection that has not finished
    /// its request head when the table is full. Returns whether an eviction happened.
    fn admit(&self, peer: IpAddr, limits: &HttpLimits) -> Result<(Admitted, bool), Refusal> {
        let mut t = self.lock();
        if t.per_peer.get(&peer).copied().unwrap_or(0) >= limits.max_per_peer {
            return Err(Refusal::PeerLimit);
        }
        let mut evicted = false;
        if t.slots.len() >= limits.max_connections {
            let victim = t
                .slots
                .iter()
                .find(|(_, s)| !s.head_done.load(Ordering::SeqCst))
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    if let Some(slot) = t.slots.remove(&id) {
                        slot.evict.cancel();
                        release_peer(&mut t.per_peer, slot.peer);
                    }
                    evicted = true;
                }
                // Every connection is being answered; each ends within the request timeout.
                None => return Err(Refusal::Full),
            }
        }
        let id = t.next_id;
        t.next_id = t.next_id.wrapping_add(1);
        let head_done = Arc::new(AtomicBool::new(false));
        let evict = CancellationToken::new();
        t.slots.insert(
            id,
            Slot {
                peer,
                head_done: Arc::clone(&head_done),
                evict: evict.clone(),
            },
        );
        *t.per_peer.entry(peer).or_insert(0) += 1;
        drop(t);
        Ok((
            Admitted {
                table: self.clone(),
                id,
                head_done,
                evict,
            },
            evicted,
        ))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

fn release_peer(per_peer: &mut HashMap<IpAddr, usize>, peer: IpAddr) {
    if let Some(n) = per_peer.get_mut(&peer) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_peer.remove(&peer);
        }
    }
}

/// Serves until `cancel` fires, within `limits`. On cancellation it stops accepting, lets the
/// requests in flight finish for a moment, then closes what is left.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: HttpLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let metrics = Arc::clone(&state.metrics);
    let app = router(state);
    let table = Connections::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .max_headers(limits.max_headers);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: do not spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let peer = peer.ip().to_canonical();
        let admitted = match table.admit(peer, &limits) {
            Ok((a, evicted)) => {
                if evicted {
                    metrics.http_connection_refused("evicted");
                }
                a
            }
            Err(why) => {
                let reason = match why {
                    Refusal::PeerLimit => "peer_limit",
                    Refusal::Full => "full",
                };
                metrics.http_connection_refused(reason);
                tracing::debug!(reason, "HTTP connection refused by the server's limits");
                // Best effort, never blocking: a fresh socket's send buffer takes it.
                let _ = stream.try_write(
                    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                );
                drop(stream);
                continue;
            }
        };
        let conn_builder = builder.clone();
        let app = app.clone();
        let shutdown = cancel.clone();
        let limits = limits.clone();
        tasks.spawn(async move {
            serve_connection(stream, conn_builder, app, admitted, limits, shutdown).await;
        });
    }
    // Stopping: the requests in flight get a moment, then the rest are closed.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    builder: hyper::server::conn::http1::Builder,
    app: Router,
    admitted: Admitted,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let head_done = Arc::clone(&admitted.head_done);
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        head_done.store(true, Ordering::SeqCst);
        let app = app.clone();
        async move { Ok::<_, Infallible>(answer(app, req, request_timeout).await) }
    });
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                // Header timeouts and clients that hang up land here; not worth more than debug.
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            false
        }
        _ = admitted.evict.cancelled() => {
            tracing::debug!("HTTP connection evicted to make room (its request head was unfinished)");
            false
        }
        _ = tokio::time::sleep(limits.connection_lifetime) => {
            tracing::debug!("HTTP connection closed: it outlived the connection limit");
            false
        }
        _ = shutdown.cancelled() => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
    }
    drop(admitted);
}

/// Routes one request, refusing request bodies (every endpoint is a GET) and bounding the time
/// the handler may take.
async fn answer(
    app: Router,
    req: Request<hyper::body::Incoming>,
    request_timeout: Duration,
) -> Response {
    let declares_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    // The Event Hook delivery is the one request with a body; its handler caps it.
    let hook_delivery =
        req.method() == axum::http::Method::POST && req.uri().path() == crate::events::hook::PATH;
    if declares_body && !hook_delivery {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "these endpoints take no request body: send a GET without one\n",
        )
            .into_response();
    }
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let call = hyper::service::Service::call(&svc, req);
    match tokio::time::timeout(request_timeout, call).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took too long to answer; try again (the state database may be busy)\n",
        )
            .into_response(),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.daemon.health(s.liveness_window, s.stuck_after) {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Why the daemon is not ready, or `None` when it is. A success of this process is judged on the
/// monotonic clock; one only recorded in the store (an earlier process) by the wall clock, and a
/// recorded success that lies in the future (the clock was ahead when it was written) is not
/// fresh: it proves nothing about now. Clipping it to `now` instead would make it look brand
/// new and the daemon ready while every run fails. The reason carries times only.
pub fn readiness(
    last_success: LastSuccess,
    now: chrono::DateTime<Utc>,
    stale_after: Duration,
) -> Option<String> {
    let age = match last_success {
        LastSuccess::Never => return Some("no successful run yet".to_string()),
        LastSuccess::ThisProcess(age) => age,
        LastSuccess::Recorded(t) => match (now - t).to_std() {
            Ok(age) => age,
            Err(_) => {
                return Some(format!(
                    "the last successful run is recorded at {}, in the future: the clock has \
                     moved back since; waiting for a new successful run",
                    t.to_rfc3339()
                ))
            }
        },
    };
    (age > stale_after).then(|| {
        format!(
            "the last successful run ended {} s ago, more than [sync] stale_after ({} s)",
            age.as_secs(),
            stale_after.as_secs()
        )
    })
}

async fn readyz(State(s): State<AppState>) -> Response {
    match readiness(s.daemon.last_success_age(), Utc::now(), s.stale_after) {
        None => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// What a `/status` request may see.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// No token is configured: counts only, for everyone.
    Counts,
    /// The request carries the configured token.
    Details,
    /// A token is configured and the request does not carry it: 401.
    Refused,
}

fn access(token: Option<&StatusToken>, headers: &HeaderMap) -> Access {
    let Some(token) = token else {
        return Access::Counts;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if presented.is_some_and(|p| token.accepts(p)) {
        Access::Details
    } else {
        Access::Refused
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"okta-postman-sync\"")],
        Json(json!({
            "error": "GET /status needs `Authorization: Bearer <token>` with the token from \
                      [server] status_token_file (or OKTA_POSTMAN_SYNC_STATUS_TOKEN, or the systemd \
                      credential status-token); /metrics, /healthz and /readyz need none"
        })),
    )
        .into_response()
}

async fn status(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let details = match access(s.status_token.as_ref(), &headers) {
        Access::Counts => false,
        Access::Details => true,
        Access::Refused => return unauthorized(),
    };
    let running = s.daemon.running.load(Ordering::SeqCst);
    let skipped = s.daemon.skipped_ticks.load(Ordering::Relaxed);
    let report = match s.store.call(|st| crate::status::collect(st, 20)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "/status could not read the state database");
            let text = if details {
                e.to_string()
            } else {
                "the state database could not be read; the daemon's log has the cause".to_string()
            };
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": text})),
            )
                .into_response();
        }
    };
    // Issue 14: the System Log cursor, the last event applied and held deactivations.
    let events = &report.events;
    if details {
        return Json(json!({
            "events": events,
            "details": true,
            "running": running,
            "skipped_ticks": skipped,
            "managed_active": report.managed_active,
            "managed_inactive": report.managed_inactive,
            "unmanaged_members": report.unmanaged.len(),
            "failing_users": report.failures.len(),
            "failures": report.failures,
            "quarantined": report.quarantined,
            "interrupted_writes": report.interrupted_writes,
            "unresolved_writes": report.unresolved_writes,
            "last_success": report.last_success,
            "runs": report.runs,
        }))
        .into_response();
    }
    // Counts only: no userNames, emails, Okta ids or error texts (those can name people).
    let runs: Vec<serde_json::Value> = report
        .runs
        .iter()
        .map(|r| {
            json!({
                "run_id": r.run_id,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "full": r.full,
                "outcome": r.outcome,
                "counts": r.counts,
                "errors": r.errors.as_ref().and_then(|e| e.as_array()).map_or(0, Vec::len),
            })
        })
        .collect();
    Json(json!({
        "events": {
            "cursor_updated_at": events.cursor_updated_at,
            "last_applied_at": events.last_applied.as_ref().and_then(|l| l.get("applied_at")).cloned(),
            "queued": events.queued,
            "held_deactivations": events.held.len(),
        },
        "details": false,
        "running": running,
        "skipped_ticks": skipped,
        "managed_active": report.managed_active,
        "managed_inactive": report.managed_inactive,
        "unmanaged_members": report.unmanaged.len(),
        "failing_users": report.failures.len(),
        "quarantined": report.quarantined,
        "interrupted_writes": report.interrupted_writes,
        "unresolved_writes": report.unresolved_writes.len(),
        "parked_writes": report.unresolved_writes.iter().filter(|w| w.parked).count(),
        "last_success": report.last_success,
        "runs": runs,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_requires_a_recent_successful_run() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        assert!(readiness(LastSuccess::Never, now, hour).is_some());
        let ten_min_ago = now - chrono::Duration::minutes(10);
        assert!(readiness(LastSuccess::Recorded(ten_min_ago), now, hour).is_none());
        let two_hours_ago = now - chrono::Duration::hours(2);
        let stale = readiness(LastSuccess::Recorded(two_hours_ago), now, hour).expect("stale");
        assert!(stale.contains("stale_after"), "{stale}");
        assert!(readiness(LastSuccess::ThisProcess(Duration::from_secs(60)), now, hour).is_none());
        assert!(readiness(
            LastSuccess::ThisProcess(Duration::from_secs(7200)),
            now,
            hour
        )
        .is_some());
    }

    #[test]
    fn a_success_recorded_in_the_future_is_not_fresh() {
        // The clock ran a day ahead during the last success, then came back.
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let future = now + chrono::Duration::days(1);
        let why = readiness(LastSuccess::Recorded(future), now, hour).expect("not ready");
        assert!(why.contains("future"), "{why}");
        assert!(readiness(
            LastSuccess::Recorded(chrono::DateTime::<Utc>::MAX_UTC),
            now,
            hour
        )
        .is_some());
        // A success of this process is measured on the monotonic clock: once it is older than
        // stale_after the daemon is unready, whatever the wall clock says.
        assert!(readiness(
            LastSuccess::ThisProcess(hour + Duration::from_secs(1)),
            now,
            hour
        )
        .is_some());
    }

    fn token() -> StatusToken {
        StatusToken::new(SecretString::from("0123456789abcdef-token")).expect("valid token")
    }

    #[test]
    fn the_status_token_is_compared_as_a_bearer_credential_and_never_printed() {
        let t = token();
        assert!(t.accepts("Bearer 0123456789abcdef-token"));
        assert!(t.accepts("bearer 0123456789abcdef-token"));
        assert!(!t.accepts("Bearer 0123456789abcdef-tokeN"));
        assert!(!t.accepts("Bearer 0123456789abcdef-token-and-more"));
        assert!(!t.accepts("Bearer "));
        assert!(!t.accepts("Basic 0123456789abcdef-token"));
        assert!(!t.accepts("0123456789abcdef-token"));
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
        assert!(StatusToken::new(SecretString::from("short")).is_err());
        assert!(StatusToken::new(SecretString::from("has a space in it, long")).is_err());
    }

    #[test]
    fn the_table_refuses_a_peer_over_its_limit_and_evicts_the_oldest_unfinished_head() {
        let limits = HttpLimits {
            max_connections: 3,
            max_per_peer: 2,
            ..HttpLimits::default()
        };
        let table = Connections::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let c: IpAddr = "10.0.0.3".parse().expect("ip");
        let (a1, _) = table.admit(a, &limits).expect("a1");
        let (a2, _) = table.admit(a, &limits).expect("a2");
        assert_eq!(table.admit(a, &limits).err(), Some(Refusal::PeerLimit));
        // a1 finished its head (it is being answered); a2 did not.
        a1.head_done.store(true, Ordering::SeqCst);
        let (b1, evicted) = table.admit(b, &limits).expect("b1");
        assert!(!evicted);
        let (c1, evicted) = table.admit(c, &limits).expect("c1 evicts");
        assert!(evicted);
        assert!(
            a2.evict.is_cancelled(),
            "the oldest unfinished head is evicted"
        );
        assert!(
            !a1.evict.is_cancelled(),
            "a connection being answered is kept"
        );
        assert_eq!(table.len(), 3);
        // The evicted connection's slot was freed when it was evicted, not again when it ends.
        drop(a2);
        assert_eq!(
            table.len(),
            3,
            "dropping an evicted connection frees nothing twice"
        );
        // When every connection is being answered, nothing is evicted: a new one is refused
        // (each ends within the request timeout).
        b1.head_done.store(true, Ordering::SeqCst);
        c1.head_done.store(true, Ordering::SeqCst);
        assert_eq!(table.admit(a, &limits).err(), Some(Refusal::Full));
        drop(a1);
        assert!(table.admit(a, &limits).is_ok());
    }
    // ---- the server under load (loopback only) ------------------------------------------------

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn spawn_server(
        limits: HttpLimits,
    ) -> (std::net::SocketAddr, CancellationToken, Arc<Metrics>) {
        let store = crate::store::Store::in_memory().expect("memory store");
        let daemon = Arc::new(DaemonState::default());
        daemon.beat();
        let state = AppState {
            hook: None,
            daemon,
            metrics: Arc::new(Metrics::new()),
            store: crate::store::StoreHandle::new(store),
            stale_after: Duration::from_secs(3600),
            liveness_window: Duration::from_secs(3600),
            stuck_after: Duration::from_secs(3600),
            status_token: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let metrics = Arc::clone(&state.metrics);
        tokio::spawn(serve_with(listener, state, limits, cancel.clone()));
        (addr, cancel, metrics)
    }

    /// A client that sends half a request from `source` and then holds the connection.
    async fn half_sent(
        source: std::net::IpAddr,
        to: std::net::SocketAddr,
    ) -> Option<tokio::net::TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(std::net::SocketAddr::new(source, 0)).ok()?;
        let mut stream = socket.connect(to).await.ok()?;
        // The server may already have closed a refused connection: ignore write errors.
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        Some(stream)
    }

    async fn healthz_status(addr: std::net::SocketAddr) -> u16 {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("/healthz answers")
            .status()
            .as_u16()
    }

    /// Long enough that the header timeout plays no part: the caps alone must protect.
    fn patient() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(600),
            connection_lifetime: Duration::from_secs(600),
            ..HttpLimits::default()
        }
    }

    #[tokio::test]
    async fn healthz_answers_while_hundreds_of_half_sent_requests_come_from_one_address() {
        let (addr, cancel, metrics) = spawn_server(patient()).await;
        let attacker: std::net::IpAddr = "127.0.0.2".parse().expect("ip");
        let mut held = Vec::new();
        for _ in 0..300 {
            held.extend(half_sent(attacker, addr).await);
        }
        assert!(held.len() >= 250, "the attack connections could be opened");
        assert_eq!(healthz_status(addr).await, 200);
        // The per-peer limit did it: all but 8 of the attacker's connections were refused.
        let text = metrics.encode();
        assert!(
            refused(&text, "peer_limit") >= held.len() as u64 - 8,
            "{text}"
        );
        drop(held);
        cancel.cancel();
    }

    fn refused(metrics: &str, reason: &str) -> u64 {
        let key =
            format!("okta_postman_sync_http_connections_refused_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn healthz_answers_while_hundreds_of_half_sent_requests_come_from_many_addresses() {
        // 300 connections from 100 addresses, 3 each: under the per-peer limit, far over the
        // global cap. Eviction of the oldest unfinished head makes room for the probe.
        let (addr, cancel, metrics) = spawn_server(patient()).await;
        let mut held = Vec::new();
        for i in 0..300u32 {
            let source =
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, (i % 100 + 1) as u8));
            held.extend(half_sent(source, addr).await);
        }
        assert!(held.len() >= 250, "the attack connections could be opened");
        assert_eq!(healthz_status(addr).await, 200);
        // The global cap held: every connection beyond it evicted an older unfinished one.
        let text = metrics.encode();
        assert!(
            refused(&text, "evicted") >= held.len() as u64 - 64,
            "{text}"
        );
        drop(held);
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_half_sent_request_is_closed_by_the_server() {
        let (addr, cancel, _) = spawn_server(HttpLimits {
            header_read_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        })
        .await;
        let mut stream = half_sent("127.0.0.1".parse().expect("ip"), addr)
            .await
            .expect("connect");
        let mut got = Vec::new();
        // The client timeout only keeps a broken server from hanging the test.
        let read =
            tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut got)).await;
        assert!(
            read.is_ok(),
            "the server never closed the half-sent request"
        );
        assert!(!String::from_utf8_lossy(&got).contains("200"), "{got:?}");
        cancel.cancel();
    }

    async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn request_bodies_and_other_methods_are_refused() {
        let (addr, cancel, _) = spawn_server(HttpLimits::default()).await;
        let with_body = raw_exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(with_body.starts_with("HTTP/1.1 413"), "{with_body}");
        let chunked = raw_exchange(
            addr,
            b"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
        let post = raw_exchange(
            addr,
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        // A head larger than the buffer is refused, not buffered without end.
        let mut huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
        huge.extend(b"\r\n\r\n");
        let big = raw_exchange(addr, &huge).await;
        assert!(!big.starts_with("HTTP/1.1 200"), "{big}");
        // And the server still answers.
        assert_eq!(healthz_status(addr).await, 200);
        cancel.cancel();
    }
}
