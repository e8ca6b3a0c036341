//! Hand-written client for the few Okta Management API reads the daemon needs: the users and groups
//! assigned to one app, group members, and a `check` of the credentials
//! (docs/okta-api.md#app-users, #groups). It owns authentication, `Link` paging, rate-limit
//! courtesy, retries and the conversion of Okta JSON into `model` types.
//!
//! It only reads: it must not write to Okta, decide what happens in Postman, or log errors it
//! returns (the caller handles and logs them once). No credential (API token, OAuth private key,
//! access token) ever appears in `Debug` output, logs or errors, and none is sent to any origin
//! other than `org_url`. OAuth service apps (docs/okta-api.md#oauth-service-apps) live in
//! `oauth.rs`, the ring backend of their JWT signatures in `crates/jwt-ring/`.

mod error;
mod events;
mod mapping;
mod oauth;
mod ratelimit;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LINK, RETRY_AFTER,
};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::{Host, Url};

pub use error::{ApiErrorDetails, OAuthProblem, OktaError};
pub use events::{parse_log_event, AppUserRead, LogCursor, LogEvent, LogPage};
pub use mapping::{entitlement, AttributeMapping, AttributeSources, MappingError, Source};
pub use oauth::{OAuthSettings, DEFAULT_SCOPES};

use crate::limits::{self, BodyError};
use crate::metrics::Metrics;
use crate::model::{DesiredUser, OktaGroupId, OktaRead, OktaUserId};
use crate::retry::{retry, Attempt, RetryPolicy};
use ratelimit::{Decision, Limiter, RateHeaders};

/// The `User-Agent` Okta asks integrations to send (docs/okta-api.md#conventions).
const USER_AGENT: &str = concat!("okta-postman-sync/", env!("CARGO_PKG_VERSION"));
/// Largest `limit` of `/apps/{id}/users` (docs/okta-api.md#page-size-limits).
const MAX_APP_USERS_LIMIT: u32 = 500;
/// How many times a page is fetched when its body is not JSON at all.
const DECODE_ATTEMPTS: u32 = 3;
/// Bound on the pages of one listing: 10,000 pages of 500 are far beyond any real org.
const MAX_PAGES: usize = 10_000;
/// Most items one page may hold. We ask for at most 500 (docs/okta-api.md#page-size-limits); 10,000
/// is the largest `limit` any Okta list endpoint documents. Without a bound, a page of 32 MiB of
/// `{"id":"…"}` would become millions of skipped-user records, each with its reason.
const MAX_ITEMS_PER_PAGE: usize = 10_000;
/// Largest error body read (Okta's error objects are a few hundred bytes, docs/okta-api.md#errors):
/// the status says enough when it is longer, and a 5xx that is retried never costs more than this
/// per attempt.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// `limit` of `/apps/{id}/groups`, which allows 20..=200 (docs/okta-api.md#page-size-limits).
const GROUPS_LIMIT: &str = "200";
/// `limit` of `/groups/{id}/users`: the 200 Okta recommends (docs/okta-api.md#page-size-limits).
const GROUP_USERS_LIMIT: &str = "200";

/// How the client authenticates to Okta.
#[derive(Clone, Debug)]
pub enum OktaAuth {
    /// An SSWS API token (docs/okta-api.md#api-tokens-ssws), sent as `Authorization: SSWS <token>`.
    ApiToken(SecretString),
    /// An OAuth 2.0 service app (docs/okta-api.md#oauth-service-apps): client credentials with a
    /// `private_key_jwt` assertion, `Authorization: Bearer <token>`, or `DPoP <token>` with a proof
    /// per request (docs/okta-api.md#dpop).
    OAuth(OAuthSettings),
}

/// Everything the client needs; `config` builds it from the daemon's configuration.
#[derive(Clone, Debug)]
pub struct OktaClientConfig {
    /// The org's base URL, e.g. `https://acme.okta.com`. `http` only for loopback addresses.
    pub org_url: Url,
    /// The id of the Postman app in Okta (`0oa...`).
    pub app_id: String,
    pub auth: OktaAuth,
    /// Page size for app users: 1..=500 (500 saves calls, docs/okta-api.md#app-users).
    pub page_limit: u32,
    /// Never use more than this share of a rate-limit window: (0, 1]. Okta caps one token at 50 %
    /// of a bucket by default (docs/okta-api.md#rate-limits), so 0.5 leaves the rest for other
    /// integrations. A pause lasts until the window's reset (+1 s, by the server's `Date`), at most
    /// `retry.max_wait`.
    pub max_rate_share: f64,
    /// Per-request timeout.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest response body read from Okta (pages, `check`, the token endpoint, error
    /// bodies); a larger answer fails that request with [`OktaError::TooLarge`].
    pub max_body_bytes: usize,
}

