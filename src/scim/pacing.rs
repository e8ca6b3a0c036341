//! Proactive pacing of SCIM requests: two token buckets, one for writes (POST, PUT, PATCH, DELETE)
//! and one for reads (GET), that every request waits on before it is sent, so a well-behaved run
//! stays under Postman's per-team limits (docs/postman-scim.md#rate-limits: 180 writes and 300
//! reads per minute) and never sees a 429. This module only waits; it must not send anything or
//! retry anything (429s that still happen are the retry loop's business).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::error::ScimError;
use crate::metrics::Metrics;

/// Share of the documented per-minute limit we allow ourselves, to leave room for clock skew
/// between our bucket and the server's window.
const HEADROOM: f64 = 0.98;

/// Which bucket a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bucket {
    Read,
    Write,
}

impl Bucket {
    pub(crate) fn for_method(method: &str) -> Self {
        if method == "GET" {
            Bucket::Read
        } else {
            // Postman's limits do not name DELETE; counting it as a write is the safe side
            // (docs/postman-scim.md#rate-limit-headers-and-delete).
            Bucket::Write
        }
    }
}

/// The two buckets. One per client, shared by its clones through the client's `Arc`.
pub(crate) struct Pacer {
    reads: DefaultDirectRateLimiter,
    writes: DefaultDirectRateLimiter,
}

impl Pacer {
    pub(crate) fn new(reads_per_minute: u32, writes_per_minute: u32) -> Result<Self, ScimError> {
        Ok(Self {
            reads: RateLimiter::direct(quota(reads_per_minute, "reads_per_minute")?),
            writes: RateLimiter::direct(quota(writes_per_minute, "writes_per_minute")?),
        })
    }

    /// Waits until the bucket allows one more request, and records the time spent waiting.
    pub(crate) async fn wait(&self, bucket: Bucket, metrics: &Metrics) {
        let limiter = match bucket {
            Bucket::Read => &self.reads,
            Bucket::Write => &self.writes,
        };
        let started = Instant::now();
        limiter.until_ready().await;
        metrics.rate_limit_wait("scim", started.elapsed().as_secs_f64());
    }
}

/// A bucket that refills at `HEADROOM` of `per_minute` with a burst of one: Postman counts over
/// a sliding 60 s window, so a burst would let a restart or a second window overlap exceed it.
fn quota(per_minute: u32, name: &str) -> Result<Quota, ScimError> {
    if per_minute == 0 {
        return Err(ScimError::Config(format!("{name} must be at least 1")));
    }
    let period = Duration::from_secs_f64(60.0 / (f64::from(per_minute) * HEADROOM));
    let quota = Quota::with_period(period)
        .ok_or_else(|| ScimError::Config(format!("{name} gives an empty refill period")))?;
    Ok(quota.allow_burst(NonZeroU32::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_and_patches_draw_from_the_write_bucket() {
        assert_eq!(Bucket::for_method("GET"), Bucket::Read);
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(Bucket::for_method(m), Bucket::Write);
        }
    }

    #[test]
    fn a_zero_limit_is_a_configuration_error() {
        assert!(matches!(Pacer::new(0, 180), Err(ScimError::Config(_))));
        assert!(Pacer::new(300, 180).is_ok());
    }

    #[test]
    fn the_refill_period_leaves_two_percent_headroom() {
        let q = quota(120, "w").expect("valid");
        // 120/min at 98% is one token every 60/117.6 s.
        let expected = Duration::from_secs_f64(60.0 / 117.6);
        let got = q.replenish_interval();
        assert!(
            got >= expected - Duration::from_micros(10)
                && got <= expected + Duration::from_micros(10)
        );
        assert_eq!(q.burst_size().get(), 1);
    }
}
