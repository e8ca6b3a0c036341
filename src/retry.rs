//! The one retry loop both API clients use: exponential backoff with jitter from the `backoff`
//! crate, stretched to honour a server's `Retry-After` (or Okta's rate-limit reset). The caller
//! classifies each failed attempt; this module only decides how long to wait and when to stop.
//! It must not retry anything the caller marked permanent.
//!
//! Two bounds apply. The [`RetryPolicy`] bounds one request's retrying. A run budget
//! ([`with_run_budget`]) bounds the total time one run spends waiting between retries, summed
//! over all its requests: the daemon's scheduled runs carry one, so an outage fails a run
//! quickly and the next tick retries instead of one run backing off through many ticks. Code
//! outside a budget's scope (a one-shot `reconcile`, the event worker, tests) is bounded by the
//! policy alone.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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

/// The total time one run may spend waiting between retries, and what it has spent so far.
/// Shared by every request of the run, concurrent ones included (their waits add up).
#[derive(Debug)]
struct RunBudget {
    limit: Duration,
    /// Nanoseconds of waits paid so far (a `u64` of nanoseconds lasts 584 years).
    spent_nanos: AtomicU64,
    /// Whether the run has been told its budget is spent (logged once per run).
    warned: AtomicBool,
}

impl RunBudget {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            spent_nanos: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// Pays for `wait` if what is left covers it; otherwise pays nothing and says no.
    fn try_spend(&self, wait: Duration) -> bool {
        let limit = nanos(self.limit);
        let wait = nanos(wait);
        self.spent_nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spent| {
                spent.checked_add(wait).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn spent(&self) -> Duration {
        Duration::from_nanos(self.spent_nanos.load(Ordering::SeqCst))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

tokio::task_local! {
    /// The budget of the run this task is executing, if any.
    static RUN_BUDGET: Arc<RunBudget>;
}

/// Runs `fut` with a run budget of `limit`: every [`retry`] loop polled inside it (in the same
/// task; a spawned task is outside the scope) draws its waits from that one budget, and a
/// request whose next wait the budget cannot pay gives up at once with its last error.
pub async fn with_run_budget<F: Future>(limit: Duration, fut: F) -> F::Output {
    RUN_BUDGET.scope(Arc::new(RunBudget::new(limit)), fut).await
}

/// Whether the current run (if it has a budget) can pay for `wait`; pays for it if so.
fn run_budget_allows(api: &str, wait: Duration) -> bool {
    RUN_BUDGET
        .try_with(|b| {
            if b.try_spend(wait) {
                return true;
            }
            if !b.warned.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    api,
                    budget_seconds = b.limit.as_secs_f64(),
                    spent_seconds = b.spent().as_secs_f64(),
                    "this run has spent its retry budget of {} s: a request that fails now is \
                     not retried in this run, and the next scheduled run tries again",
                    b.limit.as_secs_f64()
                );
            }
            false
        })
        // No budget in scope: only the policy bounds the retrying.
        .unwrap_or(true)
}

/// Runs `op` until it succeeds, fails permanently, or the policy (or the run's budget, see
/// [`with_run_budget`]) is exhausted; returns the last error in the latter cases. `api` labels
/// the retry metric (`okta` or `scim`).
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
                if !run_budget_allows(api, wait) {
                    return Err(err);
                }
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

    /// Always transient, with a server hint that dominates the policy's own (tiny) backoff, so
    /// every wait is exactly `hint`.
    async fn always_503(
        calls: &AtomicU32,
        hint: Duration,
        m: &Metrics,
    ) -> Result<(), &'static str> {
        let policy = RetryPolicy {
            initial_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(2),
            ..RetryPolicy::fast()
        };
        retry(&policy, m, "okta", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Attempt::Transient {
                err: "503",
                retry_after: Some(hint),
            })
        })
        .await
    }

    fn spent() -> Duration {
        RUN_BUDGET.with(|b| b.spent())
    }

    #[tokio::test]
    async fn a_runs_waits_add_up_over_its_requests() {
        let hint = Duration::from_millis(20);
        let m = Metrics::new();
        with_run_budget(Duration::from_secs(10), async {
            for _ in 0..2 {
                let n = AtomicU32::new(0);
                let r: Result<u32, &str> = retry(&RetryPolicy::fast(), &m, "scim", || async {
                    match n.fetch_add(1, Ordering::SeqCst) {
                        0 | 1 => Err(Attempt::Transient {
                            err: "503",
                            retry_after: Some(hint),
                        }),
                        k => Ok(k),
                    }
                })
                .await;
                assert_eq!(r, Ok(2), "well inside the budget: retried as before");
            }
            assert_eq!(spent(), hint * 4, "two requests, two waits each");
        })
        .await;
    }

    #[tokio::test]
    async fn a_wait_the_runs_budget_cannot_pay_ends_the_retrying_with_the_last_error() {
        let hint = Duration::from_millis(30);
        let m = Metrics::new();
        let calls = AtomicU32::new(0);
        with_run_budget(Duration::from_millis(100), async {
            // 3 waits (90 ms) fit, a 4th would not: 4 attempts instead of the policy's 8.
            assert_eq!(always_503(&calls, hint, &m).await, Err("503"));
            assert_eq!(calls.load(Ordering::SeqCst), 4);
            assert_eq!(spent(), hint * 3);
            // The budget is the run's: a later request of the same run is not retried at all.
            calls.store(0, Ordering::SeqCst);
            assert_eq!(always_503(&calls, hint, &m).await, Err("503"));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        })
        .await;
        assert!(m
            .encode()
            .contains("okta_postman_sync_retries_total{api=\"okta\"} 3"));
    }

    #[tokio::test]
    async fn concurrent_requests_of_a_run_share_its_budget() {
        let hint = Duration::from_millis(30);
        let m = Metrics::new();
        let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
        with_run_budget(Duration::from_millis(100), async {
            let (ra, rb) = tokio::join!(always_503(&a, hint, &m), always_503(&b, hint, &m));
            assert_eq!((ra, rb), (Err("503"), Err("503")));
            // Three waits paid in all, whichever request paid them; each request ends with one
            // attempt more than the waits it paid.
            assert_eq!(spent(), hint * 3);
            assert_eq!(a.load(Ordering::SeqCst) + b.load(Ordering::SeqCst), 5);
        })
        .await;
    }

    #[tokio::test]
    async fn without_a_run_budget_only_the_policy_bounds_the_retrying() {
        let m = Metrics::new();
        let calls = AtomicU32::new(0);
        assert!(RUN_BUDGET.try_with(|_| ()).is_err(), "no budget in scope");
        assert_eq!(
            always_503(&calls, Duration::from_millis(30), &m).await,
            Err("503")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 8, "the policy's max_attempts");
    }

    #[test]
    fn a_budget_never_pays_more_than_its_limit() {
        let b = RunBudget::new(Duration::from_secs(5));
        assert!(b.try_spend(Duration::from_secs(3)));
        assert!(!b.try_spend(Duration::from_secs(3)), "3 + 3 > 5");
        assert!(b.try_spend(Duration::from_secs(2)), "exactly the limit");
        assert!(!b.try_spend(Duration::from_nanos(1)));
        assert!(!b.try_spend(Duration::MAX), "no overflow");
        assert_eq!(b.spent(), Duration::from_secs(5));
    }
}