/// Default share of a rate-limit window: Okta caps one token at 50 % of a bucket
/// (docs/okta-api.md#rate-limits). The config's default too: written only here.
pub const DEFAULT_MAX_RATE_SHARE: f64 = 0.5;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default (and largest) page of app users.
pub const DEFAULT_PAGE_LIMIT: u32 = MAX_APP_USERS_LIMIT;

impl OktaClientConfig {
    /// A configuration with the documented defaults: 500 app users per page, half of each
    /// rate-limit window, 30 s per request, the default retry policy, bodies of at most
    /// 32 MiB (`limits::MAX_BODY_BYTES`).
    pub fn with_defaults(org_url: Url, app_id: impl Into<String>, auth: OktaAuth) -> Self {
        Self {
            org_url,
            app_id: app_id.into(),
            auth,
            page_limit: DEFAULT_PAGE_LIMIT,
            max_rate_share: DEFAULT_MAX_RATE_SHARE,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_body_bytes: limits::MAX_BODY_BYTES,
        }
    }
}

/// A read of the app users that stopped at a failed page. `read` holds every user read before
/// it (`complete == false`, `incomplete_reason` set): enough to create and update, never enough
/// to deactivate.
#[derive(Debug)]
pub struct PartialRead {
    pub read: OktaRead,
    pub error: OktaError,
}

impl fmt::Display for PartialRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the read of Okta app users is incomplete ({} users read)",
            self.read.users.len()
        )
    }
}

impl std::error::Error for PartialRead {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// One app user as `why` reads it (`GET /apps/{appId}/users/{userId}?expand=user`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppUserView {
    pub okta_id: OktaUserId,
    /// `USER` (assigned directly) or `GROUP` (only through group membership), A2.1.
    pub scope: Option<String>,
    pub app_user_status: Option<String>,
    /// The embedded Okta user's status (A2.4).
    pub user_status: Option<String>,
    /// The person as the sync would map them, exactly as a full read does; `Err` is the reason
    /// the read would skip them.
    pub mapped: Result<DesiredUser, String>,
    /// Which mapping source supplied each attribute.
    pub sources: AttributeSources,
}

/// An Okta user found by id or login (`GET /api/v1/users/{id}`), for `why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserView {
    pub okta_id: OktaUserId,
    pub status: Option<String>,
    pub login: Option<String>,
}

/// The Okta client. Cheap to clone; clones share the connection pool and rate-limit state.
#[derive(Clone)]
pub struct OktaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    org_url: Url,
    app_id: String,
    auth: Authorizer,
    page_limit: u32,
    retry: RetryPolicy,
    limiter: Mutex<Limiter>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
}

/// Produces the `Authorization` header (and a DPoP proof): a static SSWS value, or OAuth's
/// cached, refreshed access token.
enum Authorizer {
    /// Precomputed, marked sensitive so `http` never prints it.
    Static(HeaderValue),
    OAuth(Box<oauth::TokenSource>),
}

impl fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OktaClient")
            .field("org_url", &self.inner.org_url.as_str())
            .field("app_id", &self.inner.app_id)
            .finish_non_exhaustive()
    }
}

/// One decoded answer.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    /// The raw body of a successful answer, decoded by the caller: app-user pages go straight
    /// into typed records ([`OktaClient::read_app_users`]), everything else through [`Value`].
    body: Vec<u8>,
    /// The raw `rel="next"` target, if any.
    next: Option<String>,
}

