//! Shared harness for the end-to-end tests: the Okta and Postman simulators on 127.0.0.1:0, a
//! temporary state directory with secret files, a config pointing at all of it, and the real
//! engine built exactly as the binary builds it.
#![allow(dead_code)]

pub mod canned;

use std::path::PathBuf;
use std::sync::Arc;

use okta_postman_sync::bootstrap::build_engine;
use okta_postman_sync::config::Config;
use okta_postman_sync::metrics::Metrics;
use okta_postman_sync::retry::RetryPolicy;
use okta_postman_sync::store::Store;
use okta_postman_sync::sync::{Engine, RunOptions, RunReport};
use okta_postman_sync_sim::okta::{FakeOkta, OktaSimConfig, UserSpec};
use okta_postman_sync_sim::postman::{FakePostman, PostmanSimConfig, SimScimUser};
use okta_postman_sync_sim::OktaUserId;
use tokio_util::sync::CancellationToken;

pub const OKTA_TOKEN: &str = "test-okta-token-0123456789";
pub const POSTMAN_KEY: &str = "test-postman-key-abcdef";

pub struct World {
    pub okta: FakeOkta,
    pub postman: FakePostman,
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to the generated config (sections must not repeat).
    pub extra_sync: String,
    pub extra_postman: String,
    pub extra_okta: String,
    /// `[postman] timeout` (fault tests shorten it so held responses time out quickly).
    pub postman_timeout: String,
    /// `[okta]` auth lines used instead of `api_token_file` (see [`World::use_oauth`]).
    pub okta_auth: Option<String>,
}

impl World {
    pub async fn new() -> World {
        Self::with(OktaSimConfig::default(), PostmanSimConfig::default()).await
    }

