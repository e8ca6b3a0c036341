//! What the daemon benchmarks (`events`, `outage`) share: the two simulators on 127.0.0.1 with
//! their limits lifted, the secret files, the config around them, the Okta users, and the engine
//! converged by a first full run. Each benchmark adds only what it measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use okta_postman_sync::bootstrap::build_engine;
use okta_postman_sync::config::Config;
use okta_postman_sync::metrics::Metrics;
use okta_postman_sync::retry::RetryPolicy;
use okta_postman_sync::store::{Store, StoreHandle};
use okta_postman_sync::sync::{Engine, RunOptions};
use okta_postman_sync_sim::okta::{FakeOkta, OktaSimConfig, UserSpec};
use okta_postman_sync_sim::postman::{FakePostman, PostmanSimConfig};
use okta_postman_sync_sim::OktaUserId;
use tokio_util::sync::CancellationToken;

const OKTA_TOKEN: &str = "bench-okta-token-0123456789";
const POSTMAN_KEY: &str = "bench-postman-key-abcdef";

/// Both fakes and the directory holding the secrets and the state database.
pub struct Sims {
    pub okta: Arc<FakeOkta>,
    pub postman: FakePostman,
    pub dir: tempfile::TempDir,
    /// Postman's writes per minute, enforced by the fake and configured in the daemon.
    pub writes_per_minute: u32,
}

impl Sims {
    /// Starts the fakes (Okta's buckets lifted, Postman enforcing `writes_per_minute`) and
    /// writes the secret files.
    pub async fn start(writes_per_minute: u32) -> Sims {
        let okta = Arc::new(
            FakeOkta::start(OktaSimConfig {
                token: OKTA_TOKEN.to_string().into(),
                apps_limit_per_minute: 1_000_000,
                groups_limit_per_minute: 1_000_000,
                ..OktaSimConfig::default()
            })
            .await
            .expect("okta"),
        );
        let postman = FakePostman::start(PostmanSimConfig {
            api_key: POSTMAN_KEY.to_string().into(),
            writes_per_minute,
            reads_per_minute: 1_000_000,
            ..PostmanSimConfig::default()
        })
        .await
        .expect("postman");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("okta-token"), OKTA_TOKEN).expect("token");
        std::fs::write(dir.path().join("postman-key"), POSTMAN_KEY).expect("key");
        Sims {
            okta,
            postman,
            dir,
            writes_per_minute,
        }
    }

    /// The daemon's config against both fakes: `schedule`, and `sections` (whole TOML sections
    /// such as `[events]`) before the log settings.
    pub fn config(&self, schedule: &str, sections: &str) -> Arc<Config> {
        let text = format!(
            r#"
[okta]
org_url = "{okta}"
app_id = "{app}"
api_token_file = "{dir}/okta-token"
[postman]
scim_url = "{scim}"
api_key_file = "{dir}/postman-key"
writes_per_minute = {limit}
reads_per_minute = 100000
[sync]
state_path = "{dir}/state.db"
schedule = "{schedule}"
max_deactivations = 100000
{sections}
[log]
level = "error"
"#,
            okta = self.okta.base_url(),
            app = self.okta.app_id(),
            scim = self.postman.scim_url(),
            dir = self.dir.path().display(),
            limit = self.writes_per_minute,
        );
        Arc::new(Config::parse(&text).expect("config"))
    }

    /// `n` Okta users `user{i}@example.com`, each assigned to the app directly.
    pub fn populate(&self, n: usize) -> Vec<OktaUserId> {
        (0..n)
            .map(|i| {
                let id = self.okta.add_user(UserSpec::new(
                    &format!("user{i}@example.com"),
                    &format!("User{i}"),
                    "Bench",
                ));
                self.okta.assign_user(&id).expect("assign");
                id
            })
            .collect()
    }

    /// The engine over the state database in `dir`, with `retry`, after a first full run has
    /// converged Postman (asserted); returns how long that run took.
    pub async fn converged_engine(
        &self,
        config: Arc<Config>,
        retry: RetryPolicy,
    ) -> (Arc<Engine>, Duration) {
        let store = Store::open(&self.dir.path().join("state.db")).expect("store");
        let engine = Arc::new(
            build_engine(
                config,
                StoreHandle::new(store),
                true,
                Arc::new(Metrics::new()),
                retry,
            )
            .expect("engine"),
        );
        let started = Instant::now();
        let first = engine
            .run(
                &RunOptions {
                    full: true,
                    ..RunOptions::default()
                },
                &CancellationToken::new(),
                None,
            )
            .await;
        assert_eq!(first.outcome.as_str(), "ok", "{:?}", first.errors);
        (engine, started.elapsed())
    }
}