impl OktaClient {
    pub fn new(cfg: OktaClientConfig, metrics: Arc<Metrics>) -> Result<Self, OktaError> {
        validate(&cfg)?;
        let auth = match &cfg.auth {
            OktaAuth::ApiToken(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("SSWS {}", token.expose_secret().trim()))
                        .map_err(|_| {
                            config_error(
                                "the API token has characters not allowed in an HTTP header",
                            )
                        })?;
                value.set_sensitive(true);
                Authorizer::Static(value)
            }
            OktaAuth::OAuth(settings) => Authorizer::OAuth(Box::new(oauth::TokenSource::new(
                &cfg.org_url,
                settings,
                cfg.max_body_bytes,
            )?)),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(cfg.timeout)
            // The Okta API does not redirect; never carry the token anywhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| config_error(&format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                org_url: cfg.org_url,
                app_id: cfg.app_id,
                auth,
                page_limit: cfg.page_limit,
                retry: cfg.retry,
                limiter: Mutex::new(Limiter::new(cfg.max_rate_share)),
                metrics,
                max_body_bytes: cfg.max_body_bytes,
            }),
        })
    }

    /// Reads every app user (GET /api/v1/apps/{appId}/users?limit=500&expand=user, following
    /// each Link rel="next" URL opaquely), converting each page into model::DesiredUser as it
    /// arrives (never holding the raw JSON of more than one page). `Ok` is a complete read.
    /// `Err(PartialRead{read, error})`: some page failed after retries; `read` holds what was read
    /// (`read.complete = false`, `incomplete_reason` set) so the caller can still create and
    /// update, but not deactivate.
    pub async fn read_app_users(
        &self,
        mapping: &AttributeMapping,
    ) -> Result<OktaRead, PartialRead> {
        let mut read = OktaRead {
            complete: true,
            ..OktaRead::default()
        };
        let limit = self.inner.page_limit.to_string();
        let first = self.url(
            &["apps", &self.inner.app_id, "users"],
            &[("limit", &limit), ("expand", "user")],
        );
        let result = self
            .for_each_raw_page(first, |endpoint, fetched| {
                // Fast path: each item straight into a typed record, skipping the fields we do
                // not read without building a JSON tree (issue 6: a 100k-user read spent most
                // of its CPU allocating and freeing `Value`s). At the first item that does not
                // fit the typed shape or has no id, the page goes again the general way, which
                // reports exactly what is wrong with which item (absorbing an item twice is
                // harmless: users are keyed by id).
                let fast = for_each_item::<wire::AppUserItem, _>(endpoint, fetched, |item| {
                    if item.id.as_deref().is_none_or(str::is_empty) {
                        return Err(decode_error(endpoint, "an app user without an id".into()));
                    }
                    let (id, app) = item.split();
                    absorb_typed_app_user(OktaUserId(id), &app, mapping, &mut read);
                    Ok(())
                });
                match fast {
                    Ok(()) => Ok(()),
                    Err(_) => for_each_item::<wire::BoundedValue, _>(endpoint, fetched, |item| {
                        absorb_app_user(endpoint, item.0, mapping, &mut read)
                    }),
                }
            })
            .await;
        match result {
            Ok(()) => Ok(read),
            Err(error) => {
                read.complete = false;
                read.incomplete_reason = Some(format!(
                    "reading the Okta app users stopped after {} users: {error}",
                    read.users.len() + read.skipped.len()
                ));
                Err(PartialRead { read, error })
            }
        }
    }

    /// The groups assigned to the app, with their `profile.name`, sorted by id
    /// (GET /api/v1/apps/{appId}/groups?limit=200&expand=group). A group whose name Okta does
    /// not return is listed under its id.
    pub async fn list_app_groups(&self) -> Result<Vec<(OktaGroupId, String)>, OktaError> {
        let first = self.url(
            &["apps", &self.inner.app_id, "groups"],
            &[("limit", GROUPS_LIMIT), ("expand", "group")],
        );
        let mut groups = BTreeMap::new();
        self.for_each_page(first, |endpoint, item| {
            let id = item_id(endpoint, &item, "group assignment")?;
            let assignment: wire::GroupAssignment = serde_json::from_value(item)
                .map_err(|e| decode_error(endpoint, format!("group assignment {id}: {e}")))?;
            let name = assignment
                .embedded
                .and_then(|e| e.group)
                .and_then(|g| g.profile)
                .and_then(|p| p.name)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| id.clone());
            groups.insert(OktaGroupId(id), name);
            Ok(())
        })
        .await?;
        Ok(groups.into_iter().collect())
    }

    /// The ids of a group's members (GET /api/v1/groups/{groupId}/users?limit=200).
    pub async fn list_group_members(
        &self,
        group: &OktaGroupId,
    ) -> Result<BTreeSet<OktaUserId>, OktaError> {
        let first = self.url(
            &["groups", group.as_str(), "users"],
            &[("limit", GROUP_USERS_LIMIT)],
        );
        let mut members = BTreeSet::new();
        self.for_each_raw_page(first, |endpoint, fetched| {
            // Fast path, as for app users: only the ids, without a JSON tree of every member's
            // full User object. Anything unexpected goes the general way, which names the fault.
            let fast = for_each_item::<wire::IdOnly, _>(endpoint, fetched, |item| match item.id {
                Some(id) if !id.is_empty() => {
                    members.insert(OktaUserId(id));
                    Ok(())
                }
                _ => Err(decode_error(
                    endpoint,
                    "a group member without an id".into(),
                )),
            });
            match fast {
                Ok(()) => Ok(()),
                Err(_) => for_each_item::<wire::BoundedValue, _>(endpoint, fetched, |item| {
                    members.insert(OktaUserId(item_id(endpoint, &item.0, "group member")?));
                    Ok(())
                }),
            }
        })
        .await?;
        Ok(members)
    }

    /// One app user (GET /api/v1/apps/{appId}/users/{userId}?expand=user, A2), mapped the way
    /// a full read maps it. `Ok(None)`: Okta answered 404, which for an app this org has means
    /// the person is not assigned (callers first read something else of the app, such as its
    /// groups, so a wrong app id is not mistaken for "not assigned").
    pub async fn get_app_user(
        &self,
        user: &OktaUserId,
        mapping: &AttributeMapping,
    ) -> Result<Option<AppUserView>, OktaError> {
        let url = self.url(
            &["apps", &self.inner.app_id, "users", user.as_str()],
            &[("expand", "user")],
        );
        let Some(fetched) = not_found_is_none(self.get(&url).await)? else {
            return Ok(None);
        };
        let item: wire::AppUserWithScope = serde_json::from_slice(&fetched.body)
            .map_err(|e| decode_error(url.path(), format!("app user {user}: {e}")))?;
        let app = item.app_user;
        let embedded = app.embedded.as_ref().and_then(|e| e.user.as_ref());
        Ok(Some(AppUserView {
            okta_id: user.clone(),
            scope: item.scope,
            app_user_status: app.status.clone(),
            user_status: embedded.and_then(|u| u.status.clone()),
            sources: mapping::sources(&app, mapping),
            mapped: mapping::desired_user(user.clone(), &app, mapping).map_err(|(_, why)| why),
        }))
    }

    /// An Okta user by id or login (GET /api/v1/users/{id}: "id, login, or unambiguous login
    /// shortname", A2). `Ok(None)` when Okta answers 404.
    pub async fn get_user(&self, id_or_login: &str) -> Result<Option<UserView>, OktaError> {
        let url = self.url(&["users", id_or_login], &[]);
        let Some(fetched) = not_found_is_none(self.get(&url).await)? else {
            return Ok(None);
        };
        let u: wire::UserRecord = serde_json::from_slice(&fetched.body)
            .map_err(|e| decode_error(url.path(), format!("user: {e}")))?;
        let Some(id) = u.id.filter(|id| !id.is_empty()) else {
            return Err(decode_error(url.path(), "a user without an id".into()));
        };
        Ok(Some(UserView {
            okta_id: OktaUserId(id),
            status: u.status,
            login: u
                .profile
                .as_ref()
                .and_then(|p| p.get("login"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }))
    }

    /// The groups a user belongs to, with their `profile.name`, sorted by id
    /// (GET /api/v1/users/{id}/groups, A2 `listUserGroups`; `Link` paging followed if sent).
    pub async fn list_user_groups(
        &self,
        user: &OktaUserId,
    ) -> Result<Vec<(OktaGroupId, String)>, OktaError> {
        let first = self.url(&["users", user.as_str(), "groups"], &[]);
        let mut groups = BTreeMap::new();
        self.for_each_page(first, |endpoint, item| {
            let id = item_id(endpoint, &item, "group")?;
            let group: wire::UserGroup = serde_json::from_value(item)
                .map_err(|e| decode_error(endpoint, format!("group {id}: {e}")))?;
            let name = group
                .profile
                .and_then(|p| p.name)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| id.clone());
            groups.insert(OktaGroupId(id), name);
            Ok(())
        })
        .await?;
        Ok(groups.into_iter().collect())
    }

    /// For `check`: GET /api/v1/apps/{appId}, then one-item reads of the app users and app
    /// groups (no paging). Returns the app's label.
    pub async fn check(&self) -> Result<String, OktaError> {
        let app_url = self.url(&["apps", &self.inner.app_id], &[]);
        let fetched = self.get(&app_url).await?;
        check_json(app_url.path(), &fetched)?;
        let app: wire::Application = serde_json::from_slice(&fetched.body)
            .map_err(|e| decode_error(app_url.path(), format!("application: {e}")))?;
        let label = app
            .label
            .or(app.name)
            .or(app.id)
            .unwrap_or_else(|| self.inner.app_id.clone());
        let users = self.url(
            &["apps", &self.inner.app_id, "users"],
            &[("limit", "1"), ("expand", "user")],
        );
        // 20 is the smallest limit /apps/{id}/groups accepts (docs/okta-api.md#page-size-limits).
        let groups = self.url(&["apps", &self.inner.app_id, "groups"], &[("limit", "20")]);
        for url in [users, groups] {
            let fetched = self.get(&url).await?;
            check_json_array(url.path(), &fetched)?;
        }
        Ok(label)
    }

    /// `org_url` + `/api/v1/<segments>` (each segment percent-encoded) + `query`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.org_url.clone();
        url.set_query(None);
        url.path_segments_mut()
            .expect("org_url is an http(s) URL (validated), so it can be a base")
            .clear()
            .extend(["api", "v1"])
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Fetches `first` and every page after it, handing each item of each page to `on_item`.
    async fn for_each_page<F>(&self, first: Url, mut on_item: F) -> Result<(), OktaError>
    where
        F: FnMut(&str, Value) -> Result<(), OktaError>,
    {
        self.for_each_raw_page(first, |endpoint, fetched| {
            for_each_item::<wire::BoundedValue, _>(endpoint, fetched, |item| {
                on_item(endpoint, item.0)
            })
        })
        .await
    }

    /// Fetches `first` and every page after it, handing each undecoded page to `on_page`.
    async fn for_each_raw_page<F>(&self, first: Url, mut on_page: F) -> Result<(), OktaError>
    where
        F: FnMut(&str, &Fetched) -> Result<(), OktaError>,
    {
        let mut url = first;
        // Every page URL read so far: a `next` link back to any of them (a server bug, or a
        // proxy rewriting links) would otherwise page forever.
        let mut seen = std::collections::BTreeSet::new();
        loop {
            if seen.len() >= MAX_PAGES {
                return Err(OktaError::BadNextLink {
                    endpoint: url.path().to_string(),
                    detail: format!("paging did not end after {MAX_PAGES} pages"),
                });
            }
            seen.insert(url.to_string());
            let mut attempt = 0;
            let fetched = loop {
                attempt += 1;
                let fetched = self.get(&url).await?;
                match on_page(url.path(), &fetched) {
                    Ok(()) => break fetched,
                    // A body that is not JSON at all (cut off, a proxy's HTML page) was rejected
                    // before any item was taken from it: the page is safe to ask for again. A
                    // well-formed page with bad items is not retried: it would fail the same way.
                    Err(e @ OktaError::Decode { .. })
                        if attempt < DECODE_ATTEMPTS
                            && serde_json::from_slice::<serde::de::IgnoredAny>(&fetched.body)
                                .is_err() =>
                    {
                        tracing::warn!(error = %e, attempt, "undecodable Okta page; asking again");
                        self.inner.metrics.retry("okta");
                    }
                    Err(e) => return Err(e),
                }
            };
            match fetched.next {
                None => return Ok(()),
                Some(next) => {
                    let next = self.next_url(&url, &next)?;
                    if seen.contains(next.as_str()) {
                        return Err(OktaError::BadNextLink {
                            endpoint: url.path().to_string(),
                            detail:
                                "it points back at a page already read (paging would never end)"
                                    .to_string(),
                        });
                    }
                    url = next;
                }
            }
        }
    }

    /// Resolves a `rel="next"` target. It is used as given (opaque, docs/okta-api.md#paging), but
    /// only if it stays on the org's origin: the token goes wherever the link points.
    fn next_url(&self, current: &Url, raw: &str) -> Result<Url, OktaError> {
        let endpoint = current.path();
        let next = current.join(raw).map_err(|e| OktaError::BadNextLink {
            endpoint: endpoint.to_string(),
            detail: format!("not a URL ({e})"),
        })?;
        if next.origin() != self.inner.org_url.origin() {
            return Err(OktaError::ForeignNextLink {
                endpoint: endpoint.to_string(),
                origin: next.origin().ascii_serialization(),
            });
        }
        if &next == current {
            return Err(OktaError::BadNextLink {
                endpoint: endpoint.to_string(),
                detail: "it points back at the page just read".to_string(),
            });
        }
        Ok(next)
    }

    /// One GET with courtesy pacing and retries; the body is left undecoded. With OAuth, a 401
    /// (the token expired early or was revoked) refreshes the token once and tries again
    /// (docs/okta-api.md#oauth-service-apps).
    async fn get(&self, url: &Url) -> Result<Fetched, OktaError> {
        let bucket = ratelimit::bucket_key(url.path());
        let inner = &self.inner;
        let used = AtomicU64::new(0);
        let first = retry(&inner.retry, &inner.metrics, "okta", || {
            self.attempt(url, &bucket, &used)
        })
        .await;
        match (&inner.auth, first) {
            (Authorizer::OAuth(source), Err(e)) if e.status() == Some(401) => {
                tracing::debug!("Okta refused the access token: fetching a new one");
                source.invalidate(used.load(Ordering::Relaxed)).await;
                retry(&inner.retry, &inner.metrics, "okta", || {
                    self.attempt(url, &bucket, &used)
                })
                .await
            }
            (_, result) => result,
        }
    }

    async fn attempt(
        &self,
        url: &Url,
        bucket: &str,
        used: &AtomicU64,
    ) -> Result<Fetched, Attempt<OktaError>> {
        let inner = &self.inner;
        let endpoint = url.path();
        self.courtesy_pause(bucket).await;
        let request = inner.http.get(url.clone());
        let request = match &inner.auth {
            Authorizer::Static(auth) => request.header(AUTHORIZATION, auth.clone()),
            Authorizer::OAuth(source) => {
                // The token fetch has its own retries; a failure here is final.
                let cred = source
                    .credential(&inner.http, &inner.retry, &inner.metrics, "GET", url)
                    .await
                    .map_err(Attempt::Permanent)?;
                used.store(cred.generation, Ordering::Relaxed);
                oauth::authorize(request, &cred)
            }
        };
        let sent = request.send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                inner.metrics.okta_request(0);
                return Err(transport_attempt(endpoint, e));
            }
        };
        let status = response.status();
        inner.metrics.okta_request(status.as_u16());
        let headers = response.headers().clone();
        let rate = RateHeaders::from_headers(&headers);
        let until_reset = rate.map(|r| {
            let server_now = ratelimit::server_date(&headers);
            ratelimit::reset_wait(r.reset, server_now, Utc::now(), inner.retry.max_wait)
        });
        if let (Some(rate), Some(wait)) = (rate, until_reset) {
            inner
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(bucket, rate, wait, Instant::now());
        }
        if status.is_success() {
            let body = read_capped(endpoint, status, response, inner.max_body_bytes).await?;
            return Ok(Fetched {
                status,
                next: next_link(&headers),
                headers,
                body,
            });
        }
        let body = read_error_body(response, inner.max_body_bytes).await;
        let mut err = api_error(status, endpoint, &headers, &body);
        if let (OktaError::Api { details, .. }, Authorizer::OAuth(_)) = (&mut err, &inner.auth) {
            details.via_oauth = true;
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Wait until the window resets (Reset - Date + 1 s, capped;
            // docs/okta-api.md#rate-limits). Okta sends no `Retry-After`, but a proxy in front of
            // it may: used only without the rate-limit headers, clamped like them.
            let wait = until_reset.or_else(|| retry_after(&headers, inner.retry.max_wait));
            if let Some(wait) = wait {
                inner.metrics.rate_limit_wait("okta", wait.as_secs_f64());
            }
            return Err(Attempt::Transient {
                err,
                retry_after: wait,
            });
        }
        if status.is_server_error() {
            return Err(Attempt::Transient {
                err,
                retry_after: None,
            });
        }
        Err(Attempt::Permanent(err))
    }

    /// Waits while this client has used its share of the bucket's current window.
    async fn courtesy_pause(&self, bucket: &str) {
        loop {
            let decision = self
                .inner
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .acquire(bucket, Instant::now());
            match decision {
                Decision::Go => return,
                Decision::Wait(wait) => {
                    self.inner
                        .metrics
                        .rate_limit_wait("okta", wait.as_secs_f64());
                    tracing::debug!(
                        bucket,
                        wait_ms = wait.as_millis() as u64,
                        "pausing to stay within our share of Okta's rate limit"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A single-resource read whose 404 means "there is none" (E0000007, A6).
fn not_found_is_none(r: Result<Fetched, OktaError>) -> Result<Option<Fetched>, OktaError> {
    match r {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

fn config_error(reason: &str) -> OktaError {
    OktaError::Config {
        reason: reason.to_string(),
    }
}

fn validate(cfg: &OktaClientConfig) -> Result<(), OktaError> {
    let url = &cfg.org_url;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => return Err(config_error("org_url has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(config_error(
                "org_url must use https (Okta requires it; http is only for loopback test servers)",
            ))
        }
        other => {
            return Err(config_error(&format!(
                "org_url scheme {other:?} is not https"
            )))
        }
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(
            "org_url must be the org's base URL, like https://acme.okta.com (no path or query)",
        ));
    }
    if url.username() != "" || url.password().is_some() {
        return Err(config_error("org_url must not carry credentials"));
    }
    if cfg.app_id.is_empty() || !cfg.app_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(config_error(
            "app_id must be the Okta app id (letters and digits, like 0oa1b2c3d4)",
        ));
    }
    if !(1..=MAX_APP_USERS_LIMIT).contains(&cfg.page_limit) {
        return Err(config_error("page_limit must be between 1 and 500"));
    }
    if !(cfg.max_rate_share > 0.0 && cfg.max_rate_share <= 1.0) {
        return Err(config_error("max_rate_share must be above 0 and at most 1"));
    }
    if cfg.timeout.is_zero() {
        return Err(config_error("timeout must be above zero"));
    }
    if cfg.max_body_bytes == 0 {
        return Err(config_error("max_body_bytes must be above zero"));
    }
    match &cfg.auth {
        OktaAuth::ApiToken(t) if t.expose_secret().trim().is_empty() => {
            Err(config_error("the API token is empty"))
        }
        OktaAuth::ApiToken(_) => Ok(()),
        OktaAuth::OAuth(s) if s.client_id.trim().is_empty() => {
            Err(config_error("the OAuth client_id is empty"))
        }
        OktaAuth::OAuth(s) if s.scopes.is_empty() => {
            Err(config_error("the OAuth scopes are empty"))
        }
        OktaAuth::OAuth(_) => Ok(()),
    }
}

/// Adds one app user of a page to `read`. An item without an id makes the page unreadable
/// (it could not even be reported as skipped, and silently dropping it could deactivate it).
fn absorb_app_user(
    endpoint: &str,
    item: Value,
    mapping: &AttributeMapping,
    read: &mut OktaRead,
) -> Result<(), OktaError> {
    let id = OktaUserId(item_id(endpoint, &item, "app user")?);
    match serde_json::from_value::<wire::AppUser>(item) {
        Err(e) => {
            read.skipped
                .insert(id, format!("Okta's app user record could not be read: {e}"));
        }
        Ok(app) => absorb_typed_app_user(id, &app, mapping, read),
    }
    Ok(())
}

/// Maps one decoded app user into `read`, as a desired user or a skipped one.
fn absorb_typed_app_user(
    id: OktaUserId,
    app: &wire::AppUser,
    mapping: &AttributeMapping,
    read: &mut OktaRead,
) {
    match mapping::desired_user(id, app, mapping) {
        Ok(user) => {
            read.users.insert(user.okta_id.clone(), user);
        }
        Err((id, reason)) => {
            read.skipped.insert(id, reason);
        }
    }
}

/// The non-empty string `id` of a list item.
fn item_id(endpoint: &str, item: &Value, what: &str) -> Result<String, OktaError> {
    item.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| decode_error(endpoint, format!("a {what} without an id")))
}

/// A list item or object that cannot be read. Only bodies of successful answers are decoded,
/// and every Okta read here answers 200.
fn decode_error(endpoint: &str, detail: String) -> OktaError {
    OktaError::Decode {
        endpoint: endpoint.to_string(),
        status: 200,
        detail,
    }
}

/// Hands each item of a JSON array page to `on_item`, one at a time: memory holds the raw page
/// and one decoded item, never a decoded copy of the whole page (a page of 32 MiB of `{},`
/// would otherwise decode to gigabytes of records). The body is checked to be JSON first,
/// without allocating, so a cut-off or HTML page is reported before any item is taken.
fn for_each_item<T, F>(endpoint: &str, fetched: &Fetched, mut on_item: F) -> Result<(), OktaError>
where
    T: serde::de::DeserializeOwned,
    F: FnMut(T) -> Result<(), OktaError>,
{
    check_json_array(endpoint, fetched)?;
    let mut stopped = None;
    let mut count = 0usize;
    let mut counted = |item: T| {
        count += 1;
        if count > MAX_ITEMS_PER_PAGE {
            return Err(decode_error(
                endpoint,
                format!(
                    "the page holds more than {MAX_ITEMS_PER_PAGE} items, far more than the \
                     {MAX_APP_USERS_LIMIT} at most asked for"
                ),
            ));
        }
        on_item(item)
    };
    let mut de = serde_json::Deserializer::from_slice(&fetched.body);
    let visitor = EachItem {
        on_item: &mut counted,
        stopped: &mut stopped,
        item: std::marker::PhantomData,
    };
    let result = serde::Deserializer::deserialize_seq(&mut de, visitor);
    if let Some(e) = stopped {
        return Err(e);
    }
    result.map_err(|e| OktaError::Decode {
        endpoint: endpoint.to_string(),
        status: fetched.status.as_u16(),
        detail: format!("an item of the page has the wrong shape ({e})"),
    })
}

/// The visitor behind [`for_each_item`]: decodes one element, hands it over, drops it.
struct EachItem<'a, T, F> {
    on_item: &'a mut F,
    /// The callback's error, which stops the walk (serde only carries its own error type).
    stopped: &'a mut Option<OktaError>,
    item: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T, F> serde::de::Visitor<'de> for EachItem<'_, T, F>
where
    T: serde::de::DeserializeOwned,
    F: FnMut(T) -> Result<(), OktaError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<T>()? {
            if let Err(e) = (self.on_item)(item) {
                *self.stopped = Some(e);
                return Err(serde::de::Error::custom("stopped by the item's error"));
            }
        }
        Ok(())
    }
}

