//! Assembles the program from a validated [`Config`]: reads the secrets once, builds the Okta and
//! Postman clients, opens the store (read-only, or read-write under the single-writer lock) and
//! builds the [`Engine`]. Every command, the demo and the tests assemble through here
//! (zero-to-production's `startup.rs`), so there is one way the pieces fit together.
//!
//! This module must not print, parse the command line, or decide exit codes: it returns a
//! [`BootstrapError`] and `cmd` decides what it means for the process.

use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::okta::{OktaAuth, OktaClient, OktaClientConfig, OktaError};
use crate::retry::RetryPolicy;
use crate::scim::{ScimClient, ScimError};
use crate::store::{StateLock, Store, StoreError, StoreHandle};
use crate::sync::Engine;

/// Why the program could not be assembled. `Config` is the operator's to fix (a secret that is
/// missing or unreadable); the others are the environment's (a store in use, a client that cannot
/// start).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Okta(#[from] OktaError),
    #[error(transparent)]
    Scim(#[from] ScimError),
}

/// The credentials of both sides, read once. `Debug` shows no secret (both redact themselves).
#[derive(Clone, Debug)]
pub struct Secrets {
    pub okta: OktaAuth,
    pub postman_api_key: SecretString,
}

impl Secrets {
    /// Reads the Okta credential `[okta] auth` names and the Postman SCIM key.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        Ok(Self {
            okta: config.okta.load_auth()?,
            postman_api_key: config.postman.load_api_key()?,
        })
    }
}

/// What a command that runs the engine holds: the engine and, when it writes, the single-writer
/// lock, which lives as long as this value.
pub struct App {
    pub config: Arc<Config>,
    pub engine: Engine,
    pub lock: Option<StateLock>,
}

/// Reads the secrets, opens the store (read-write under the lock when `writable`) and builds the
/// engine, in that order: a missing or empty secret is reported before the state file is created
/// or touched.
pub fn assemble(config: Arc<Config>, writable: bool) -> Result<App, BootstrapError> {
    assemble_with(config, writable, RetryPolicy::default())
}

/// [`assemble`] for the daemon: its retry budget follows the schedule ([`daemon_retry`]), so
/// an outage costs a run at most about one period and the next tick tries again.
pub fn assemble_daemon(config: Arc<Config>) -> Result<App, BootstrapError> {
    let retry = daemon_retry(&config.sync.schedule, chrono::Utc::now());
    assemble_with(config, true, retry)
}

/// The daemon's retry policy. A one-shot `reconcile` may retry a request for up to 5 minutes;
/// in the daemon that would keep a run in flight long after the next ticks (they are skipped
/// while it runs), so after an outage the first change could wait several periods. Each
/// request's retrying is bounded by [`daemon_retry_budget`] instead, and no single wait exceeds
/// half of it: the next tick retries. (Each scheduled run's retrying, over all its requests, is
/// bounded by the same value: see `RunOptions::retry_budget`.)
pub fn daemon_retry(schedule: &cron::Schedule, now: chrono::DateTime<chrono::Utc>) -> RetryPolicy {
    let default = RetryPolicy::default();
    let budget = daemon_retry_budget(schedule, now);
    RetryPolicy {
        max_elapsed: budget,
        max_wait: default.max_wait.min(budget / 2),
        max_interval: default.max_interval.min(budget / 2),
        ..default
    }
}

/// How long the daemon retries, for one request and for one scheduled run in all: the
/// schedule's period (the time between the next two ticks after `now`), at least 5 s and at
/// most the one-shot budget (5 minutes). A schedule with fewer than two future ticks gets the
/// one-shot budget.
pub fn daemon_retry_budget(
    schedule: &cron::Schedule,
    now: chrono::DateTime<chrono::Utc>,
) -> std::time::Duration {
    let one_shot = RetryPolicy::default().max_elapsed;
    let mut ticks = schedule.after(&now);
    let period = match (ticks.next(), ticks.next()) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or(one_shot),
        _ => one_shot,
    };
    period.clamp(std::time::Duration::from_secs(5), one_shot)
}

fn assemble_with(
    config: Arc<Config>,
    writable: bool,
    retry: RetryPolicy,
) -> Result<App, BootstrapError> {
    let secrets = Secrets::load(&config)?;
    let (store, lock) = open_store(&config.sync.state_path, writable)?;
    let engine = build_engine_with(
        Arc::clone(&config),
        secrets,
        store,
        writable,
        Arc::new(Metrics::new()),
        retry,
    )?;
    Ok(App {
        config,
        engine,
        lock,
    })
}

