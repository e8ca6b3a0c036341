//! Defences against hostile or broken upstream answers, shared by both API clients: response
//! bodies read with a hard cap, and durations taken from headers or bodies (`Retry-After`,
//! rate-limit resets, token lifetimes) parsed with checked arithmetic and clamped. Nothing in
//! here may panic or allocate more than its cap, whatever the server sends.
//!
//! It must not decide whether a request is retried (that is the caller's classification, see
//! [`crate::retry`]); it only turns untrusted bytes into bounded values or a clear error.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Largest response body read from either API. An Okta page of 500 app users with
/// `expand=user` is about 1.5 MB, a SCIM page of 100 users about 60 kB; 32 MiB leaves a wide
/// margin for large custom profiles while keeping a hostile answer from taking the process to
/// gigabytes (the Kubernetes memory limit would turn that into an OOM-kill loop).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Longest wait any server may ask of us in one hint (`Retry-After`, a rate-limit reset, a token
/// lifetime is clamped separately): a longer one is treated as this.
pub const MAX_HINT: Duration = Duration::from_secs(3600);

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The answer is (or declared itself) larger than the cap. Not retried blindly: the caller
    /// decides, but a server that sends this once usually sends it again.
    TooLarge {
        /// `Content-Length`, when the server declared one above the cap.
        declared: Option<u64>,
        cap: usize,
    },
    /// The connection failed while the body was being read.
    Transport(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge {
                declared: Some(n),
                cap,
            } => write!(
                f,
                "the answer declares {n} bytes, more than the {cap}-byte limit on a response body"
            ),
            BodyError::TooLarge {
                declared: None,
                cap,
            } => write!(
                f,
                "the answer is longer than the {cap}-byte limit on a response body; reading stopped"
            ),
            BodyError::Transport(e) => write!(f, "reading the answer failed: {e}"),
        }
    }
}

/// Reads `response`'s body, refusing a declared `Content-Length` above `cap` before reading
/// anything and stopping a stream (chunked, or lying about its length) as soon as it passes
/// `cap`. Memory used is at most `cap` plus one chunk.
pub async fn read_body(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if let Some(n) = response.content_length() {
        if n > cap as u64 {
            return Err(BodyError::TooLarge {
                declared: Some(n),
                cap,
            });
        }
    }
    // Pre-size from a trustworthy (already checked) length, but never beyond 1 MiB up front.
    let hint = response
        .content_length()
        .map_or(0, |n| n.min(1 << 20) as usize);
    let mut body = Vec::with_capacity(hint);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(BodyError::TooLarge {
                declared: None,
                cap,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A number of seconds from an untrusted source as a `Duration`, clamped to `[0, max]`.
/// Non-finite, negative or absurd values never panic (`Duration::from_secs_f64` would).
pub fn secs_clamped(secs: f64, max: Duration) -> Duration {
    if !secs.is_finite() || secs <= 0.0 {
        return Duration::ZERO;
    }
    if secs >= max.as_secs_f64() {
        return max;
    }
    Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, judged against `now`
/// (preferably the server's own `Date`). Clamped to [`MAX_HINT`]; a date in the past is zero;
/// anything unparseable is `None` (the caller falls back to its backoff).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<f64>() {
        return secs.is_finite().then(|| secs_clamped(secs, MAX_HINT));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some(until(when, now, MAX_HINT))
}

/// Time from `now` until `when`, zero when `when` has passed, at most `max`. Never panics, even
/// for dates at the ends of chrono's range.
pub fn until(when: DateTime<Utc>, now: DateTime<Utc>, max: Duration) -> Duration {
    match when.signed_duration_since(now).to_std() {
        Ok(d) => d.min(max),
        Err(_) => Duration::ZERO,
    }
}

/// `now + d` that cannot overflow: `d` is clamped to `max`, and if even that instant cannot be
/// represented (a clock near the end of its range), `now` itself.
pub fn instant_after(now: std::time::Instant, d: Duration, max: Duration) -> std::time::Instant {
    now.checked_add(d.min(max)).unwrap_or(now)
}

/// `t + d` for a wall-clock time, saturating at chrono's range instead of panicking.
pub fn time_after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
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
    fn retry_after_takes_seconds_or_an_http_date_and_never_panics() {
        let now = t("2026-12-01T10:00:00Z");
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("1e30", now), Some(MAX_HINT));
        assert_eq!(parse_retry_after("-5", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("inf", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_HINT)
        );
    }

    #[test]
    fn clamped_seconds_cover_the_whole_f64_range() {
        let max = Duration::from_secs(60);
        for v in [f64::MAX, f64::MIN, f64::NAN, f64::INFINITY, -0.0, 1e-300] {
            assert!(secs_clamped(v, max) <= max);
        }
        assert_eq!(secs_clamped(2.0, max), Duration::from_secs(2));
    }

    #[test]
    fn time_arithmetic_saturates_at_the_ends_of_the_range() {
        let now = Utc::now();
        assert_eq!(
            time_after(now, Duration::from_secs(u64::MAX)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(until(DateTime::<Utc>::MAX_UTC, now, MAX_HINT), MAX_HINT);
        assert_eq!(
            until(DateTime::<Utc>::MIN_UTC, now, MAX_HINT),
            Duration::ZERO
        );
        let i = std::time::Instant::now();
        assert!(instant_after(i, Duration::from_secs(u64::MAX), MAX_HINT) >= i);
    }
}