/// The body is JSON (checked without building anything).
fn check_json(endpoint: &str, fetched: &Fetched) -> Result<(), OktaError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(&fetched.body)
        .map(|_| ())
        .map_err(|e| {
            decode_failure(
                endpoint,
                fetched.status,
                &fetched.headers,
                &fetched.body,
                &e,
            )
        })
}

/// The body is a JSON array.
fn check_json_array(endpoint: &str, fetched: &Fetched) -> Result<(), OktaError> {
    check_json(endpoint, fetched)?;
    let first = fetched
        .body
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace());
    let kind = match first {
        Some(b'[') => return Ok(()),
        Some(b'{') => "an object",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    Err(OktaError::Decode {
        endpoint: endpoint.to_string(),
        status: fetched.status.as_u16(),
        detail: format!("expected a JSON array, got {kind}"),
    })
}

/// Why a body is not JSON, in an operator's words.
fn decode_failure(
    endpoint: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    e: &serde_json::Error,
) -> OktaError {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no Content-Type");
    let detail = if body.is_empty() {
        format!("empty body ({content_type})")
    } else if !content_type.contains("json") || body.trim_ascii_start().starts_with(b"<") {
        format!(
            "expected JSON, got {content_type} starting {:?}",
            snippet(body)
        )
    } else if e.is_eof() {
        format!("JSON cut off after {} bytes ({e})", body.len())
    } else {
        format!("malformed JSON ({e})")
    };
    OktaError::Decode {
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        detail,
    }
}

