//! The one retry loop both API clients use: exponential backoff with jitter from the `backoff`
//! crate, stretched to honour a server's `Retry-After` (or Okta's rate-limit reset). The caller
//! classifies each failed attempt; this module only decides how long to wait and when to stop.
//! It must not retry anything the caller marked permanent.

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

use crate::metrics::Metrics;

/// How a failed attempt should be treated.
#[derive(Debug)]
pub enum Attempt<E> {
    /// Retrying cannot help (4xx other than 429, decode errors) or is unsafe (an ambiguous
    /// non-idempotent call): give up now.
    Permanent(E),
    /// Retrying may help (429, 5xx, timeouts). `retry_after` is the server's hint, if any.
    Transient {
        err: E,
        retry_after: Option<Duration>,
    },
}

/// Bounds of the retry loop.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Stop retrying once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    /// Longest single wait, even when the server asks for more.
    pub max_wait: Duration,
    /// At most this many attempts in all (the first one included).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(250),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            max_wait: Duration::from_secs(120),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// A fast policy for tests: tiny waits, same logic.
    pub fn fast() -> Self {
        Self {
            initial_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(20),
            max_wait: Duration::from_millis(200),
            max_attempts: 8,
        }
    }

    fn backoff(&self) -> ExponentialBackoff {
        let mut b = ExponentialBackoff {
            initial_interval: self.initial_interval,
            max_interval: self.max_interval,
            max_elapsed_time: Some(self.max_elapsed),
            randomization_factor: 0.5,
            multiplier: 2.0,
            ..ExponentialBackoff::default()
        };
        // The first wait is drawn from `current_interval`, which the struct update above left at
        // the crate's default (500 ms): `reset` starts it at our `initial_interval` (and restarts
        // the elapsed-time clock).
        b.reset();
        b
    }
}

/// Runs `op` until it succeeds, fails permanently, or the policy is exhausted; returns the last
/// error in the latter cases. `api` labels the retry metric (`okta` or `scim`).
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    metrics: &Metrics,
    api: &str,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt<E>>>,
{
    let mut backoff = policy.backoff();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(Attempt::Permanent(e)) => return Err(e),
            Err(Attempt::Transient { err, retry_after }) => {
                if attempts >= policy.max_attempts {
                    return Err(err);
                }
                let Some(delay) = backoff.next_backoff() else {
                    return Err(err);
                };
                let wait = retry_after
                    .map_or(delay, |ra| ra.max(delay))
                    .min(policy.max_wait);
                metrics.retry(api);
                tracing::debug!(
                    api,
                    attempt = attempts,
                    wait_ms = wait.as_millis() as u64,
                    "retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let m = Metrics::new();
        let r: Result<u32, &str> = retry(&RetryPolicy::fast(), &m, "scim", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                Err(Attempt::Transient {
                    err: "503",
                    retry_after: None,
                })
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(r, Ok(2));
        assert!(m
            .encode()
            .contains("okta_postman_sync_retries_total{api=\"scim\"} 2"));
    }

    #[test]
    fn the_first_wait_follows_the_policys_initial_interval() {
        let policy = RetryPolicy {
            initial_interval: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let first = policy.backoff().next_backoff().expect("a first wait");
        // 10 ms with the ±50 % jitter, not the backoff crate's default of 500 ms.
        assert!(first <= Duration::from_millis(15), "{first:?}");
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let m = Metrics::new();
        let r: Result<(), &str> = retry(&RetryPolicy::fast(), &m, "scim", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::Permanent("400"))
        })
        .await;
        assert_eq!(r, Err("400"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let m = Metrics::new();
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::fast()
        };
        let r: Result<(), &str> = retry(&policy, &m, "okta", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::Transient {
                err: "500",
                retry_after: Some(Duration::from_millis(1)),
            })
        })
        .await;
        assert_eq!(r, Err("500"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
