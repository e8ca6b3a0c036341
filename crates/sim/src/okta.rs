//! A stateful fake of the parts of the Okta Management API the daemon reads (docs/okta-api.md): one
//! app, its app users (direct and group-derived), its group assignments, groups and their members,
//! with SSWS auth, cursor paging through `Link` headers (docs/okta-api.md#paging), per-bucket rate
//! limits with the `X-Rate-Limit-*` headers (docs/okta-api.md#rate-limits), Okta's error bodies
//! (docs/okta-api.md#errors), and injected faults. Tests and the demo change the org through the
//! mutators on [`FakeOkta`]. It must stay read-only over HTTP (the daemon never writes to Okta) and
//! must not share wire types with the product's `okta` module: it is an independent rendering of
//! the documents, so the client's mistakes are not mirrored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{json, Value};

use super::faults::{self, Fault, FaultConfig, FaultInjector, Rejection};
use super::ids::{OktaGroupId, OktaUserId};
use super::okta_oauth::{self, OAuthSim};
use super::{lock, now_timestamp, parse_query, RequestCounters, Server, SimError};

/// The System Log and `GET /api/v1/users/{id}` (issue 14).
#[path = "okta_events.rs"]
mod events;

const SERVICE: &str = "okta";

/// How the fake Okta behaves. Every field is public; start from `Default`.
#[derive(Clone, Debug)]
pub struct OktaSimConfig {
    /// The id of the one app (the Postman app) this org has.
    pub app_id: String,
    /// Accepted as `Authorization: SSWS <token>` (docs/okta-api.md#api-tokens-ssws).
    pub token: SecretString,
    /// A token that authenticates but lacks permission: every request gets 403 `E0000006`.
    pub no_permission_token: Option<SecretString>,
    /// Emit `self` and `next` in one comma-joined `Link` header instead of two header lines
    /// (Okta documents separate lines; clients must accept both: docs/okta-api.md#paging).
    pub comma_joined_links: bool,
    /// Requests per window for the `/api/v1/apps*` bucket (historical default 100,
    /// docs/okta-api.md#rate-limits).
    pub apps_limit_per_minute: u32,
    /// Requests per window for the `/api/v1/groups*` bucket.
    pub groups_limit_per_minute: u32,
    /// Length of a rate-limit window (Okta: 60 s). Benchmarks shrink it.
    pub rate_window: Duration,
    /// Added to every request, to simulate real round trips.
    pub latency: Duration,
    pub faults: FaultConfig,
    /// Whether app users whose Okta user is DEPROVISIONED stay listed (with app-user status
    /// INACTIVE). Okta does not say
    /// (docs/okta-api.md#which-app-users-are-listed), so both cases can be tested.
    pub deactivated_users_listed: bool,
    /// Seed for generated ids, so a run's ids replay.
    pub seed: u64,
}

impl Default for OktaSimConfig {
    fn default() -> Self {
        Self {
            app_id: "0oa1postmansim0app01".to_string(),
            token: SecretString::from("sim-okta-token"),
            no_permission_token: None,
            comma_joined_links: false,
            apps_limit_per_minute: 100,
            groups_limit_per_minute: 500,
            rate_window: Duration::from_secs(60),
            latency: Duration::ZERO,
            faults: FaultConfig::default(),
            deactivated_users_listed: true,
            seed: 1,
        }
    }
}

/// A new Okta user for [`FakeOkta::add_user`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    /// `profile.login` and `profile.email` (and the app username once assigned).
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// Okta user status: ACTIVE, SUSPENDED, DEPROVISIONED, STAGED, PROVISIONED, ...
    pub status: String,
}

impl UserSpec {
    pub fn new(email: &str, first_name: &str, last_name: &str) -> Self {
        Self {
            email: email.to_string(),
            first_name: first_name.to_string(),
            last_name: last_name.to_string(),
            status: "ACTIVE".to_string(),
        }
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.status = status.to_string();
        self
    }
}

/// What [`FakeOkta::populate`] created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PopulateSummary {
    pub users: usize,
    pub app_users: usize,
    pub groups: usize,
    pub app_groups: usize,
    pub suspended: usize,
    pub deprovisioned: usize,
}

/// A snapshot of the fake's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OktaStats {
    pub requests: RequestCounters,
    /// Most requests counted in one window of the apps bucket.
    pub max_apps_requests_in_window: u64,
    /// Most requests counted in one window of the groups bucket.
    pub max_groups_requests_in_window: u64,
    /// Requests counted in each window of the apps bucket so far, oldest first (the current
    /// window last), so a benchmark can count the windows in which a client took more than its
    /// share.
    pub apps_requests_per_window: Vec<u64>,
}

struct SimUser {
    status: String,
    created: String,
    status_changed: String,
    last_updated: String,
    login: String,
    email: String,
    first_name: String,
    last_name: String,
    groups: BTreeSet<String>,
}

struct SimGroup {
    name: String,
    created: String,
    last_updated: String,
    last_membership_updated: String,
    members: BTreeSet<String>,
}

/// The app user record. Okta keeps its own copy of the username and app profile per assignment
/// (docs/okta-api.md#app-users); the mutators keep them in step the way a profile push would.
struct AppAssignment {
    status: String,
    created: String,
    last_updated: String,
    user_name: String,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
}

struct AppGroupAssignment {
    priority: u32,
    last_updated: String,
}

/// A fixed window counter, like Okta's per-minute buckets (counters typically reset every 60
/// seconds: docs/okta-api.md#rate-limits).
struct Bucket {
    limit: u32,
    window: Duration,
    started: Instant,
    started_epoch: f64,
    used: u32,
    max_used: u32,
    /// `used` of each window that has ended.
    past: Vec<u32>,
}

impl Bucket {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            started: Instant::now(),
            started_epoch: epoch_now(),
            used: 0,
            max_used: 0,
            past: Vec::new(),
        }
    }

    /// Counts one request; false when the bucket is exhausted.
    fn take(&mut self) -> bool {
        if self.started.elapsed() >= self.window {
            self.started = Instant::now();
            self.started_epoch = epoch_now();
            if self.used > 0 {
                self.past.push(self.used);
            }
            self.used = 0;
        }
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        self.max_used = self.max_used.max(self.used);
        true
    }

    fn headers(&self) -> RateHeaders {
        RateHeaders {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            reset: (self.started_epoch + self.window.as_secs_f64()).ceil() as u64,
        }
    }
}

#[derive(Clone, Copy)]
struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: u64,
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

struct OktaState {
    users: BTreeMap<String, SimUser>,
    groups: BTreeMap<String, SimGroup>,
    /// Listed app users, keyed (and so paged) by Okta user id.
    app_users: BTreeMap<String, AppAssignment>,
    direct: BTreeSet<String>,
    app_groups: BTreeMap<String, AppGroupAssignment>,
    failing_user_pages: BTreeSet<u32>,
    failing_group_members: BTreeSet<String>,
    id_rng: SmallRng,
    /// Creation sequence behind the ids; starts at a seed-dependent offset.
    id_seq: u64,
    error_seq: u64,
    log: events::SystemLog,
}

struct Inner {
    state: OktaState,
    stats: OktaStats,
    apps_bucket: Bucket,
    groups_bucket: Bucket,
    injector: FaultInjector,
    latency: Duration,
}

struct Shared {
    config: OktaSimConfig,
    base_url: String,
    inner: Mutex<Inner>,
    /// OAuth service apps, tokens and DPoP (okta_oauth.rs).
    oauth: Arc<OAuthSim>,
}

/// A running fake Okta org. Dropping it stops the server.
pub struct FakeOkta {
    shared: Arc<Shared>,
    server: Server,
}