/// Reads a successful answer's body with the cap. Too large is permanent (a server that sent
/// 300 MB once will again); a connection that breaks mid-body may be retried.
async fn read_capped(
    endpoint: &str,
    status: StatusCode,
    response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, Attempt<OktaError>> {
    match limits::read_body(response, cap).await {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge { declared, cap }) => {
            Err(Attempt::Permanent(OktaError::TooLarge {
                endpoint: endpoint.to_string(),
                status: status.as_u16(),
                declared,
                cap,
            }))
        }
        Err(BodyError::Transport(e)) => Err(transport_attempt(endpoint, e)),
    }
}

/// Reads an error answer's body, at most [`MAX_ERROR_BODY_BYTES`]. A body that is too long or
/// breaks off is dropped: the status says enough.
async fn read_error_body(response: reqwest::Response, cap: usize) -> Vec<u8> {
    limits::read_body(response, cap.min(MAX_ERROR_BODY_BYTES))
        .await
        .unwrap_or_default()
}

/// A `Retry-After` hint (RFC 9110 section 10.2.3, https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3),
/// judged by the server's `Date` when it sent one, at most `max`.
fn retry_after(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let now = ratelimit::server_date(headers).unwrap_or_else(Utc::now);
    limits::parse_retry_after(value, now).map(|d| d.min(max))
}