/// Opens the store: read-only (dry runs; in memory when the file does not exist yet, so a dry
/// run creates nothing), or read-write under the single-writer lock.
pub fn open_store(
    path: &Path,
    writable: bool,
) -> Result<(StoreHandle, Option<StateLock>), StoreError> {
    if !writable {
        let store = match Store::open_read_only(path)? {
            Some(s) => s,
            None => Store::in_memory()?,
        };
        return Ok((StoreHandle::new(store), None));
    }
    // The lock first: a second process must not open (and migrate) a state another one owns.
    let lock = StateLock::acquire(path)?;
    let store = Store::open(path)?;
    Ok((StoreHandle::new(store), Some(lock)))
}

/// Builds the clients and the engine, reading the secrets from the config's sources (tests and
/// benches, which have a store of their own).
pub fn build_engine(
    config: Arc<Config>,
    store: StoreHandle,
    writable: bool,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
) -> Result<Engine, BootstrapError> {
    let secrets = Secrets::load(&config)?;
    build_engine_with(config, secrets, store, writable, metrics, retry)
}

/// Builds the clients and the engine with the secrets in hand (the demo has its own).
pub fn build_engine_with(
    config: Arc<Config>,
    secrets: Secrets,
    store: StoreHandle,
    writable: bool,
    metrics: Arc<Metrics>,
    retry: RetryPolicy,
) -> Result<Engine, BootstrapError> {
    let okta = OktaClient::new(
        config.okta.client_config(secrets.okta, retry.clone()),
        Arc::clone(&metrics),
    )?;
    let scim = ScimClient::new(
        config.postman.client_config(secrets.postman_api_key, retry),
        Arc::clone(&metrics),
    )?;
    Ok(Engine {
        mapping: config.okta.mapping.clone(),
        config,
        okta,
        scim,
        store,
        metrics,
        writable,
    })
}

/// The Okta client's configuration with its credential read (`check`, tests).
pub fn okta_client_config(
    config: &Config,
    retry: RetryPolicy,
) -> Result<OktaClientConfig, ConfigError> {
    Ok(config.okta.client_config(config.okta.load_auth()?, retry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::time::Duration;

    #[test]
    fn the_daemons_retry_budget_follows_the_schedule_period() {
        let now = chrono::Utc::now();
        let every_2s = cron::Schedule::from_str("*/2 * * * * *").expect("cron");
        let p = daemon_retry(&every_2s, now);
        assert_eq!(p.max_elapsed, Duration::from_secs(5), "at least 5 s");
        assert!(p.max_wait <= Duration::from_millis(2500));
        let every_minute = cron::Schedule::from_str("0 * * * * *").expect("cron");
        let p = daemon_retry(&every_minute, now);
        assert_eq!(p.max_elapsed, Duration::from_secs(60));
        assert_eq!(p.max_wait, Duration::from_secs(30));
        let hourly = cron::Schedule::from_str("0 0 * * * *").expect("cron");
        assert_eq!(
            daemon_retry(&hourly, now).max_elapsed,
            RetryPolicy::default().max_elapsed,
            "never more than the one-shot budget"
        );
    }

    #[test]
    fn a_scheduled_runs_budget_is_the_same_period_derived_value() {
        let now = chrono::Utc::now();
        for (cron, secs) in [
            ("*/2 * * * * *", 5),
            ("*/30 * * * * *", 30),
            ("0 * * * * *", 60),
            ("0 */15 * * * *", 300),
        ] {
            let s = cron::Schedule::from_str(cron).expect("cron");
            assert_eq!(
                daemon_retry_budget(&s, now),
                Duration::from_secs(secs),
                "{cron}"
            );
            assert_eq!(
                daemon_retry(&s, now).max_elapsed,
                daemon_retry_budget(&s, now)
            );
        }
        // A schedule with a single future tick has no period: the one-shot budget.
        let once = cron::Schedule::from_str("0 0 0 1 1 * 2099").expect("cron");
        assert_eq!(
            daemon_retry_budget(&once, now),
            RetryPolicy::default().max_elapsed
        );
    }
}