impl FakeOkta {
    /// Binds `127.0.0.1:0` and serves the fake on the current tokio runtime.
    pub async fn start(config: OktaSimConfig) -> std::io::Result<FakeOkta> {
        let inner = Inner {
            state: OktaState {
                users: BTreeMap::new(),
                groups: BTreeMap::new(),
                app_users: BTreeMap::new(),
                direct: BTreeSet::new(),
                app_groups: BTreeMap::new(),
                failing_user_pages: BTreeSet::new(),
                failing_group_members: BTreeSet::new(),
                id_rng: SmallRng::seed_from_u64(config.seed),
                id_seq: 1_000_000_000 + (config.seed % 1_000) * 1_000_000_000,
                error_seq: 0,
                log: events::SystemLog::new(&config.app_id),
            },
            stats: OktaStats::default(),
            apps_bucket: Bucket::new(config.apps_limit_per_minute, config.rate_window),
            groups_bucket: Bucket::new(config.groups_limit_per_minute, config.rate_window),
            injector: FaultInjector::new(config.faults.clone()),
            latency: config.latency,
        };
        let mut shared_slot = None;
        let server = Server::start(|base_url| {
            let shared = Arc::new(Shared {
                config,
                base_url,
                inner: Mutex::new(inner),
                oauth: Arc::default(),
            });
            shared_slot = Some(Arc::clone(&shared));
            router(shared)
        })
        .await?;
        let shared = shared_slot.expect("Server::start calls make_router before returning Ok");
        Ok(FakeOkta { shared, server })
    }

    /// `http://127.0.0.1:PORT`: the Okta org URL.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn app_id(&self) -> String {
        self.shared.config.app_id.clone()
    }

    /// The OAuth authorization server: service apps, token lifetime, DPoP nonces.
    pub fn oauth(&self) -> &OAuthSim {
        &self.shared.oauth
    }

    /// Stops the server (also done on drop).
    pub fn shutdown(mut self) {
        self.server.shutdown();
    }

    fn with<R>(&self, f: impl FnOnce(&mut OktaState) -> R) -> R {
        f(&mut lock(&self.shared.inner).state)
    }

    pub fn stats(&self) -> OktaStats {
        let inner = lock(&self.shared.inner);
        let mut stats = inner.stats.clone();
        stats.max_apps_requests_in_window = u64::from(inner.apps_bucket.max_used);
        stats.max_groups_requests_in_window = u64::from(inner.groups_bucket.max_used);
        let apps = &inner.apps_bucket;
        stats.apps_requests_per_window = apps
            .past
            .iter()
            .chain((apps.used > 0).then_some(&apps.used))
            .map(|&n| u64::from(n))
            .collect();
        stats
    }

    /// Replaces the fault mix (and reseeds the RNG) while the server runs.
    pub fn set_faults(&self, faults: FaultConfig) {
        lock(&self.shared.inner).injector = FaultInjector::new(faults);
    }

    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.inner).latency = latency;
    }

    /// Page `n` (1 = the first request, without `after`) of the app users list answers 500
    /// every time until [`FakeOkta::clear_targeted_faults`].
    pub fn fail_users_page(&self, n: u32) {
        self.with(|s| s.failing_user_pages.insert(n));
    }

    /// Every page of this group's members answers 500 until cleared.
    pub fn fail_group_members(&self, group: &OktaGroupId) {
        self.with(|s| s.failing_group_members.insert(group.0.clone()));
    }

    pub fn clear_targeted_faults(&self) {
        self.with(|s| {
            s.failing_user_pages.clear();
            s.failing_group_members.clear();
        });
    }

    /// Creates an Okta user (not assigned to the app).
    pub fn add_user(&self, spec: UserSpec) -> OktaUserId {
        self.with(|s| OktaUserId(s.insert_user(spec)))
    }

    /// Assigns the user to the app directly (scope USER).
    pub fn assign_user(&self, id: &OktaUserId) -> Result<(), SimError> {
        self.with(|s| {
            s.user(&id.0)?;
            s.direct.insert(id.0.clone());
            s.refresh_app_user(&id.0);
            s.log
                .record("application.user_membership.add", &[("User", &id.0)], true);
            Ok(())
        })
    }

    /// Removes the direct assignment; the user stays an app user if a group still grants it.
    pub fn unassign_user(&self, id: &OktaUserId) -> Result<(), SimError> {
        self.with(|s| {
            s.user(&id.0)?;
            s.direct.remove(&id.0);
            s.refresh_app_user(&id.0);
            s.log.record(
                "application.user_membership.remove",
                &[("User", &id.0)],
                true,
            );
            Ok(())
        })
    }

    /// Suspended users keep their group and app assignments (docs/okta-api.md#statuses).
    pub fn suspend(&self, id: &OktaUserId) -> Result<(), SimError> {
        self.set_status(id, "SUSPENDED")
    }

    pub fn unsuspend(&self, id: &OktaUserId) -> Result<(), SimError> {
        self.set_status(id, "ACTIVE")
    }

    /// DEPROVISIONED: the app user becomes INACTIVE (or unlisted, see the config).
    pub fn deactivate(&self, id: &OktaUserId) -> Result<(), SimError> {
        self.set_status(id, "DEPROVISIONED")
    }

    /// Sets any Okta user status (STAGED, PROVISIONED, LOCKED_OUT, ...).
    pub fn set_status(&self, id: &OktaUserId, status: &str) -> Result<(), SimError> {
        self.with(|s| {
            let now = now_timestamp();
            let user = s.user_mut(&id.0)?;
            let event = match (user.status.as_str(), status) {
                (_, "SUSPENDED") => "user.lifecycle.suspend",
                ("SUSPENDED", "ACTIVE") => "user.lifecycle.unsuspend",
                ("DEPROVISIONED", "ACTIVE") => "user.lifecycle.reactivate",
                (_, "DEPROVISIONED") => "user.lifecycle.deactivate",
                _ => "user.lifecycle.activate",
            };
            user.status = status.to_string();
            user.status_changed = now.clone();
            user.last_updated = now.clone();
            if let Some(app_user) = s.app_users.get_mut(&id.0) {
                if status == "DEPROVISIONED" {
                    app_user.status = "INACTIVE".to_string();
                    app_user.last_updated = now;
                } else if app_user.status == "INACTIVE" {
                    app_user.status = "ACTIVE".to_string();
                    app_user.last_updated = now;
                }
            }
            s.log.record(event, &[("User", &id.0)], false);
            Ok(())
        })
    }

    /// Sets the app user's own status (ACTIVE, PROVISIONED, INACTIVE, STAGED, ...).
    pub fn set_app_user_status(&self, id: &OktaUserId, status: &str) -> Result<(), SimError> {
        self.with(|s| {
            let app_user = s.app_users.get_mut(&id.0).ok_or(SimError::UnknownUser {
                service: SERVICE,
                id: id.0.clone(),
            })?;
            app_user.status = status.to_string();
            app_user.last_updated = now_timestamp();
            Ok(())
        })
    }

    /// Changes the name in the Okta profile and the app profile.
    pub fn set_name(&self, id: &OktaUserId, first: &str, last: &str) -> Result<(), SimError> {
        self.with(|s| {
            let now = now_timestamp();
            let user = s.user_mut(&id.0)?;
            user.first_name = first.to_string();
            user.last_name = last.to_string();
            user.last_updated = now.clone();
            if let Some(app_user) = s.app_users.get_mut(&id.0) {
                app_user.first_name = Some(first.to_string());
                app_user.last_name = Some(last.to_string());
                app_user.last_updated = now;
            }
            s.log
                .record("user.account.update_profile", &[("User", &id.0)], false);
            Ok(())
        })
    }

    /// Changes login, email and the app username (and app profile email).
    pub fn set_email(&self, id: &OktaUserId, email: &str) -> Result<(), SimError> {
        self.with(|s| {
            let now = now_timestamp();
            let user = s.user_mut(&id.0)?;
            user.login = email.to_string();
            user.email = email.to_string();
            user.last_updated = now.clone();
            if let Some(app_user) = s.app_users.get_mut(&id.0) {
                app_user.user_name = email.to_string();
                app_user.email = Some(email.to_string());
                app_user.last_updated = now;
            }
            s.log
                .record("user.account.update_profile", &[("User", &id.0)], false);
            Ok(())
        })
    }

    /// Overrides (or removes, with `None`) the app profile's own name and email fields, so the
    /// app profile can differ from the Okta profile as it can in a real org.
    pub fn set_app_profile(
        &self,
        id: &OktaUserId,
        first: Option<&str>,
        last: Option<&str>,
        email: Option<&str>,
    ) -> Result<(), SimError> {
        self.with(|s| {
            let app_user = s.app_users.get_mut(&id.0).ok_or(SimError::UnknownUser {
                service: SERVICE,
                id: id.0.clone(),
            })?;
            app_user.first_name = first.map(str::to_string);
            app_user.last_name = last.map(str::to_string);
            app_user.email = email.map(str::to_string);
            s.log.record(
                "application.user_membership.update",
                &[("User", &id.0)],
                true,
            );
            Ok(())
        })
    }

    pub fn add_group(&self, name: &str) -> OktaGroupId {
        self.with(|s| OktaGroupId(s.insert_group(name)))
    }

    pub fn rename_group(&self, group: &OktaGroupId, name: &str) -> Result<(), SimError> {
        self.with(|s| {
            let g = s.group_mut(&group.0)?;
            g.name = name.to_string();
            g.last_updated = now_timestamp();
            Ok(())
        })
    }

    pub fn add_member(&self, group: &OktaGroupId, user: &OktaUserId) -> Result<(), SimError> {
        self.with(|s| {
            s.user(&user.0)?;
            let g = s.group_mut(&group.0)?;
            g.members.insert(user.0.clone());
            g.last_membership_updated = now_timestamp();
            s.user_mut(&user.0)?.groups.insert(group.0.clone());
            s.refresh_app_user(&user.0);
            s.log.record(
                "group.user_membership.add",
                &[("User", &user.0), ("UserGroup", &group.0)],
                false,
            );
            Ok(())
        })
    }

    pub fn remove_member(&self, group: &OktaGroupId, user: &OktaUserId) -> Result<(), SimError> {
        self.with(|s| {
            s.user(&user.0)?;
            let g = s.group_mut(&group.0)?;
            g.members.remove(&user.0);
            g.last_membership_updated = now_timestamp();
            s.user_mut(&user.0)?.groups.remove(&group.0);
            s.refresh_app_user(&user.0);
            s.log.record(
                "group.user_membership.remove",
                &[("User", &user.0), ("UserGroup", &group.0)],
                false,
            );
            Ok(())
        })
    }

    /// Assigns the group to the app: its members become app users with scope GROUP
    /// (group assignments create app users: docs/okta-api.md#app-users).
    pub fn assign_group(&self, group: &OktaGroupId) -> Result<(), SimError> {
        self.with(|s| {
            s.group(&group.0)?;
            let priority = s.app_groups.len() as u32;
            s.app_groups
                .entry(group.0.clone())
                .or_insert(AppGroupAssignment {
                    priority,
                    last_updated: now_timestamp(),
                });
            s.refresh_group_members(&group.0);
            s.log.record(
                "group.application_assignment.add",
                &[("UserGroup", &group.0)],
                true,
            );
            Ok(())
        })
    }

    /// Unassigns the group: members that no other assignment covers stop being app users.
    pub fn unassign_group(&self, group: &OktaGroupId) -> Result<(), SimError> {
        self.with(|s| {
            s.group(&group.0)?;
            s.app_groups.remove(&group.0);
            s.refresh_group_members(&group.0);
            s.log.record(
                "group.application_assignment.remove",
                &[("UserGroup", &group.0)],
                true,
            );
            Ok(())
        })
    }

    /// Deletes the group (Okta's `deleteGroup`): its app assignment and memberships go with it,
    /// members no other assignment covers stop being app users, and the System Log records
    /// `group.lifecycle.delete` naming only the group (its members are not listed).
    pub fn delete_group(&self, group: &OktaGroupId) -> Result<(), SimError> {
        self.with(|s| {
            let g = s.groups.remove(&group.0).ok_or(SimError::UnknownGroup {
                service: SERVICE,
                id: group.0.clone(),
            })?;
            s.app_groups.remove(&group.0);
            for uid in &g.members {
                if let Some(u) = s.users.get_mut(uid) {
                    u.groups.remove(&group.0);
                }
                s.refresh_app_user(uid);
            }
            s.log
                .record("group.lifecycle.delete", &[("UserGroup", &group.0)], false);
            Ok(())
        })
    }

    /// The app user ids currently listed (for assertions).
    pub fn app_user_ids(&self) -> Vec<OktaUserId> {
        self.with(|s| s.app_users.keys().cloned().map(OktaUserId).collect())
    }

    pub fn user_id_by_email(&self, email: &str) -> Option<OktaUserId> {
        self.with(|s| {
            s.users
                .iter()
                .find(|(_, u)| u.email.eq_ignore_ascii_case(email))
                .map(|(id, _)| OktaUserId(id.clone()))
        })
    }

    /// Generates a realistic org quickly: `n_users` users with unique lowercase emails
    /// `first.last.N@example.com`, ~3 % suspended, ~1 % deprovisioned, eight groups of which
    /// four are assigned to the app; about half the users are assigned directly, most others
    /// through a group, and ~5 % are not Postman users at all.
    pub fn populate(&self, n_users: usize, seed: u64) -> PopulateSummary {
        const FIRST: [&str; 24] = [
            "Ada",
            "Alan",
            "Barbara",
            "Brian",
            "Carol",
            "Dennis",
            "Edsger",
            "Frances",
            "Grace",
            "Guido",
            "Hedy",
            "Ivan",
            "Jean",
            "Ken",
            "Katherine",
            "Linus",
            "Margaret",
            "Niklaus",
            "Radia",
            "Rob",
            "Shafi",
            "Tim",
            "Whitfield",
            "Yukihiro",
        ];
        const LAST: [&str; 24] = [
            "Lovelace",
            "Turing",
            "Liskov",
            "Kernighan",
            "Shaw",
            "Ritchie",
            "Dijkstra",
            "Allen",
            "Hopper",
            "Rossum",
            "Lamarr",
            "Sutherland",
            "Sammet",
            "Thompson",
            "Johnson",
            "Torvalds",
            "Hamilton",
            "Wirth",
            "Perlman",
            "Pike",
            "Goldwasser",
            "Berners-Lee",
            "Diffie",
            "Matsumoto",
        ];
        const GROUPS: [&str; 8] = [
            "Engineering",
            "Design",
            "Product",
            "QA",
            "Sales",
            "Support",
            "Finance",
            "Contractors",
        ];
        let mut rng = SmallRng::seed_from_u64(seed);
        self.with(|s| {
            let mut summary = PopulateSummary::default();
            let group_ids: Vec<String> = GROUPS.iter().map(|g| s.insert_group(g)).collect();
            summary.groups = group_ids.len();
            let now = now_timestamp();
            for (i, gid) in group_ids.iter().take(4).enumerate() {
                s.app_groups.insert(
                    gid.clone(),
                    AppGroupAssignment {
                        priority: i as u32,
                        last_updated: now.clone(),
                    },
                );
            }
            summary.app_groups = 4;
            for n in 0..n_users {
                let first = FIRST[rng.gen_range(0..FIRST.len())];
                let last = LAST[rng.gen_range(0..LAST.len())];
                let email = format!(
                    "{}.{}.{n}@example.com",
                    first.to_ascii_lowercase(),
                    last.to_ascii_lowercase()
                );
                let roll: f64 = rng.gen();
                let status = if roll < 0.03 {
                    summary.suspended += 1;
                    "SUSPENDED"
                } else if roll < 0.04 {
                    summary.deprovisioned += 1;
                    "DEPROVISIONED"
                } else {
                    "ACTIVE"
                };
                let id = s.insert_user(UserSpec::new(&email, first, last).with_status(status));
                let how: f64 = rng.gen();
                let app_group = rng.gen_range(0..4);
                if how < 0.5 {
                    s.direct.insert(id.clone());
                } else if how < 0.95 {
                    s.join(&group_ids[app_group], &id);
                }
                if rng.gen::<f64>() < 0.2 {
                    s.join(&group_ids[rng.gen_range(4..8)], &id);
                }
                s.refresh_app_user(&id);
            }
            summary.users = n_users;
            summary.app_users = s.app_users.len();
            summary
        })
    }
}