/// The first characters of a body, whitespace collapsed, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let mut s: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 60 {
        s = s.chars().take(60).collect::<String>() + "…";
    }
    s
}

fn transport_attempt(endpoint: &str, e: reqwest::Error) -> Attempt<OktaError> {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response body broke off"
    } else if e.is_builder() {
        "the request could not be built"
    } else {
        "the request failed"
    };
    let permanent = e.is_builder();
    let err = OktaError::Transport {
        endpoint: endpoint.to_string(),
        kind,
        source: e.without_url(),
    };
    if permanent {
        Attempt::Permanent(err)
    } else {
        Attempt::Transient {
            err,
            retry_after: None,
        }
    }
}

fn api_error(status: StatusCode, endpoint: &str, headers: &HeaderMap, body: &[u8]) -> OktaError {
    // The body may be empty or not JSON (bearer failures can carry only WWW-Authenticate:
    // docs/okta-api.md#errors).
    let parsed: wire::ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    OktaError::Api {
        status: status.as_u16(),
        endpoint: endpoint.to_string(),
        details: Box::new(ApiErrorDetails {
            error_code: parsed.error_code,
            error_summary: parsed.error_summary,
            error_id: parsed.error_id,
            request_id: header("x-okta-request-id"),
            www_authenticate_error: headers
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(www_authenticate_error),
            www_authenticate_scope: headers
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| auth_param(v, "scope")),
            via_oauth: false,
        }),
    }
}

