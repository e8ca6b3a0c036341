//! Courtesy rate limiting for Okta: reads the `X-Rate-Limit-*` headers of every response and
//! keeps this client within a share of each rate-limit window, so the daemon never starves the
//! other integrations that share Okta's buckets (docs/okta-api.md#rate-limits).
//!
//! Pure bookkeeping: callers pass the clock in (`Instant`, the server's `Date`) and do the
//! sleeping themselves; this module never sleeps, sends or logs.
//!
//! Every header is untrusted: `X-Rate-Limit-*` values at the ends of `u64`/`i64`, a `Reset` far
//! in the past or future, a `Date` that is absurd or missing never overflow or panic (saturating
//! arithmetic, float casts that saturate, instants built with `limits::instant_after`), and no
//! wait exceeds its cap. The proptest below feeds them arbitrary values.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, DATE};

use crate::limits;

/// The rate-limit headers of one response (docs/okta-api.md#rate-limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RateHeaders {
    /// `X-Rate-Limit-Limit`: the ceiling of the current window (0 on concurrency 429s).
    pub limit: u64,
    /// `X-Rate-Limit-Remaining`: requests left in the window.
    pub remaining: u64,
    /// `X-Rate-Limit-Reset`: UTC epoch seconds at which the window resets; identifies it.
    pub reset: i64,
}

impl RateHeaders {
    /// All three headers, or `None` if any is missing or not a number.
    pub fn from_headers(h: &HeaderMap) -> Option<Self> {
        fn num<T: std::str::FromStr>(h: &HeaderMap, name: &str) -> Option<T> {
            h.get(name)?.to_str().ok()?.trim().parse().ok()
        }
        Some(Self {
            limit: num(h, "x-rate-limit-limit")?,
            remaining: num(h, "x-rate-limit-remaining")?,
            reset: num(h, "x-rate-limit-reset")?,
        })
    }
}

/// The server's clock, from the `Date` header (RFC 9110 IMF-fixdate, which RFC 2822 parsing
/// accepts).
pub(super) fn server_date(h: &HeaderMap) -> Option<DateTime<Utc>> {
    let text = h.get(DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// How long until the window resets: `Reset - Date + 1 s`, measured against the server's clock so a
/// skewed local clock does not matter (docs/okta-api.md#rate-limits, as Okta's Go SDK does). The
/// local clock is used only when the response has no `Date`. Never negative, at most `cap`.
pub(super) fn reset_wait(
    reset: i64,
    server_now: Option<DateTime<Utc>>,
    local_now: DateTime<Utc>,
    cap: Duration,
) -> Duration {
    let now = server_now.unwrap_or(local_now).timestamp();
    let secs = reset.saturating_sub(now).saturating_add(1).max(0);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0)).min(cap)
}

/// A guess at the Okta bucket a path counts against, used to keep one window per bucket. Okta's
/// buckets are prefixes (docs/okta-api.md#rate-limits: `/api/v1/apps/{id}` exactly is one bucket,
/// everything below `/api/v1/apps/*` another); the real table is per org and not public any more,
/// so the guess is coarse on purpose: endpoints that share a real bucket also share a key here.
pub(super) fn bucket_key(path: &str) -> String {
    let rest = path.trim_start_matches("/api/v1/");
    let mut segments = rest.split('/').filter(|s| !s.is_empty());
    let first = segments.next().unwrap_or("");
    match (segments.next(), segments.next()) {
        (None, _) => first.to_string(),
        (Some(_), None) => format!("{first}/{{id}}"),
        (Some(_), Some(_)) => format!("{first}/*"),
    }
}

/// What the caller should do before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    Go,
    /// Pause this long, then ask again.
    Wait(Duration),
}

#[derive(Debug)]
struct Window {
    reset: i64,
    limit: u64,
    /// The lowest `Remaining` seen, less the requests sent since.
    remaining: u64,
    /// Requests this client sent in the window.
    sent: u64,
    /// When the window is over for us (reset + 1 s by the server's clock, capped).
    ends_at: Instant,
}

/// The courtesy limiter: at most `floor(limit * share)` requests (at least 1) per window, and
/// never push `Remaining` below `limit * (1 - share)`, which is left for other clients.
#[derive(Debug)]
pub(super) struct Limiter {
    share: f64,
    windows: BTreeMap<String, Window>,
}

impl Limiter {
    pub fn new(share: f64) -> Self {
        Self {
            share,
            windows: BTreeMap::new(),
        }
    }