impl OktaState {
    /// Okta-looking ids (`00u` + 17 base62 characters) that grow with creation time, like real
    /// ones roughly do: listing order is creation order, and inserts append to the maps (which
    /// keeps `populate` fast). The random tail keeps ids from looking like counters.
    fn new_id(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        self.id_seq += 1;
        let mut id = String::with_capacity(20);
        id.push_str(prefix);
        let mut digits = [b'0'; 10];
        let mut n = self.id_seq;
        for d in digits.iter_mut().rev() {
            *d = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        id.extend(digits.iter().map(|&b| b as char));
        for _ in 0..7 {
            id.push(ALPHABET[self.id_rng.gen_range(0..ALPHABET.len())] as char);
        }
        id
    }

    fn insert_user(&mut self, spec: UserSpec) -> String {
        let id = self.new_id("00u");
        let now = now_timestamp();
        self.users.insert(
            id.clone(),
            SimUser {
                status: spec.status,
                created: now.clone(),
                status_changed: now.clone(),
                last_updated: now,
                login: spec.email.clone(),
                email: spec.email,
                first_name: spec.first_name,
                last_name: spec.last_name,
                groups: BTreeSet::new(),
            },
        );
        id
    }

    fn insert_group(&mut self, name: &str) -> String {
        let id = self.new_id("00g");
        let now = now_timestamp();
        self.groups.insert(
            id.clone(),
            SimGroup {
                name: name.to_string(),
                created: now.clone(),
                last_updated: now.clone(),
                last_membership_updated: now,
                members: BTreeSet::new(),
            },
        );
        id
    }

    /// Adds a membership without refreshing the app user (populate refreshes once per user).
    fn join(&mut self, gid: &str, uid: &str) {
        if let Some(g) = self.groups.get_mut(gid) {
            g.members.insert(uid.to_string());
        }
        if let Some(u) = self.users.get_mut(uid) {
            u.groups.insert(gid.to_string());
        }
    }

    fn user(&self, id: &str) -> Result<&SimUser, SimError> {
        self.users.get(id).ok_or(SimError::UnknownUser {
            service: SERVICE,
            id: id.to_string(),
        })
    }

    fn user_mut(&mut self, id: &str) -> Result<&mut SimUser, SimError> {
        self.users.get_mut(id).ok_or(SimError::UnknownUser {
            service: SERVICE,
            id: id.to_string(),
        })
    }

    fn group(&self, id: &str) -> Result<&SimGroup, SimError> {
        self.groups.get(id).ok_or(SimError::UnknownGroup {
            service: SERVICE,
            id: id.to_string(),
        })
    }

    fn group_mut(&mut self, id: &str) -> Result<&mut SimGroup, SimError> {
        self.groups.get_mut(id).ok_or(SimError::UnknownGroup {
            service: SERVICE,
            id: id.to_string(),
        })
    }

    fn refresh_group_members(&mut self, gid: &str) {
        let members: Vec<String> = self
            .groups
            .get(gid)
            .map(|g| g.members.iter().cloned().collect())
            .unwrap_or_default();
        for uid in members {
            self.refresh_app_user(&uid);
        }
    }

    /// Makes the app user record match the assignments: present when assigned directly or
    /// through any app-assigned group, absent otherwise.
    fn refresh_app_user(&mut self, uid: &str) {
        let Some(user) = self.users.get(uid) else {
            return;
        };
        let via_group = user.groups.iter().any(|g| self.app_groups.contains_key(g));
        if self.direct.contains(uid) || via_group {
            if !self.app_users.contains_key(uid) {
                let now = now_timestamp();
                let status = if user.status == "DEPROVISIONED" {
                    "INACTIVE"
                } else {
                    "ACTIVE"
                };
                let record = AppAssignment {
                    status: status.to_string(),
                    created: now.clone(),
                    last_updated: now,
                    user_name: user.login.clone(),
                    first_name: Some(user.first_name.clone()),
                    last_name: Some(user.last_name.clone()),
                    email: Some(user.email.clone()),
                };
                self.app_users.insert(uid.to_string(), record);
            }
        } else {
            self.app_users.remove(uid);
        }
    }

    /// The group that grants this app user, for the `_links.group` of scope GROUP users.
    fn granting_group(&self, uid: &str) -> Option<(&String, &SimGroup)> {
        let user = self.users.get(uid)?;
        user.groups
            .iter()
            .filter(|g| self.app_groups.contains_key(*g))
            .min_by_key(|g| self.app_groups.get(*g).map(|a| a.priority))
            .and_then(|g| self.groups.get_key_value(g))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP side

fn router(shared: Arc<Shared>) -> Router {
    let token_endpoint = okta_oauth::router(Arc::clone(&shared.oauth), &shared.base_url);
    Router::new()
        .route("/api/v1/apps/{app_id}", get(get_app))
        .route("/api/v1/apps/{app_id}/users", get(list_app_users))
        .route("/api/v1/apps/{app_id}/users/{user_id}", get(get_app_user))
        .route("/api/v1/apps/{app_id}/groups", get(list_app_groups))
        .route("/api/v1/groups/{group_id}", get(get_group))
        .route("/api/v1/groups/{group_id}/users", get(list_group_users))
        .route("/api/v1/logs", get(events::list_logs))
        .route("/api/v1/users/{user_id}", get(get_user))
        .route("/api/v1/users/{user_id}/groups", get(list_user_groups))
        .fallback(not_found_path)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            okta_middleware,
        ))
        .with_state(shared)
        .merge(token_endpoint)
}

/// Okta's error body (docs/okta-api.md#errors).
fn okta_error(state: &mut OktaState, status: StatusCode, code: &str, summary: &str) -> Response {
    state.error_seq += 1;
    let body = json!({
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": format!("oaeSim{:014}", state.error_seq),
        "errorCauses": [],
    });
    (status, Json(body)).into_response()
}

fn error_response(shared: &Shared, status: StatusCode, code: &str, summary: &str) -> Response {
    let mut inner = lock(&shared.inner);
    okta_error(&mut inner.state, status, code, summary)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BucketKind {
    Apps,
    Groups,
}

fn bucket_of(path: &str) -> Option<BucketKind> {
    if path.starts_with("/api/v1/apps") {
        Some(BucketKind::Apps)
    } else if path.starts_with("/api/v1/groups") {
        Some(BucketKind::Groups)
    } else {
        None
    }
}

fn set_rate_headers(headers: &mut HeaderMap, rate: RateHeaders) {
    headers.insert("x-rate-limit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-rate-limit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("x-rate-limit-reset", HeaderValue::from(rate.reset));
}

/// Auth, rate limits, faults and counters, in the order the real service seems to apply them.
async fn okta_middleware(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let latency = {
        let mut inner = lock(&shared.inner);
        inner.stats.requests.record_method(req.method().as_str());
        inner.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("SSWS "))
        .map(str::to_string);
    // OAuth access tokens are judged by okta_oauth.rs; SSWS tokens below.
    let oauth_ok = match shared
        .oauth
        .authorize(req.method(), req.uri().path(), req.headers())
    {
        Some(Err(refused)) => {
            let mut inner = lock(&shared.inner);
            inner
                .stats
                .requests
                .record_status(refused.status().as_u16());
            return refused;
        }
        Some(Ok(())) => true,
        None => false,
    };
    let config = &shared.config;
    let denied = config
        .no_permission_token
        .as_ref()
        .is_some_and(|t| presented.as_deref() == Some(t.expose_secret()));
    let authed = oauth_ok || presented.as_deref() == Some(config.token.expose_secret());

    // Decide everything that needs the lock in one go, then await without it.
    enum Plan {
        Respond(Response),
        Disrupt(faults::Disruption),
        Pass,
    }
    let (plan, rate, slow, hold) = {
        let mut inner = lock(&shared.inner);
        let inner = &mut *inner;
        if denied {
            let r = okta_error(
                &mut inner.state,
                StatusCode::FORBIDDEN,
                "E0000006",
                "You do not have permission to perform the requested action",
            );
            (Plan::Respond(r), None, Duration::ZERO, Duration::ZERO)
        } else if !authed {
            let r = okta_error(
                &mut inner.state,
                StatusCode::UNAUTHORIZED,
                "E0000011",
                "Invalid token provided",
            );
            (Plan::Respond(r), None, Duration::ZERO, Duration::ZERO)
        } else {
            let bucket = match bucket_of(req.uri().path()) {
                Some(BucketKind::Apps) => Some(&mut inner.apps_bucket),
                Some(BucketKind::Groups) => Some(&mut inner.groups_bucket),
                None => None,
            };
            let (allowed, rate) = match bucket {
                Some(b) => {
                    let ok = b.take();
                    (ok, Some(b.headers()))
                }
                None => (true, None),
            };
            let too_many = || {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "E0000047",
                    "API call exceeded rate limit due to too many requests.",
                )
            };
            let plan = if !allowed {
                let (s, c, m) = too_many();
                Plan::Respond(okta_error(&mut inner.state, s, c, m))
            } else {
                let fault = inner.injector.roll();
                if let Some(f) = fault {
                    inner.stats.requests.record_fault(f.kind());
                }
                match fault {
                    None => Plan::Pass,
                    Some(Fault::Reject(Rejection::TooManyRequests { retry_after })) => {
                        let (s, c, m) = too_many();
                        let mut r = okta_error(&mut inner.state, s, c, m);
                        if !retry_after {
                            // Marks the response so the rate headers are left off below.
                            r.extensions_mut().insert(NoRateHeaders);
                        }
                        Plan::Respond(r)
                    }
                    Some(Fault::Reject(Rejection::ServerError(502))) => Plan::Respond(
                        (
                            StatusCode::BAD_GATEWAY,
                            "<html><body>502 Bad Gateway</body></html>",
                        )
                            .into_response(),
                    ),
                    Some(Fault::Reject(Rejection::ServerError(503))) => Plan::Respond(okta_error(
                        &mut inner.state,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "E0000010",
                        "Service is in read only mode",
                    )),
                    Some(Fault::Reject(Rejection::ServerError(_))) => Plan::Respond(okta_error(
                        &mut inner.state,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "E0000009",
                        "Internal Server Error",
                    )),
                    Some(Fault::Disrupt(d)) => Plan::Disrupt(d),
                }
            };
            let cfg = inner.injector.config();
            (plan, rate, cfg.slow, cfg.timeout_hold)
        }
    };

    let mut response = match plan {
        Plan::Respond(r) => r,
        Plan::Pass => next.run(req).await,
        Plan::Disrupt(d) => faults::disrupt(d, slow, hold, req, next).await,
    };
    if let Some(rate) = rate {
        if response.extensions().get::<NoRateHeaders>().is_none() {
            set_rate_headers(response.headers_mut(), rate);
        }
    }
    lock(&shared.inner)
        .stats
        .requests
        .record_status(response.status().as_u16());
    response
}

#[derive(Clone, Copy)]
struct NoRateHeaders;

async fn not_found_path(State(shared): State<Arc<Shared>>) -> Response {
    error_response(
        &shared,
        StatusCode::NOT_FOUND,
        "E0000008",
        "The requested path was not found",
    )
}

fn unknown_app(shared: &Shared, app_id: &str) -> Option<Response> {
    (app_id != shared.config.app_id).then(|| {
        error_response(
            shared,
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {app_id} (AppInstance)"),
        )
    })
}

async fn get_app(State(shared): State<Arc<Shared>>, Path(app_id): Path<String>) -> Response {
    if let Some(r) = unknown_app(&shared, &app_id) {
        return r;
    }
    let base = &shared.base_url;
    Json(json!({
        "id": app_id,
        "name": "postman",
        "label": "Postman",
        "status": "ACTIVE",
        "lastUpdated": "2024-01-01T00:00:00.000Z",
        "created": "2024-01-01T00:00:00.000Z",
        "accessibility": {"selfService": false, "errorRedirectUrl": null, "loginRedirectUrl": null},
        "visibility": {"autoSubmitToolbar": false, "hide": {"iOS": false, "web": false}},
        "features": [],
        "signOnMode": "SAML_2_0",
        "credentials": {
            "userNameTemplate": {"template": "${source.email}", "type": "BUILT_IN"},
            "signing": {}
        },
        "settings": {"app": {}, "notifications": {"vpn": {"network": {"connection": "DISABLED"}}}},
        "_links": {
            "users": {"href": format!("{base}/api/v1/apps/{app_id}/users")},
            "groups": {"href": format!("{base}/api/v1/apps/{app_id}/groups")},
            "self": {"href": format!("{base}/api/v1/apps/{app_id}")}
        }
    }))
    .into_response()
}

/// `limit` as Okta reads it: absent = default, above the maximum = the maximum, below the
/// minimum = the minimum; not a number = 400 E0000001.
/// `limit` (with its default and bounds) and the `after` cursor of a list request, or the
/// error response Okta gives for them (E0000001 for a bad limit, E0000054 for a bad cursor).
#[allow(clippy::result_large_err)]
fn page_params(
    shared: &Shared,
    query: &HashMap<String, String>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<(usize, u32, Option<String>), Response> {
    let Some(limit) = parse_limit(query.get("limit"), default, min, max) else {
        return Err(error_response(
            shared,
            StatusCode::BAD_REQUEST,
            "E0000001",
            "Api validation failed: limit",
        ));
    };
    let Some((page, after)) = parse_cursor(query.get("after")) else {
        return Err(error_response(
            shared,
            StatusCode::BAD_REQUEST,
            "E0000054",
            "Invalid pagination properties",
        ));
    };
    Ok((limit, page, after))
}

fn parse_limit(raw: Option<&String>, default: usize, min: usize, max: usize) -> Option<usize> {
    match raw {
        None => Some(default),
        Some(s) => s.trim().parse::<i64>().ok().map(|n| {
            if n < min as i64 {
                min
            } else {
                (n as usize).min(max)
            }
        }),
    }
}

/// Cursors are `{page}_{last id}`: opaque to clients (docs/okta-api.md#paging), but they let the
/// fake fail "page n".
fn parse_cursor(after: Option<&String>) -> Option<(u32, Option<String>)> {
    match after {
        None => Some((1, None)),
        Some(c) => {
            let (page, last) = c.split_once('_')?;
            let page: u32 = page.parse().ok()?;
            Some((page, Some(last.to_string())))
        }
    }
}

/// The `Link` headers of one page (docs/okta-api.md#paging): two header lines, or one comma-joined.
fn link_headers(config: &OktaSimConfig, self_url: &str, next_url: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let self_link = format!("<{self_url}>; rel=\"self\"");
    let next_link = next_url.map(|n| format!("<{n}>; rel=\"next\""));
    let values: Vec<String> = match (config.comma_joined_links, next_link) {
        (true, Some(next)) => vec![format!("{self_link}, {next}")],
        (false, Some(next)) => vec![self_link, next],
        (_, None) => vec![self_link],
    };
    for v in values {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.append(header::LINK, v);
        }
    }
    headers
}

fn query_string(pairs: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

// Responses are serialized from borrowed views of the state rather than built as
// `serde_json::Value`s: a 500-user page with embedded users is the hot path at 100k users.
// `Option::None` serializes as `null`, as Okta's examples send it (docs/okta-api.md#conventions).

#[derive(Serialize)]
struct Href {
    href: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserOut<'a> {
    id: &'a str,
    status: &'a str,
    created: &'a str,
    activated: Option<&'a str>,
    status_changed: &'a str,
    last_login: Option<&'a str>,
    last_updated: &'a str,
    password_changed: Option<&'a str>,
    #[serde(rename = "type")]
    user_type: UserTypeOut,
    profile: UserProfileOut<'a>,
    credentials: Value,
    #[serde(rename = "_links")]
    links: UserLinksOut,
}

#[derive(Serialize)]
struct UserTypeOut {
    id: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserProfileOut<'a> {
    first_name: &'a str,
    last_name: &'a str,
    mobile_phone: Option<&'a str>,
    second_email: Option<&'a str>,
    login: &'a str,
    email: &'a str,
}

#[derive(Serialize)]
struct UserLinksOut {
    #[serde(rename = "self")]
    self_link: Href,
}

fn user_out<'a>(base: &str, id: &'a str, u: &'a SimUser) -> UserOut<'a> {
    UserOut {
        id,
        status: &u.status,
        created: &u.created,
        activated: (u.status != "STAGED").then_some(u.created.as_str()),
        status_changed: &u.status_changed,
        last_login: None,
        last_updated: &u.last_updated,
        password_changed: None,
        user_type: UserTypeOut {
            id: "otySimDefaultType001",
        },
        profile: UserProfileOut {
            first_name: &u.first_name,
            last_name: &u.last_name,
            mobile_phone: None,
            second_email: None,
            login: &u.login,
            email: &u.email,
        },
        credentials: json!({"provider": {"type": "OKTA", "name": "OKTA"}}),
        links: UserLinksOut {
            self_link: Href {
                href: format!("{base}/api/v1/users/{id}"),
            },
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppUserOut<'a> {
    id: &'a str,
    external_id: Option<&'a str>,
    created: &'a str,
    last_updated: &'a str,
    scope: &'static str,
    status: &'a str,
    status_changed: &'a str,
    password_changed: Option<&'a str>,
    sync_state: &'static str,
    credentials: AppCredentialsOut<'a>,
    profile: AppProfileOut<'a>,
    #[serde(rename = "_links")]
    links: AppUserLinksOut<'a>,
    #[serde(rename = "_embedded", skip_serializing_if = "Option::is_none")]
    embedded: Option<EmbeddedUserOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppCredentialsOut<'a> {
    user_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppProfileOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct AppUserLinksOut<'a> {
    app: Href,
    user: Href,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupLinkOut<'a>>,
}

#[derive(Serialize)]
struct GroupLinkOut<'a> {
    href: String,
    name: &'a str,
}

#[derive(Serialize)]
struct EmbeddedUserOut<'a> {
    user: UserOut<'a>,
}

fn app_user_out<'a>(
    shared: &Shared,
    state: &'a OktaState,
    id: &'a str,
    a: &'a AppAssignment,
    expand_user: bool,
) -> AppUserOut<'a> {
    let base = &shared.base_url;
    let app_id = &shared.config.app_id;
    let direct = state.direct.contains(id);
    let group = if direct {
        None
    } else {
        state.granting_group(id).map(|(gid, g)| GroupLinkOut {
            href: format!("{base}/api/v1/groups/{gid}"),
            name: &g.name,
        })
    };
    AppUserOut {
        id,
        external_id: None,
        created: &a.created,
        last_updated: &a.last_updated,
        scope: if direct { "USER" } else { "GROUP" },
        status: &a.status,
        status_changed: &a.last_updated,
        password_changed: None,
        sync_state: "DISABLED",
        credentials: AppCredentialsOut {
            user_name: &a.user_name,
        },
        profile: AppProfileOut {
            first_name: a.first_name.as_deref(),
            last_name: a.last_name.as_deref(),
            email: a.email.as_deref(),
        },
        links: AppUserLinksOut {
            app: Href {
                href: format!("{base}/api/v1/apps/{app_id}"),
            },
            user: Href {
                href: format!("{base}/api/v1/users/{id}"),
            },
            group,
        },
        embedded: if expand_user {
            state.users.get(id).map(|u| EmbeddedUserOut {
                user: user_out(base, id, u),
            })
        } else {
            None
        },
    }
}

/// A 200 with an already serialized JSON body.
fn json_bytes(headers: HeaderMap, body: Vec<u8>) -> Response {
    let mut response = (headers, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn app_user_visible(shared: &Shared, state: &OktaState, id: &str, q: Option<&str>) -> bool {
    let Some(user) = state.users.get(id) else {
        return false;
    };
    if !shared.config.deactivated_users_listed && user.status == "DEPROVISIONED" {
        return false;
    }
    match q {
        None => true,
        Some(q) => {
            let q = q.to_lowercase();
            [&user.login, &user.first_name, &user.last_name, &user.email]
                .iter()
                .any(|f| f.to_lowercase().starts_with(&q))
        }
    }
}

async fn list_app_users(
    State(shared): State<Arc<Shared>>,
    Path(app_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = unknown_app(&shared, &app_id) {
        return r;
    }
    let query = parse_query(raw.as_deref());
    // limit min 1, max 500, default 50 (docs/okta-api.md#page-size-limits).
    let (limit, page, after) = match page_params(&shared, &query, 50, 1, 500) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let expand_user = query.get("expand").map(String::as_str) == Some("user");
    let q = query.get("q").map(String::as_str);

    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    if state.failing_user_pages.contains(&page) {
        return okta_error(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "E0000009",
            "Internal Server Error",
        );
    }
    let lower = match &after {
        Some(a) => Bound::Excluded(a.clone()),
        None => Bound::Unbounded,
    };
    let mut items = Vec::with_capacity(limit.min(512));
    let mut last = None;
    let mut more = false;
    for (id, a) in state.app_users.range((lower, Bound::Unbounded)) {
        if !app_user_visible(&shared, state, id, q) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(app_user_out(&shared, state, id, a, expand_user));
        last = Some(id.clone());
    }
    let body = serde_json::to_vec(&items).unwrap_or_default();
    drop(items);
    drop(inner);

    let path = format!("{}/api/v1/apps/{app_id}/users", shared.base_url);
    let mut common = vec![("limit", limit.to_string())];
    if let Some(q) = q {
        common.push(("q", q.to_string()));
    }
    let with_expand = |mut pairs: Vec<(&'static str, String)>| {
        if expand_user {
            pairs.push(("expand", "user".to_string()));
        }
        pairs
    };
    let mut self_pairs = common.clone();
    if let Some(a) = query.get("after") {
        self_pairs.push(("after", a.clone()));
    }
    let self_url = format!("{path}?{}", query_string(&with_expand(self_pairs)));
    let next_url = match (more, last) {
        (true, Some(last)) => {
            let mut pairs = common;
            pairs.push(("after", format!("{}_{last}", page + 1)));
            Some(format!("{path}?{}", query_string(&with_expand(pairs))))
        }
        _ => None,
    };
    let headers = link_headers(&shared.config, &self_url, next_url.as_deref());
    json_bytes(headers, body)
}

async fn get_app_user(
    State(shared): State<Arc<Shared>>,
    Path((app_id, user_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = unknown_app(&shared, &app_id) {
        return r;
    }
    let query = parse_query(raw.as_deref());
    let expand_user = query.get("expand").map(String::as_str) == Some("user");
    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    match state.app_users.get(&user_id) {
        Some(a) if app_user_visible(&shared, state, &user_id, None) => {
            Json(app_user_out(&shared, state, &user_id, a, expand_user)).into_response()
        }
        _ => okta_error(
            state,
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {user_id} (AppUser)"),
        ),
    }
}

fn group_json(base: &str, id: &str, g: &SimGroup) -> Value {
    json!({
        "id": id,
        "created": g.created,
        "lastUpdated": g.last_updated,
        "lastMembershipUpdated": g.last_membership_updated,
        "objectClass": ["okta:user_group"],
        "type": "OKTA_GROUP",
        "profile": {"name": g.name, "description": null},
        "_links": {
            "logo": [{"name": "medium", "href": format!("{base}/img/logos/groups/okta-medium.png"), "type": "image/png"}],
            "users": {"href": format!("{base}/api/v1/groups/{id}/users")},
            "apps": {"href": format!("{base}/api/v1/groups/{id}/apps")}
        }
    })
}

async fn list_app_groups(
    State(shared): State<Arc<Shared>>,
    Path(app_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(r) = unknown_app(&shared, &app_id) {
        return r;
    }
    let query = parse_query(raw.as_deref());
    // limit min 20, max 200, default 20 (docs/okta-api.md#page-size-limits).
    let (limit, page, after) = match page_params(&shared, &query, 20, 20, 200) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let expand_group = query.get("expand").map(String::as_str) == Some("group");
    let base = shared.base_url.clone();
    let inner = lock(&shared.inner);
    let state = &inner.state;
    let lower = match &after {
        Some(a) => Bound::Excluded(a.clone()),
        None => Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for (gid, assignment) in state.app_groups.range((lower, Bound::Unbounded)) {
        if items.len() == limit {
            more = true;
            break;
        }
        let mut v = json!({
            "id": gid,
            "priority": assignment.priority,
            "lastUpdated": assignment.last_updated,
            "profile": {},
            "_links": {
                "app": {"href": format!("{base}/api/v1/apps/{app_id}")},
                "self": {"href": format!("{base}/api/v1/apps/{app_id}/groups/{gid}")},
                "group": {"href": format!("{base}/api/v1/groups/{gid}")}
            }
        });
        if expand_group {
            if let Some(g) = state.groups.get(gid) {
                v["_embedded"] = json!({"group": group_json(&base, gid, g)});
            }
        }
        items.push(v);
        last = Some(gid.clone());
    }
    drop(inner);
    let path = format!("{base}/api/v1/apps/{app_id}/groups");
    let expand = |mut pairs: Vec<(&'static str, String)>| {
        if expand_group {
            pairs.push(("expand", "group".to_string()));
        }
        pairs
    };
    let mut self_pairs = vec![("limit", limit.to_string())];
    if let Some(a) = query.get("after") {
        self_pairs.push(("after", a.clone()));
    }
    let self_url = format!("{path}?{}", query_string(&expand(self_pairs)));
    let next_url = match (more, last) {
        (true, Some(last)) => {
            let pairs = vec![
                ("limit", limit.to_string()),
                ("after", format!("{}_{last}", page + 1)),
            ];
            Some(format!("{path}?{}", query_string(&expand(pairs))))
        }
        _ => None,
    };
    let headers = link_headers(&shared.config, &self_url, next_url.as_deref());
    (headers, Json(Value::Array(items))).into_response()
}

async fn get_group(State(shared): State<Arc<Shared>>, Path(group_id): Path<String>) -> Response {
    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    match state.groups.get(&group_id) {
        Some(g) => Json(group_json(&shared.base_url, &group_id, g)).into_response(),
        None => okta_error(
            state,
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {group_id} (UserGroup)"),
        ),
    }
}

async fn list_group_users(
    State(shared): State<Arc<Shared>>,
    Path(group_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = parse_query(raw.as_deref());
    // default 1000, no documented maximum; 10000 keeps pages bounded
    // (docs/okta-api.md#page-size-limits).
    let (limit, page, after) = match page_params(&shared, &query, 1000, 1, 10_000) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let base = shared.base_url.clone();
    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    if state.failing_group_members.contains(&group_id) {
        return okta_error(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "E0000009",
            "Internal Server Error",
        );
    }
    let Some(group) = state.groups.get(&group_id) else {
        return okta_error(
            state,
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {group_id} (UserGroup)"),
        );
    };
    let lower = match &after {
        Some(a) => Bound::Excluded(a.clone()),
        None => Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for uid in group.members.range::<String, _>((lower, Bound::Unbounded)) {
        if items.len() == limit {
            more = true;
            break;
        }
        if let Some(u) = state.users.get(uid) {
            items.push(user_out(&base, uid, u));
            last = Some(uid.clone());
        }
    }
    let body = serde_json::to_vec(&items).unwrap_or_default();
    drop(items);
    drop(inner);
    let path = format!("{base}/api/v1/groups/{group_id}/users");
    let mut self_pairs = vec![("limit", limit.to_string())];
    if let Some(a) = query.get("after") {
        self_pairs.push(("after", a.clone()));
    }
    let self_url = format!("{path}?{}", query_string(&self_pairs));
    let next_url = match (more, last) {
        (true, Some(last)) => Some(format!(
            "{path}?{}",
            query_string(&[
                ("limit", limit.to_string()),
                ("after", format!("{}_{last}", page + 1))
            ])
        )),
        _ => None,
    };
    let headers = link_headers(&shared.config, &self_url, next_url.as_deref());
    json_bytes(headers, body)
}

/// The user `GET /api/v1/users/{id}` names: "id, login, or unambiguous login shortname"
/// (okta-api.md A2 `getUser`). Logins are matched case-insensitively, as Okta does for sign-in.
fn find_user<'a>(state: &'a OktaState, key: &str) -> Option<(&'a String, &'a SimUser)> {
    if let Some(found) = state.users.get_key_value(key) {
        return Some(found);
    }
    let key = key.to_lowercase();
    if let Some(found) = state
        .users
        .iter()
        .find(|(_, u)| u.login.to_lowercase() == key)
    {
        return Some(found);
    }
    let mut short = state
        .users
        .iter()
        .filter(|(_, u)| u.login.split('@').next().map(str::to_lowercase) == Some(key.clone()));
    match (short.next(), short.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

async fn get_user(State(shared): State<Arc<Shared>>, Path(user_id): Path<String>) -> Response {
    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    match find_user(state, &user_id) {
        Some((id, u)) => Json(user_out(&shared.base_url, id, u)).into_response(),
        None => okta_error(
            state,
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {user_id} (User)"),
        ),
    }
}

/// `GET /api/v1/users/{id}/groups` (A2 `listUserGroups`): the user's groups as Group objects.
/// Okta takes the user's id here (a login is not documented for this path), so only ids match.
async fn list_user_groups(
    State(shared): State<Arc<Shared>>,
    Path(user_id): Path<String>,
) -> Response {
    let base = shared.base_url.clone();
    let mut inner = lock(&shared.inner);
    let state = &mut inner.state;
    let Some(user) = state.users.get(&user_id) else {
        return okta_error(
            state,
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {user_id} (User)"),
        );
    };
    let items: Vec<Value> = user
        .groups
        .iter()
        .filter_map(|gid| state.groups.get(gid).map(|g| group_json(&base, gid, g)))
        .collect();
    Json(Value::Array(items)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "SSWS sim-okta-token";

    async fn start(config: OktaSimConfig) -> (FakeOkta, reqwest::Client) {
        let fake = FakeOkta::start(config).await.expect("fake okta starts");
        (fake, reqwest::Client::new())
    }

    fn next_link(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(", <"))
            .find(|l| l.contains("rel=\"next\""))
            .map(|l| {
                l.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
    }

    async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
        client
            .get(url)
            .header("Authorization", TOKEN)
            .send()
            .await
            .expect("request reaches the fake")
    }

    #[tokio::test]
    async fn app_users_are_paged_with_separate_link_headers_and_embedded_users() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        for i in 0..5 {
            let id = fake.add_user(UserSpec::new(&format!("u{i}@example.com"), "U", "Ser"));
            fake.assign_user(&id).expect("user exists");
        }
        let mut url = format!(
            "{}/api/v1/apps/{}/users?limit=2&expand=user",
            fake.base_url(),
            fake.app_id()
        );
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let resp = get(&client, &url).await;
            assert_eq!(resp.status(), 200);
            assert!(resp.headers().get_all(header::LINK).iter().count() >= 1);
            assert!(resp.headers().get("x-rate-limit-remaining").is_some());
            assert!(resp.headers().get(header::DATE).is_some());
            let next = next_link(resp.headers());
            let body: Value = resp.json().await.expect("json array");
            for u in body.as_array().expect("array") {
                assert_eq!(u["scope"], "USER");
                assert!(u["passwordChanged"].is_null());
                assert_eq!(u["_embedded"]["user"]["status"], "ACTIVE");
                seen.push(
                    u["credentials"]["userName"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                );
            }
            pages += 1;
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        assert_eq!(pages, 3);
        seen.sort();
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], "u0@example.com");
    }

    #[tokio::test]
    async fn without_expand_there_is_no_embedded_user() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let id = fake.add_user(UserSpec::new("a@example.com", "A", "B"));
        fake.assign_user(&id).expect("user exists");
        let url = format!("{}/api/v1/apps/{}/users", fake.base_url(), fake.app_id());
        let body: Value = get(&client, &url).await.json().await.expect("json");
        assert!(body[0].get("_embedded").is_none());
        assert_eq!(body[0]["profile"]["email"], "a@example.com");
    }

    #[tokio::test]
    async fn comma_joined_links_put_self_and_next_in_one_header() {
        let config = OktaSimConfig {
            comma_joined_links: true,
            ..OktaSimConfig::default()
        };
        let (fake, client) = start(config).await;
        for i in 0..3 {
            let id = fake.add_user(UserSpec::new(&format!("u{i}@example.com"), "U", "S"));
            fake.assign_user(&id).expect("user exists");
        }
        let url = format!(
            "{}/api/v1/apps/{}/users?limit=1",
            fake.base_url(),
            fake.app_id()
        );
        let resp = get(&client, &url).await;
        let links: Vec<_> = resp.headers().get_all(header::LINK).iter().collect();
        assert_eq!(links.len(), 1);
        let text = links[0].to_str().expect("ascii");
        assert!(text.contains("rel=\"self\", <") && text.contains("rel=\"next\""));
        assert!(next_link(resp.headers()).is_some());
    }

    #[tokio::test]
    async fn bad_tokens_get_401_and_no_permission_tokens_get_403() {
        let config = OktaSimConfig {
            no_permission_token: Some(SecretString::from("weak")),
            ..OktaSimConfig::default()
        };
        let (fake, client) = start(config).await;
        let url = format!("{}/api/v1/apps/{}", fake.base_url(), fake.app_id());
        let resp = client.get(&url).send().await.expect("reaches fake");
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["errorCode"], "E0000011");
        assert_eq!(body["errorSummary"], "Invalid token provided");
        let resp = client
            .get(&url)
            .header("Authorization", "SSWS weak")
            .send()
            .await
            .expect("reaches fake");
        assert_eq!(resp.status(), 403);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["errorCode"], "E0000006");
    }

    #[tokio::test]
    async fn a_user_is_found_by_id_login_or_shortname_and_lists_its_groups() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let ann = fake.add_user(UserSpec::new("ann.lee@example.com", "Ann", "Lee"));
        let eng = fake.add_group("Engineering");
        fake.add_member(&eng, &ann).expect("member");
        let base = fake.base_url();
        for key in [ann.as_str(), "Ann.Lee@Example.com", "ann.lee"] {
            let resp = get(&client, &format!("{base}/api/v1/users/{key}")).await;
            assert_eq!(resp.status(), 200, "{key}");
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["id"], ann.as_str());
            assert_eq!(body["profile"]["login"], "ann.lee@example.com");
        }
        let resp = get(&client, &format!("{base}/api/v1/users/nobody@example.com")).await;
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["errorCode"], "E0000007");
        let resp = get(&client, &format!("{base}/api/v1/users/{ann}/groups")).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body[0]["id"], eng.as_str());
        assert_eq!(body[0]["profile"]["name"], "Engineering");
        // The groups path takes an id, not a login.
        let resp = get(
            &client,
            &format!("{base}/api/v1/users/ann.lee@example.com/groups"),
        )
        .await;
        assert_eq!(resp.status(), 404);
    }

    #[tokio::test]
    async fn an_unknown_app_is_404_e0000007() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let resp = get(
            &client,
            &format!("{}/api/v1/apps/0oanope/users", fake.base_url()),
        )
        .await;
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["errorCode"], "E0000007");
    }

    #[tokio::test]
    async fn the_apps_bucket_answers_429_e0000047_beyond_its_limit() {
        let config = OktaSimConfig {
            apps_limit_per_minute: 3,
            ..OktaSimConfig::default()
        };
        let (fake, client) = start(config).await;
        let url = format!("{}/api/v1/apps/{}", fake.base_url(), fake.app_id());
        for remaining in [2, 1, 0] {
            let resp = get(&client, &url).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers()["x-rate-limit-remaining"],
                remaining.to_string()
            );
        }
        let resp = get(&client, &url).await;
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["x-rate-limit-limit"], "3");
        assert_eq!(resp.headers()["x-rate-limit-remaining"], "0");
        let reset: u64 = resp.headers()["x-rate-limit-reset"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("epoch seconds");
        assert!(reset as f64 >= epoch_now());
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["errorCode"], "E0000047");
        // The groups bucket is separate.
        let gid = fake.add_group("G");
        let resp = get(&client, &format!("{}/api/v1/groups/{gid}", fake.base_url())).await;
        assert_eq!(resp.status(), 200);
        let stats = fake.stats();
        assert_eq!(stats.requests.rate_limited, 1);
        assert_eq!(stats.max_apps_requests_in_window, 3);
    }

    #[tokio::test]
    async fn assigning_a_group_makes_its_members_group_scoped_app_users() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let gid = fake.add_group("Engineering");
        let a = fake.add_user(UserSpec::new("a@example.com", "A", "A"));
        let b = fake.add_user(UserSpec::new("b@example.com", "B", "B"));
        fake.add_member(&gid, &a).expect("exists");
        fake.add_member(&gid, &b).expect("exists");
        fake.assign_user(&b).expect("exists");
        assert!(fake.app_user_ids().is_empty() || fake.app_user_ids() == vec![b.clone()]);
        fake.assign_group(&gid).expect("exists");
        let url = format!("{}/api/v1/apps/{}/users", fake.base_url(), fake.app_id());
        let body: Value = get(&client, &url).await.json().await.expect("json");
        let scope_of = |id: &OktaUserId| {
            body.as_array()
                .expect("array")
                .iter()
                .find(|u| u["id"] == id.0.as_str())
                .map(|u| u["scope"].clone())
        };
        assert_eq!(scope_of(&a), Some(json!("GROUP")));
        assert_eq!(scope_of(&b), Some(json!("USER")));

        let groups_url = format!(
            "{}/api/v1/apps/{}/groups?expand=group",
            fake.base_url(),
            fake.app_id()
        );
        let groups: Value = get(&client, &groups_url).await.json().await.expect("json");
        assert_eq!(groups[0]["id"], gid.0.as_str());
        assert_eq!(
            groups[0]["_embedded"]["group"]["profile"]["name"],
            "Engineering"
        );

        let members_url = format!("{}/api/v1/groups/{gid}/users?limit=1", fake.base_url());
        let resp = get(&client, &members_url).await;
        assert!(next_link(resp.headers()).is_some());
        let members: Value = resp.json().await.expect("json");
        assert!(members[0]["profile"]["login"].is_string());

        fake.unassign_group(&gid).expect("exists");
        assert_eq!(fake.app_user_ids(), vec![b.clone()]);
        fake.assign_group(&gid).expect("exists");
        fake.remove_member(&gid, &a).expect("exists");
        assert_eq!(fake.app_user_ids(), vec![b]);
    }

    #[tokio::test]
    async fn profile_and_status_changes_show_in_the_app_user() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let id = fake.add_user(UserSpec::new("old@example.com", "Old", "Name"));
        fake.assign_user(&id).expect("exists");
        fake.set_email(&id, "new@example.com").expect("exists");
        fake.set_name(&id, "New", "Person").expect("exists");
        fake.suspend(&id).expect("exists");
        let url = format!(
            "{}/api/v1/apps/{}/users/{id}?expand=user",
            fake.base_url(),
            fake.app_id()
        );
        let u: Value = get(&client, &url).await.json().await.expect("json");
        assert_eq!(u["credentials"]["userName"], "new@example.com");
        assert_eq!(u["profile"]["firstName"], "New");
        assert_eq!(u["status"], "ACTIVE");
        assert_eq!(u["_embedded"]["user"]["status"], "SUSPENDED");
        assert_eq!(
            u["_embedded"]["user"]["profile"]["login"],
            "new@example.com"
        );
        fake.deactivate(&id).expect("exists");
        let u: Value = get(&client, &url).await.json().await.expect("json");
        assert_eq!(u["status"], "INACTIVE");
    }

    #[tokio::test]
    async fn a_failing_users_page_answers_500_until_cleared() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        for i in 0..3 {
            let id = fake.add_user(UserSpec::new(&format!("u{i}@example.com"), "U", "S"));
            fake.assign_user(&id).expect("exists");
        }
        fake.fail_users_page(2);
        let first = format!(
            "{}/api/v1/apps/{}/users?limit=2",
            fake.base_url(),
            fake.app_id()
        );
        let resp = get(&client, &first).await;
        assert_eq!(resp.status(), 200);
        let second = next_link(resp.headers()).expect("a second page");
        for _ in 0..2 {
            let resp = get(&client, &second).await;
            assert_eq!(resp.status(), 500);
            let body: Value = resp.json().await.expect("json");
            assert_eq!(body["errorCode"], "E0000009");
        }
        fake.clear_targeted_faults();
        assert_eq!(get(&client, &second).await.status(), 200);
    }

    #[tokio::test]
    async fn failing_group_members_answer_500() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let gid = fake.add_group("G");
        fake.fail_group_members(&gid);
        let url = format!("{}/api/v1/groups/{gid}/users", fake.base_url());
        assert_eq!(get(&client, &url).await.status(), 500);
    }

    #[tokio::test]
    async fn populate_builds_an_org_with_unique_lowercase_emails() {
        let (fake, _client) = start(OktaSimConfig::default()).await;
        let summary = fake.populate(2_000, 42);
        assert_eq!(summary.users, 2_000);
        assert!(summary.app_users > 1_700 && summary.app_users < 2_000);
        assert!(summary.suspended > 0);
        let emails: BTreeSet<String> =
            fake.with(|s| s.users.values().map(|u| u.email.clone()).collect());
        assert_eq!(emails.len(), 2_000);
        assert!(emails.iter().all(|e| *e == e.to_lowercase()));
    }

    #[tokio::test]
    async fn injected_resets_and_malformed_bodies_break_the_client_side() {
        let (fake, client) = start(OktaSimConfig::default()).await;
        let url = format!("{}/api/v1/apps/{}", fake.base_url(), fake.app_id());
        fake.set_faults(FaultConfig {
            rate_reset: 1.0,
            ..FaultConfig::default()
        });
        let result = match client.get(&url).header("Authorization", TOKEN).send().await {
            Ok(resp) => resp.bytes().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(result.is_err(), "a reset must not yield a complete body");
        fake.set_faults(FaultConfig {
            rate_malformed: 1.0,
            ..FaultConfig::default()
        });
        for _ in 0..6 {
            let resp = get(&client, &url).await;
            assert_eq!(resp.status(), 200);
            let parsed = resp.json::<Value>().await;
            if let Ok(v) = parsed {
                assert!(
                    !v["id"].is_string(),
                    "wrong types must not decode as the real shape"
                );
            }
        }
        assert_eq!(fake.stats().requests.faults.get("malformed"), Some(&6));
    }
}