/// The `error` auth-param of a `WWW-Authenticate` value (`Bearer ..., error="insufficient_scope"`).
fn www_authenticate_error(value: &str) -> Option<String> {
    auth_param(value, "error")
}

/// One auth-param (`name="value"` or `name=token`) of a `WWW-Authenticate` value.
fn auth_param(value: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let mut rest = value;
    while let Some(pos) = rest.find(&key) {
        let at_boundary = rest[..pos]
            .chars()
            .next_back()
            .is_none_or(|c| c == ' ' || c == ',');
        let after = &rest[pos + key.len()..];
        if at_boundary {
            let v = match after.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or(""),
                None => after.split([',', ' ']).next().unwrap_or(""),
            };
            return Some(v.to_string());
        }
        rest = after;
    }
    None
}

/// The target of the first `rel="next"` link, looking at every `Link` header line and at every
/// comma-separated link-value inside one (RFC 8288; docs/okta-api.md#paging).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_link_values)
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let is_next = params.split(';').any(|param| {
                param.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("rel")
                        && value
                            .trim()
                            .trim_matches('"')
                            .split_whitespace()
                            .any(|rel| rel.eq_ignore_ascii_case("next"))
                })
            });
            is_next.then(|| target.trim().to_string())
        })
}

/// Splits a `Link` header value at the commas between link-values (not those inside `<...>` or
/// quotes).
fn split_link_values(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_target, mut in_quotes, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quotes => in_target = true,
            '>' if !in_quotes => in_target = false,
            '"' if !in_target => in_quotes = !in_quotes,
            ',' if !in_target && !in_quotes => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}