    pub async fn with(mut okta: OktaSimConfig, mut postman: PostmanSimConfig) -> World {
        okta.token = OKTA_TOKEN.to_string().into();
        postman.api_key = POSTMAN_KEY.to_string().into();
        let okta = FakeOkta::start(okta).await.expect("start fake Okta");
        let postman = FakePostman::start(postman)
            .await
            .expect("start fake Postman");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("okta-token"), format!("{OKTA_TOKEN}\n"))
            .expect("write token");
        std::fs::write(dir.path().join("postman-key"), POSTMAN_KEY).expect("write key");
        World {
            okta,
            postman,
            dir,
            extra_sync: String::new(),
            extra_postman: String::new(),
            extra_okta: String::new(),
            postman_timeout: "5s".into(),
            okta_auth: None,
        }
    }

    /// Authenticates to Okta as an OAuth service app: writes `private_pem` as the
    /// `private_key_file` and adds `lines` (client_id, key_id, scopes, dpop) to `[okta]`.
    /// Register the app in the fake with `self.okta.oauth().register_app(..)`.
    pub fn use_oauth(&mut self, private_pem: &str, lines: &str) {
        let path = self.dir.path().join("okta-oauth-key.pem");
        std::fs::write(&path, private_pem).expect("write private key");
        self.okta_auth = Some(format!(
            "auth = \"oauth\"\nprivate_key_file = \"{}\"\n{lines}",
            path.display()
        ));
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn config_text(&self) -> String {
        format!(
            r#"
[okta]
org_url = "{okta}"
app_id = "{app}"
{okta_auth}
{extra_okta}

[postman]
scim_url = "{scim}"
api_key_file = "{dir}/postman-key"
writes_per_minute = 6000
reads_per_minute = 6000
timeout = "{postman_timeout}"
{extra_postman}

[sync]
state_path = "{state}"
{extra_sync}

[log]
level = "warn"
"#,
            okta = self.okta.base_url(),
            app = self.okta.app_id(),
            dir = self.dir.path().display(),
            scim = self.postman.scim_url(),
            state = self.state_path().display(),
            okta_auth = self.okta_auth.clone().unwrap_or_else(|| format!(
                "api_token_file = \"{}/okta-token\"",
                self.dir.path().display()
            )),
            extra_okta = self.extra_okta,
            extra_postman = self.extra_postman,
            extra_sync = self.extra_sync,
            postman_timeout = self.postman_timeout,
        )
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, self.config_text()).expect("write config");
        path
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::parse(&self.config_text()).expect("valid test config"))
    }

    /// A fresh engine on the state file, like one process of the binary.
    pub fn engine(&self) -> Engine {
        let store = Store::open(&self.state_path()).expect("open store");
        build_engine(
            self.config(),
            okta_postman_sync::store::StoreHandle::new(store),
            true,
            Arc::new(Metrics::new()),
            RetryPolicy::fast(),
        )
        .expect("engine")
    }

    /// A fresh engine on the state file, built from this config text instead of
    /// [`World::config_text`] (for example with `scim_url` pointing somewhere else).
    pub fn engine_from(&self, config_text: &str) -> Engine {
        let store = Store::open(&self.state_path()).expect("open store");
        build_engine(
            Arc::new(Config::parse(config_text).expect("valid test config")),
            okta_postman_sync::store::StoreHandle::new(store),
            true,
            Arc::new(Metrics::new()),
            RetryPolicy::fast(),
        )
        .expect("engine")
    }

    /// An engine for dry runs: the store opened read-only (in memory when the file is missing).
    pub fn engine_dry(&self) -> Engine {
        let store = match Store::open_read_only(&self.state_path()).expect("open store") {
            Some(s) => s,
            None => Store::in_memory().expect("memory store"),
        };
        build_engine(
            self.config(),
            okta_postman_sync::store::StoreHandle::new(store),
            false,
            Arc::new(Metrics::new()),
            RetryPolicy::fast(),
        )
        .expect("engine")
    }

    pub async fn reconcile(&self, opts: RunOptions) -> RunReport {
        self.engine()
            .run(&opts, &CancellationToken::new(), None)
            .await
    }

    pub async fn run(&self) -> RunReport {
        self.reconcile(RunOptions::default()).await
    }

    pub async fn run_full(&self) -> RunReport {
        self.reconcile(RunOptions {
            full: true,
            ..RunOptions::default()
        })
        .await
    }

    /// Adds an Okta user `first.last@example.com`, assigned to nothing yet.
    fn okta_person(&self, first: &str, last: &str) -> OktaUserId {
        let email = format!(
            "{}.{}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        );
        self.okta.add_user(UserSpec::new(&email, first, last))
    }

    /// Adds and assigns an Okta user `first.last@example.com`.
    pub fn okta_user(&self, first: &str, last: &str) -> OktaUserId {
        let id = self.okta_person(first, last);
        self.okta.assign_user(&id).expect("assign");
        id
    }

    /// An Okta user `first.last@example.com` who has the app only through `group` (a member of
    /// it, not assigned directly).
    pub fn okta_group_member(
        &self,
        group: &okta_postman_sync_sim::OktaGroupId,
        first: &str,
        last: &str,
    ) -> OktaUserId {
        let id = self.okta_person(first, last);
        self.okta.add_member(group, &id).expect("member");
        id
    }

    pub fn member(&self, user_name: &str) -> Option<SimScimUser> {
        self.postman.user_by_name(user_name)
    }

    /// The Postman members of a group, by userName (a member with no account by its id).
    pub fn group_members(&self, group: &str) -> std::collections::BTreeSet<String> {
        let g = self
            .postman
            .group_by_name(group)
            .unwrap_or_else(|| panic!("Postman has no group {group}"));
        let users = self.postman.users();
        g.members
            .iter()
            .map(|id| {
                users
                    .iter()
                    .find(|u| &u.id == id)
                    .map(|u| u.user_name.clone())
                    .unwrap_or_else(|| id.to_string())
            })
            .collect()
    }

    /// Postman members by lowercase userName, failing on duplicates.
    pub fn members_without_duplicates(&self) -> std::collections::BTreeMap<String, SimScimUser> {
        let mut out = std::collections::BTreeMap::new();
        for u in self.postman.users() {
            let key = u.user_name.to_lowercase();
            assert!(
                out.insert(key.clone(), u).is_none(),
                "duplicate Postman user {key}"
            );
        }
        out
    }

    pub fn writes(&self) -> u64 {
        self.postman.stats().writes
    }

    pub fn reads(&self) -> u64 {
        self.postman.stats().reads
    }

    /// Asserts that the state database agrees with Postman: every snapshot row names an
    /// existing account with the same userName, names and active flag, no journal entry is left
    /// open, and no Postman account is linked twice. Returns the number of snapshot rows.
    pub fn assert_snapshot_matches_postman(&self) -> usize {
        let store = Store::open_read_only(&self.state_path())
            .expect("open state")
            .expect("state exists");
        let snapshot = store.snapshot().expect("snapshot");
        let by_id: std::collections::BTreeMap<String, SimScimUser> = self
            .postman
            .users()
            .into_iter()
            .map(|u| (u.id.to_string(), u))
            .collect();
        let mut linked = std::collections::BTreeSet::new();
        for m in snapshot.values() {
            let u = by_id.get(m.scim_id.as_str()).unwrap_or_else(|| {
                panic!("snapshot row {} names a missing Postman account", m.okta_id)
            });
            assert!(
                linked.insert(m.scim_id.to_string()),
                "{} linked twice",
                m.scim_id
            );
            assert_eq!(
                u.user_name.to_lowercase(),
                m.attrs.user_name.to_lowercase(),
                "userName of {}",
                m.okta_id
            );
            assert_eq!(
                u.given_name, m.attrs.given_name,
                "givenName of {}",
                m.okta_id
            );
            assert_eq!(
                u.family_name, m.attrs.family_name,
                "familyName of {}",
                m.okta_id
            );
            assert_eq!(u.active, m.active, "active of {}", m.okta_id);
        }
        let open = store
            .journal_counts()
            .expect("journal")
            .get("intended")
            .copied()
            .unwrap_or(0);
        assert_eq!(open, 0, "journal entries left open");
        snapshot.len()
    }

    /// Asserts that Postman holds exactly the desired members: each `(userName, given, family)`
    /// once and active, and nobody else but `others` (unmanaged accounts, compared by name).
    pub fn assert_postman_is(&self, desired: &[(String, String, String)], others: &[&str]) {
        let members = self.members_without_duplicates();
        for (email, given, family) in desired {
            let m = members
                .get(&email.to_lowercase())
                .unwrap_or_else(|| panic!("{email} is missing from Postman"));
            assert!(m.active, "{email} is not active");
            assert_eq!((&m.given_name, &m.family_name), (given, family), "{email}");
        }
        assert_eq!(
            members.len(),
            desired.len() + others.len(),
            "Postman has members beyond the desired ones"
        );
        for o in others {
            assert!(members.contains_key(*o), "unmanaged {o} is gone");
        }
    }
}