    /// Call before each request. `Go` reserves one request of the current window.
    pub fn acquire(&mut self, key: &str, now: Instant) -> Decision {
        let Some(w) = self.windows.get_mut(key) else {
            return Decision::Go;
        };
        if now >= w.ends_at {
            // The window is over; the next response opens the new one.
            self.windows.remove(key);
            return Decision::Go;
        }
        let limit = w.limit as f64;
        let budget = ((limit * self.share).floor() as u64).max(1);
        let reserve = limit * (1.0 - self.share);
        if w.sent < budget && (w.remaining as f64 - 1.0) >= reserve {
            w.sent = w.sent.saturating_add(1);
            w.remaining = w.remaining.saturating_sub(1);
            Decision::Go
        } else {
            Decision::Wait(w.ends_at.saturating_duration_since(now))
        }
    }

    /// Call with the headers of every response. `until_reset` is [`reset_wait`] for them.
    pub fn observe(&mut self, key: &str, h: RateHeaders, until_reset: Duration, now: Instant) {
        if h.limit == 0 {
            // A concurrency 429 (docs/okta-api.md#rate-limits): says nothing about the window; the
            // 429 path waits.
            return;
        }
        match self.windows.get_mut(key) {
            Some(w) if w.reset == h.reset => {
                w.limit = h.limit;
                w.remaining = w.remaining.min(h.remaining);
            }
            // A late answer from an earlier window.
            Some(w) if w.reset > h.reset => {}
            _ => {
                self.windows.insert(
                    key.to_string(),
                    Window {
                        reset: h.reset,
                        limit: h.limit,
                        remaining: h.remaining,
                        // The request that brought this answer is the window's first we know of.
                        sent: 1,
                        // Clamped again here: `until_reset` comes from a header, and
                        // `Instant + Duration` panics on overflow.
                        ends_at: limits::instant_after(now, until_reset, limits::MAX_HINT),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(limit: u64, remaining: u64, reset: i64) -> RateHeaders {
        RateHeaders {
            limit,
            remaining,
            reset,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_window_allows_its_share_and_then_waits_for_the_reset() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.5);
        assert_eq!(l.acquire("apps/*", t0), Decision::Go);
        l.observe("apps/*", headers(4, 3, 100), SECOND, t0);
        assert_eq!(l.acquire("apps/*", t0), Decision::Go);
        l.observe("apps/*", headers(4, 2, 100), SECOND, t0);
        assert_eq!(l.acquire("apps/*", t0), Decision::Wait(SECOND));
        // Other buckets are not held up.
        assert_eq!(l.acquire("groups/*", t0), Decision::Go);
        assert_eq!(l.acquire("apps/*", t0 + SECOND), Decision::Go);
    }

    #[test]
    fn the_count_holds_even_when_remaining_is_not_reported_lower() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.5);
        l.observe("k", headers(6, 6, 100), SECOND, t0);
        assert_eq!(l.acquire("k", t0), Decision::Go);
        assert_eq!(l.acquire("k", t0), Decision::Go);
        assert_eq!(l.acquire("k", t0), Decision::Wait(SECOND));
    }

    #[test]
    fn a_window_already_drained_by_others_makes_the_client_wait() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.5);
        l.observe("k", headers(10, 5, 100), SECOND, t0);
        assert_eq!(l.acquire("k", t0), Decision::Wait(SECOND));
    }

    #[test]
    fn a_tiny_limit_still_allows_one_request_per_window() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.5);
        assert_eq!(l.acquire("k", t0), Decision::Go);
        l.observe("k", headers(1, 0, 100), SECOND, t0);
        assert_eq!(l.acquire("k", t0), Decision::Wait(SECOND));
        assert_eq!(l.acquire("k", t0 + SECOND), Decision::Go);
    }

    #[test]
    fn a_new_reset_value_opens_a_new_window_and_concurrency_429s_are_ignored() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.5);
        l.observe("k", headers(4, 3, 100), SECOND, t0);
        assert_eq!(l.acquire("k", t0), Decision::Go);
        assert!(matches!(l.acquire("k", t0), Decision::Wait(_)));
        l.observe("k", headers(0, 0, 500), SECOND, t0);
        assert!(matches!(l.acquire("k", t0), Decision::Wait(_)));
        l.observe("k", headers(4, 3, 101), SECOND, t0);
        // A late answer from window 100 does not replace window 101.
        l.observe("k", headers(4, 0, 100), SECOND, t0);
        assert_eq!(l.acquire("k", t0), Decision::Go);
    }

    #[test]
    fn the_wait_is_measured_against_the_server_date_not_the_local_clock() {
        let server = DateTime::parse_from_rfc2822("Sat, 01 Jan 2000 00:00:00 GMT")
            .expect("valid date")
            .with_timezone(&Utc);
        let local = Utc::now();
        let cap = Duration::from_secs(120);
        let reset = server.timestamp() + 9;
        assert_eq!(
            reset_wait(reset, Some(server), local, cap),
            Duration::from_secs(10)
        );
        // Without a Date the local clock decides: the reset lies in the past, only +1 s is left.
        assert_eq!(reset_wait(reset, None, local, cap), Duration::ZERO);
        assert_eq!(
            reset_wait(reset + 1000, Some(server), local, cap),
            cap,
            "waits are capped"
        );
    }

    #[test]
    fn rate_headers_and_the_date_header_parse() {
        let mut h = HeaderMap::new();
        h.insert("X-Rate-Limit-Limit", "600".parse().expect("header"));
        h.insert("X-Rate-Limit-Remaining", "0".parse().expect("header"));
        h.insert("X-Rate-Limit-Reset", "1609459200".parse().expect("header"));
        h.insert(
            DATE,
            "Thu, 31 Dec 2020 23:59:58 GMT".parse().expect("header"),
        );
        assert_eq!(
            RateHeaders::from_headers(&h),
            Some(headers(600, 0, 1_609_459_200))
        );
        assert_eq!(server_date(&h).map(|d| d.timestamp()), Some(1_609_459_198));
        h.insert("X-Rate-Limit-Reset", "soon".parse().expect("header"));
        assert_eq!(RateHeaders::from_headers(&h), None);
    }

    #[test]
    fn reset_waits_at_the_ends_of_i64_never_overflow() {
        let cap = Duration::from_secs(120);
        let now = Utc::now();
        for reset in [i64::MAX, i64::MIN, -1, 0] {
            for server in [
                Some(DateTime::<Utc>::MAX_UTC),
                Some(DateTime::<Utc>::MIN_UTC),
                None,
            ] {
                assert!(reset_wait(reset, server, now, cap) <= cap);
            }
        }
        assert_eq!(reset_wait(i64::MAX, None, now, cap), cap);
        assert_eq!(reset_wait(i64::MIN, None, now, cap), Duration::ZERO);
    }

    proptest::proptest! {
        /// Whatever the three headers and `Date` say, parsing, the wait and the limiter never
        /// panic, and no wait exceeds its cap.
        #[test]
        fn any_rate_limit_headers_give_bounded_waits_and_no_panic(
            limit in proptest::prelude::any::<u64>(),
            remaining in proptest::prelude::any::<u64>(),
            reset in proptest::prelude::any::<i64>(),
            date in proptest::prelude::any::<i64>(),
            share in 0.001f64..=1.0,
            cap_ms in 0u64..10_000_000,
            raw in "[ -~]{0,40}",
        ) {
            let cap = Duration::from_millis(cap_ms);
            let server = DateTime::from_timestamp(date, 0);
            let wait = reset_wait(reset, server, Utc::now(), cap);
            proptest::prop_assert!(wait <= cap);

            let mut h = HeaderMap::new();
            h.insert("x-rate-limit-limit", limit.to_string().parse().expect("digits"));
            h.insert("x-rate-limit-remaining", remaining.to_string().parse().expect("digits"));
            h.insert("x-rate-limit-reset", reset.to_string().parse().expect("digits"));
            if let Ok(v) = raw.parse() {
                h.insert(DATE, v);
            }
            let parsed = RateHeaders::from_headers(&h);
            proptest::prop_assert_eq!(parsed, Some(headers(limit, remaining, reset)));
            let _ = server_date(&h);
            // Garbage in any header is "no rate-limit headers", never a panic.
            if let Ok(v) = raw.parse() {
                h.insert("x-rate-limit-reset", v);
                let _ = RateHeaders::from_headers(&h);
            }

            let t0 = Instant::now();
            let mut l = Limiter::new(share);
            for _ in 0..3 {
                l.observe("k", headers(limit, remaining, reset), wait, t0);
                if let Decision::Wait(d) = l.acquire("k", t0) {
                    proptest::prop_assert!(d <= wait.min(limits::MAX_HINT));
                }
            }
            // A later answer of an absurd window, then time passing far beyond it.
            l.observe("k", headers(limit, remaining, reset.wrapping_add(1)), Duration::MAX, t0);
            let _ = l.acquire("k", t0);
            let _ = l.acquire("k", t0 + limits::MAX_HINT + SECOND);
        }
    }

    #[test]
    fn bucket_keys_follow_okta_prefix_buckets() {
        assert_eq!(bucket_key("/api/v1/apps/0oa1"), "apps/{id}");
        assert_eq!(bucket_key("/api/v1/apps/0oa1/users"), "apps/*");
        assert_eq!(bucket_key("/api/v1/apps/0oa1/groups"), "apps/*");
        assert_eq!(bucket_key("/api/v1/groups/00g1/users"), "groups/*");
        assert_eq!(bucket_key("/api/v1/users"), "users");
    }
}
