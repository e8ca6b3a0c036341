//! The Postman SCIM 2.0 client: users (list, look up, create, replace, activate/deactivate,
//! rename), groups (list, look up, create, rename, add/remove members, delete) and the
//! credential check, with proactive pacing (`pacing`), the shared retry loop (`crate::retry`),
//! typed errors (`error`) and private wire types (`wire`). It sends the documented bodies
//! (docs/postman-scim.md) in their RFC-strict form where Postman is silent (a PUT carries every
//! attribute the product owns; members are removed by filter path, with a remembered fallback to
//! a value list) and returns domain types from `crate::model`. It trusts no answer: redirects
//! are errors, bodies are read with a cap, and header values are clamped.
//!
//! It must not decide what to change (that is the planner's job), must never send a user DELETE
//! (Postman has none: docs/postman-scim.md#endpoints-used), must never retry a POST that may have
//! reached Postman, must never follow a redirect, and must never let the API key reach a log, a
//! `Debug` string or an error.

mod error;
mod pacing;
mod wire;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, DATE, LOCATION, RETRY_AFTER,
};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use url::Url;

pub use error::ScimError;

use crate::limits::{self, BodyError};
use crate::metrics::Metrics;
use crate::model::{PostmanGroup, PostmanUser, ScimGroupId, ScimUserId, UserAttrs};
use crate::retry::{retry, Attempt, RetryPolicy};
use error::{is_non_idempotent, is_retryable_status};
use pacing::{Bucket, Pacer};
use wire::escape_filter_value;

/// The base URL Postman tells IdPs to use (docs/postman-scim.md#base-url-and-authentication).
pub const DEFAULT_BASE_URL: &str = "https://api.getpostman.com/scim/v2";

/// How many times a GET is sent when its answer does not decode.
const DECODE_ATTEMPTS: u32 = 3;

/// SCIM page size: Postman's default and its advertised `filter.maxResults`
/// (docs/postman-scim.md#listing-and-filtering, #page-size).
const PAGE_SIZE: u64 = 100;

/// Most of an error (non-2xx) body that is read: enough for any SCIM error's `detail`, so a
/// huge 500 page is never read whole.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// A listing that has not ended after this many pages is a server that ignores `startIndex`.
const MAX_PAGES: u32 = 10_000;

/// Most members changed by one group PATCH.
const MEMBER_CHUNK: usize = 100;

/// How the key goes into the `Authorization` header (docs/postman-scim.md#bearer-prefix).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthScheme {
    /// The key is the whole header value: what Postman's own clients send.
    #[default]
    Raw,
    /// `Bearer <key>`.
    Bearer,
}

/// Everything the client needs. `Debug` shows no secret (`SecretString` redacts itself).
#[derive(Clone, Debug)]
pub struct ScimClientConfig {
    /// Default [`DEFAULT_BASE_URL`]; a trailing slash is tolerated.
    pub base_url: Url,
    pub api_key: SecretString,
    pub auth_scheme: AuthScheme,
    /// POST, PUT, PATCH and DELETE per minute (Postman allows 180:
    /// docs/postman-scim.md#rate-limits).
    pub writes_per_minute: u32,
    /// GET per minute (Postman allows 300: docs/postman-scim.md#rate-limits).
    pub reads_per_minute: u32,
    /// Per request.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest response body read (default 32 MiB, `limits::MAX_BODY_BYTES`); a larger one is an
    /// error for that request, refused before reading when `Content-Length` declares it.
    pub max_body_bytes: usize,
}

/// Postman's per-team write limit (docs/postman-scim.md#rate-limits), the default pace. The
/// config's default too: written only here.
pub const DEFAULT_WRITES_PER_MINUTE: u32 = 180;
/// Postman's per-team read limit (docs/postman-scim.md#rate-limits), the default pace.
pub const DEFAULT_READS_PER_MINUTE: u32 = 300;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl ScimClientConfig {
    /// The documented defaults, with this key.
    pub fn new(api_key: SecretString) -> Self {
        Self {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("the default base URL is valid"),
            api_key,
            auth_scheme: AuthScheme::default(),
            writes_per_minute: DEFAULT_WRITES_PER_MINUTE,
            reads_per_minute: DEFAULT_READS_PER_MINUTE,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_body_bytes: limits::MAX_BODY_BYTES,
        }
    }
}

/// Result of `create_user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created(PostmanUser),
    /// 409 `uniqueness` (docs/postman-scim.md#creating-a-user): look the user up and reconcile.
    AlreadyExists {
        detail: String,
    },
}

/// Result of `create_group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupCreateOutcome {
    Created(PostmanGroup),
    /// 409 `uniqueness` (docs/postman-scim.md#groups): look the group up and reconcile.
    AlreadyExists {
        detail: String,
    },
}

/// A Postman SCIM client. Cheap to clone; clones share the connection pool and the pacing
/// buckets, so the per-team limits hold across every task that uses them.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Always ends in a non-empty last segment (no trailing slash).
    base: Url,
    auth: HeaderValue,
    /// Kept only to scrub it from anything the server echoes back.
    key: SecretString,
    timeout: Duration,
    retry: RetryPolicy,
    pacer: Pacer,
    metrics: Arc<Metrics>,
    max_body: usize,
    /// The member-removal form this server accepts, as a [`RemovalForm`]: the RFC filter path
    /// until the server refuses it and the value list works. Shared by clones, kept for the
    /// life of the client (the daemon's whole process).
    removal_form: AtomicU8,
}

/// The two ways of removing group members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum RemovalForm {
    /// `{"op":"remove","path":"members[value eq \"<id>\"]"}`, one per member: RFC 7644
    /// §3.5.2.2 (<https://www.rfc-editor.org/rfc/rfc7644#section-3.5.2.2>) and Okta's group push.
    FilterPath = 0,
    /// `{"op":"remove","path":"members","value":[{"value":"<id>"}, ...]}`: what Entra ID sends.
    ValueList = 1,
}

impl RemovalForm {
    fn from_u8(v: u8) -> Self {
        if v == RemovalForm::ValueList as u8 {
            RemovalForm::ValueList
        } else {
            RemovalForm::FilterPath
        }
    }

    fn other(self) -> Self {
        match self {
            RemovalForm::FilterPath => RemovalForm::ValueList,
            RemovalForm::ValueList => RemovalForm::FilterPath,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RemovalForm::FilterPath => "filter path (members[value eq \"<id>\"])",
            RemovalForm::ValueList => "value list (path members, value [{value: <id>}])",
        }
    }
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Patch => Method::PATCH,
            Verb::Delete => Method::DELETE,
        }
    }
}

/// A success response: its raw body (may be empty, or not JSON, for a 204 or a write).
struct Reply {
    body: Vec<u8>,
}

impl ScimClient {
    pub fn new(cfg: ScimClientConfig, metrics: Arc<Metrics>) -> Result<Self, ScimError> {
        let base = normalise_base(cfg.base_url)?;
        let key = cfg.api_key.expose_secret();
        if key.trim().is_empty() {
            return Err(ScimError::Config("the SCIM API key is empty".into()));
        }
        let value = match cfg.auth_scheme {
            AuthScheme::Raw => key.to_owned(),
            AuthScheme::Bearer => format!("Bearer {key}"),
        };
        let mut auth = HeaderValue::from_str(&value).map_err(|_| {
            ScimError::Config(
                "the SCIM API key contains characters that cannot be sent in an HTTP header".into(),
            )
        })?;
        auth.set_sensitive(true);

        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("okta-postman-sync/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(cfg.timeout)
            // A redirect would re-send members' data somewhere else and store that server's
            // ids as Postman's: a 3xx is an error instead (see `send`).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ScimError::Config(format!("building the HTTP client: {e}")))?;
        let pacer = Pacer::new(cfg.reads_per_minute, cfg.writes_per_minute)?;
        if cfg.max_body_bytes == 0 {
            return Err(ScimError::Config(
                "max_body_bytes must be at least 1".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                key: cfg.api_key,
                timeout: cfg.timeout,
                retry: cfg.retry,
                pacer,
                metrics,
                max_body: cfg.max_body_bytes,
                removal_form: AtomicU8::new(RemovalForm::FilterPath as u8),
            }),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Users

    /// Lists every team member (active or not: docs/postman-scim.md#listing-and-filtering), in
    /// pages of 100 by `startIndex`/`count`, calling `on_user` for each. Returns how many were
    /// listed.
    pub async fn list_users(&self, mut on_user: impl FnMut(PostmanUser)) -> Result<u64, ScimError> {
        self.list_pages("Users", None, |u: wire::User| on_user(u.into()))
            .await
    }

    /// Looks a member up by `userName` (their email). Postman's filter is case-sensitive
    /// (docs/postman-scim.md#username-case), so: the exact value first, then, if it has upper case
    /// and nothing matched, the lowercased value; matches are compared case-insensitively here.
    pub async fn find_user_by_name(
        &self,
        user_name: &str,
    ) -> Result<Option<PostmanUser>, ScimError> {
        let mut tries = vec![user_name.to_owned()];
        if user_name.chars().any(char::is_uppercase) {
            tries.push(user_name.to_lowercase());
        }
        let wanted = crate::model::user_name_key(user_name);
        for value in tries {
            let filter = format!("userName eq \"{}\"", escape_filter_value(&value));
            let mut found: Vec<PostmanUser> = Vec::new();
            self.list_pages("Users", Some(&filter), |u: wire::User| found.push(u.into()))
                .await?;
            let exact = found.iter().position(|u| u.attrs.user_name == user_name);
            let loose = found
                .iter()
                .position(|u| crate::model::user_name_key(&u.attrs.user_name) == wanted);
            if let Some(i) = exact.or(loose) {
                return Ok(Some(found.swap_remove(i)));
            }
        }
        Ok(None)
    }

    /// `POST /Users` (docs/postman-scim.md#creating-a-user). Not retried once it may have reached
    /// Postman: such failures are `is_ambiguous()` and the caller must look the user up before
    /// trying again.
    pub async fn create_user(
        &self,
        attrs: &UserAttrs,
        external_id: &str,
    ) -> Result<CreateOutcome, ScimError> {
        let body = wire::CreateUser {
            schemas: [wire::USER_SCHEMA],
            user_name: &attrs.user_name,
            name: attrs.into(),
            external_id,
            active: true,
        };
        let path = "/Users";
        match self.send(Verb::Post, &["Users"], None, Some(&body)).await {
            Ok(reply) => {
                let user: wire::User = decode(Verb::Post, path, &reply)?;
                Ok(CreateOutcome::Created(user.into()))
            }
            Err(e) => match conflict_detail(&e) {
                Some(detail) => Ok(CreateOutcome::AlreadyExists { detail }),
                None => Err(e),
            },
        }
    }

    /// `PUT /Users/{id}` (docs/postman-scim.md#replacing-a-user-put) with every attribute
    /// `create_user` sends (`userName`, `name`, `externalId`, `active`), every time: a PUT is a
    /// full replace (<https://www.rfc-editor.org/rfc/rfc7644#section-3.5.1>), Postman's reading is
    /// not documented (docs/postman-scim.md#put-semantics), and an attribute left out may be
    /// cleared. `external_id` must be the value sent on create (the Okta user id).
    pub async fn replace_user(
        &self,
        id: &ScimUserId,
        attrs: &UserAttrs,
        external_id: &str,
        active: bool,
    ) -> Result<(), ScimError> {
        let body = wire::ReplaceUser {
            schemas: [wire::USER_SCHEMA],
            user_name: &attrs.user_name,
            name: attrs.into(),
            external_id,
            active,
        };
        let reply = self
            .send(Verb::Put, &["Users", id.as_str()], None, Some(&body))
            .await?;
        check_write_reply(Verb::Put, "/Users", &reply)
    }

    /// `PATCH /Users/{id}` replacing `active` (no path, the value is an object:
    /// docs/postman-scim.md#patching-a-user). `false` removes the member from the team; `true`
    /// brings them back (docs/postman-scim.md#deactivation-and-reactivation).
    pub async fn set_active(&self, id: &ScimUserId, active: bool) -> Result<(), ScimError> {
        let op = wire::PatchOp::one("replace", None, json!({ "active": active }));
        let reply = self
            .send(Verb::Patch, &["Users", id.as_str()], None, Some(&op))
            .await?;
        check_write_reply(Verb::Patch, "/Users", &reply)
    }

    /// `PATCH /Users/{id}` replacing `userName` (verified domains only:
    /// docs/postman-scim.md#patching-a-user).
    pub async fn set_user_name(&self, id: &ScimUserId, user_name: &str) -> Result<(), ScimError> {
        let op = wire::PatchOp::one("replace", Some("userName"), json!(user_name));
        let reply = self
            .send(Verb::Patch, &["Users", id.as_str()], None, Some(&op))
            .await?;
        check_write_reply(Verb::Patch, "/Users", &reply)
    }

    /// `GET /Users/{id}`; `None` when Postman says 404 (not a member: docs/postman-scim.md#errors).
    pub async fn get_user(&self, id: &ScimUserId) -> Result<Option<PostmanUser>, ScimError> {
        match self
            .send::<()>(Verb::Get, &["Users", id.as_str()], None, None)
            .await
        {
            Ok(reply) => {
                let user: wire::User = decode(Verb::Get, &format!("/Users/{id}"), &reply)?;
                Ok(Some(user.into()))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Groups

    /// Lists every group with its members, in pages of 100. Returns how many were listed.
    pub async fn list_groups(
        &self,
        mut on_group: impl FnMut(PostmanGroup),
    ) -> Result<u64, ScimError> {
        self.list_pages("Groups", None, |g: wire::Group| on_group(g.into()))
            .await
    }

    /// Looks a group up by its exact `displayName` (the only group filter:
    /// docs/postman-scim.md#groups).
    pub async fn find_group_by_name(
        &self,
        display_name: &str,
    ) -> Result<Option<PostmanGroup>, ScimError> {
        let filter = format!("displayName eq \"{}\"", escape_filter_value(display_name));
        let mut found: Option<PostmanGroup> = None;
        self.list_pages("Groups", Some(&filter), |g: wire::Group| {
            if found.is_none() && g.display_name == display_name {
                found = Some(g.into());
            }
        })
        .await?;
        Ok(found)
    }

    /// `POST /Groups` (docs/postman-scim.md#groups). Same retry rules as `create_user`.
    pub async fn create_group(
        &self,
        display_name: &str,
        members: &[ScimUserId],
    ) -> Result<GroupCreateOutcome, ScimError> {
        let body = wire::CreateGroup {
            schemas: [wire::GROUP_SCHEMA],
            display_name,
            members: members
                .iter()
                .map(|m| wire::MemberOut { value: m.as_str() })
                .collect(),
        };
        match self.send(Verb::Post, &["Groups"], None, Some(&body)).await {
            Ok(reply) => {
                let group: wire::Group = decode(Verb::Post, "/Groups", &reply)?;
                let echoed_members = group.members.is_some();
                let mut group = PostmanGroup::from(group);
                if !echoed_members {
                    // The body did not list members; they are what we sent.
                    group.members = members.iter().cloned().collect();
                }
                Ok(GroupCreateOutcome::Created(group))
            }
            Err(e) => match conflict_detail(&e) {
                Some(detail) => Ok(GroupCreateOutcome::AlreadyExists { detail }),
                None => Err(e),
            },
        }
    }

    /// `PATCH /Groups/{id}` replacing `{id, displayName}` (the documented rename:
    /// docs/postman-scim.md#groups).
    pub async fn rename_group(
        &self,
        id: &ScimGroupId,
        display_name: &str,
    ) -> Result<(), ScimError> {
        let op = wire::PatchOp::one(
            "replace",
            None,
            json!({ "id": id.as_str(), "displayName": display_name }),
        );
        self.send(Verb::Patch, &["Groups", id.as_str()], None, Some(&op))
            .await
            .map(drop)
    }

    /// Adds members with `{"op":"add","path":"members",...}`
    /// (docs/postman-scim.md#group-member-payloads), at most 100 per PATCH. On an error, earlier
    /// chunks have been applied (adding is idempotent, so repeating is safe).
    pub async fn add_group_members(
        &self,
        id: &ScimGroupId,
        members: &[ScimUserId],
    ) -> Result<(), ScimError> {
        for chunk in members.chunks(MEMBER_CHUNK) {
            let value: Vec<_> = chunk
                .iter()
                .map(|m| json!({ "value": m.as_str() }))
                .collect();
            let patch = wire::PatchOp::one("add", Some("members"), serde_json::Value::Array(value));
            self.send(Verb::Patch, &["Groups", id.as_str()], None, Some(&patch))
                .await?;
        }
        Ok(())
    }

    /// Removes members, at most 100 per PATCH, in the RFC 7644 §3.5.2.2 form: one `remove` per
    /// member with the filter path `members[value eq "<id>"]` (Postman documents no
    /// form: docs/postman-scim.md#group-member-payloads).
    /// A server that refuses it with a 400 about the path or the form is asked again with the
    /// value-list form (Entra's); if that works, it is used first from then on by this client
    /// and its clones (and the other way round, should that form later be refused). When both
    /// forms are refused, the first refusal is returned and nothing is remembered. On an error,
    /// earlier chunks have been applied (removing is idempotent).
    pub async fn remove_group_members(
        &self,
        id: &ScimGroupId,
        members: &[ScimUserId],
    ) -> Result<(), ScimError> {
        for chunk in members.chunks(MEMBER_CHUNK) {
            self.remove_chunk(id, chunk).await?;
        }
        Ok(())
    }

    async fn remove_chunk(&self, id: &ScimGroupId, chunk: &[ScimUserId]) -> Result<(), ScimError> {
        let preferred = RemovalForm::from_u8(self.inner.removal_form.load(Ordering::Acquire));
        let refusal = match self.send_removal(id, chunk, preferred).await {
            Ok(()) => return Ok(()),
            Err(e) if refuses_removal_form(&e) => e,
            Err(e) => return Err(e),
        };
        let other = preferred.other();
        tracing::debug!(group = %id, error = %refusal, "member removal refused; trying the other form");
        match self.send_removal(id, chunk, other).await {
            Ok(()) => {
                let swapped = self
                    .inner
                    .removal_form
                    .compare_exchange(
                        preferred as u8,
                        other as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
                if swapped {
                    tracing::info!(
                        refused = preferred.describe(),
                        using = other.describe(),
                        "Postman refused a group member-removal form; using the other one from now on"
                    );
                }
                Ok(())
            }
            // Both forms refused: the first answer is the one that explains the problem.
            Err(e) if e.status() == Some(400) => Err(refusal),
            Err(e) => Err(e),
        }
    }

    async fn send_removal(
        &self,
        id: &ScimGroupId,
        chunk: &[ScimUserId],
        form: RemovalForm,
    ) -> Result<(), ScimError> {
        let patch = match form {
            RemovalForm::FilterPath => wire::PatchOp::remove_members_by_filter(chunk),
            RemovalForm::ValueList => wire::PatchOp::remove_members_by_value(chunk),
        };
        self.send(Verb::Patch, &["Groups", id.as_str()], None, Some(&patch))
            .await
            .map(drop)
    }

    /// `DELETE /Groups/{id}` (docs/postman-scim.md#groups). A 404 means the group is already gone,
    /// which is the goal, so it counts as success (this also makes a verified repeat after an
    /// ambiguous failure harmless). Not blindly retried, like a POST.
    pub async fn delete_group(&self, id: &ScimGroupId) -> Result<(), ScimError> {
        match self
            .send::<()>(Verb::Delete, &["Groups", id.as_str()], None, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => {
                tracing::debug!(group = %id, "group already absent in Postman");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Check

    /// `GET /ServiceProviderConfig` (docs/postman-scim.md#discovery-endpoints): the endpoint
    /// answers and returns a JSON object.
    pub async fn service_provider_config(&self) -> Result<(), ScimError> {
        let reply = self
            .send::<()>(Verb::Get, &["ServiceProviderConfig"], None, None)
            .await?;
        let _: serde_json::Map<String, serde_json::Value> =
            decode(Verb::Get, "/ServiceProviderConfig", &reply)?;
        Ok(())
    }

    /// `GET /Users?count=1&startIndex=1`: the key can read team members (the check Postman's
    /// customer-success client makes: docs/postman-scim.md#how-other-clients-call-it).
    pub async fn probe_users(&self) -> Result<(), ScimError> {
        let query = encode_query(&[("count", "1"), ("startIndex", "1")]);
        let reply = self
            .send::<()>(Verb::Get, &["Users"], Some(&query), None)
            .await?;
        let _: wire::ListResponse<serde_json::Value> = decode(Verb::Get, "/Users", &reply)?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing

    /// Pages through a ListResponse by `startIndex`/`count` until `totalResults` is reached
    /// (or, without it, until a short or empty page). Nothing the server sends can overflow the
    /// counters (saturating, and at most `MAX_PAGES` pages of at most a body cap each) or keep
    /// the loop going past `MAX_PAGES`. A page that takes the listing past the server's own
    /// `totalResults` (`0` with items, say) is an error, not a silently cut listing.
    async fn list_pages<T: DeserializeOwned>(
        &self,
        resource: &'static str,
        filter: Option<&str>,
        mut on_item: impl FnMut(T),
    ) -> Result<u64, ScimError> {
        let path = format!("/{resource}");
        let count = PAGE_SIZE.to_string();
        let mut start: u64 = 1;
        let mut listed: u64 = 0;
        for _ in 0..MAX_PAGES {
            let start_s = start.to_string();
            let mut pairs = vec![("startIndex", start_s.as_str()), ("count", count.as_str())];
            if let Some(f) = filter {
                pairs.push(("filter", f));
            }
            let query = encode_query(&pairs);
            let page: wire::ListResponse<T> = self.get_decoded(&[resource], &query, &path).await?;
            let n = u64::try_from(page.resources.len()).unwrap_or(u64::MAX);
            listed = listed.saturating_add(n);
            if let Some(total) = page.total_results.filter(|t| listed > *t) {
                return Err(ScimError::Decode {
                    method: Verb::Get.as_str(),
                    path,
                    message: format!(
                        "the listing is inconsistent: totalResults is {total} but {listed} \
                         resources were returned; nothing from it is trusted"
                    ),
                });
            }
            page.resources.into_iter().for_each(&mut on_item);
            start = start.saturating_add(n);
            let done = match page.total_results {
                _ if n == 0 => true,
                Some(total) => start > total,
                None => n < PAGE_SIZE,
            };
            if done {
                return Ok(listed);
            }
        }
        Err(ScimError::Decode {
            method: Verb::Get.as_str(),
            path,
            message: format!("paging did not end after {MAX_PAGES} pages"),
        })
    }

    /// A GET whose body must decode as `T`. An answer that does not decode (a truncated body,
    /// a proxy's HTML page on a 200) is asked again a couple of times before it is an error:
    /// a GET is safe to repeat, and one bad page must not fail a whole full run.
    async fn get_decoded<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &str,
        path: &str,
    ) -> Result<T, ScimError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reply = self
                .send::<()>(Verb::Get, segments, Some(query), None)
                .await?;
            match decode(Verb::Get, path, &reply) {
                Ok(v) => return Ok(v),
                Err(e) if attempt < DECODE_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "undecodable SCIM answer; asking again");
                    self.inner.metrics.retry("scim");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn url(&self, segments: &[&str], query: Option<&str>) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("checked in new(): the base URL can have path segments")
            .extend(segments);
        url.set_query(query);
        url
    }

    /// One logical request: waits for its pacing token before every attempt, and retries what
    /// is safe to retry (idempotent methods on 429/5xx/timeouts/transport errors; POST and
    /// DELETE only on 429 and on errors that prove the request was never sent).
    async fn send<B: Serialize>(
        &self,
        verb: Verb,
        segments: &[&str],
        query: Option<&str>,
        body: Option<&B>,
    ) -> Result<Reply, ScimError> {
        let inner = &*self.inner;
        let method = verb.as_str();
        let path = format!("/{}", segments.join("/"));
        let url = self.url(segments, query);
        let body: Option<Vec<u8>> = body.map(|b| {
            serde_json::to_vec(b).expect("request bodies are plain structs with string keys")
        });
        let idempotent = !is_non_idempotent(method);
        let path = path.as_str();
        let url = &url;
        let body = body.as_deref();

        retry(&inner.retry, &inner.metrics, "scim", || async move {
            inner
                .pacer
                .wait(Bucket::for_method(method), &inner.metrics)
                .await;
            let mut req = inner
                .http
                .request(verb.method(), url.clone())
                .header(AUTHORIZATION, inner.auth.clone());
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    inner.metrics.scim_request(method, 0);
                    return Err(self.transport_attempt(e, method, path, idempotent));
                }
            };
            let status = resp.status().as_u16();
            inner.metrics.scim_request(method, status);
            tracing::debug!(method, path, status, "scim request");
            if (300..400).contains(&status) {
                // Never followed (see `new`); the body is not read.
                return Err(Attempt::Permanent(ScimError::Redirect {
                    method,
                    path: path.to_owned(),
                    status,
                    location_host: location_host(url, resp.headers()),
                }));
            }
            let retry_after = retry_after_hint(resp.headers());
            let success = (200..300).contains(&status);
            let cap = if success {
                inner.max_body
            } else {
                inner.max_body.min(ERROR_BODY_BYTES)
            };
            let bytes = match limits::read_body(resp, cap).await {
                Ok(b) => b,
                Err(BodyError::Transport(e)) => {
                    return Err(self.transport_attempt(e, method, path, idempotent))
                }
                Err(e @ BodyError::TooLarge { .. }) if success => {
                    // Not retried: a server that sent this once will again. For a POST or
                    // DELETE the write may have happened, exactly as with a lost answer.
                    return Err(Attempt::Permanent(ScimError::TooLarge {
                        method,
                        path: path.to_owned(),
                        ambiguous: !idempotent,
                        message: e.to_string(),
                    }));
                }
                // An error answer is classified by its status; its (huge) body is not needed.
                Err(e) => format!("({e})").into_bytes(),
            };
            if success {
                return Ok(Reply { body: bytes });
            }
            let info = wire::parse_error_body(&bytes);
            let err = ScimError::Http {
                method,
                path: path.to_owned(),
                status,
                scim_type: info.scim_type,
                detail: self.redact(&info.detail),
            };
            // 429 means Postman did not act on the request, so even a POST may repeat it.
            if status == 429 || (idempotent && is_retryable_status(status)) {
                Err(Attempt::Transient { err, retry_after })
            } else {
                Err(Attempt::Permanent(err))
            }
        })
        .await
    }

    /// Classifies a failure without an HTTP status.
    fn transport_attempt(
        &self,
        e: reqwest::Error,
        method: &'static str,
        path: &str,
        idempotent: bool,
    ) -> Attempt<ScimError> {
        // A connect error means nothing was sent: safe to repeat for every method.
        let ambiguous = !idempotent && !e.is_connect();
        let err = if e.is_timeout() {
            ScimError::Timeout {
                method,
                path: path.to_owned(),
                ambiguous,
                after: self.inner.timeout,
            }
        } else {
            ScimError::Transport {
                method,
                path: path.to_owned(),
                ambiguous,
                message: self.redact(&error_chain(&e.without_url())),
            }
        };
        if ambiguous {
            Attempt::Permanent(err)
        } else {
            Attempt::Transient {
                err,
                retry_after: None,
            }
        }
    }

    fn redact(&self, text: &str) -> String {
        let key = self.inner.key.expose_secret();
        if key.is_empty() {
            text.to_owned()
        } else {
            text.replace(key, "[redacted]")
        }
    }
}

/// The base URL with any trailing slash removed, checked to be an http(s) URL with a path.
fn normalise_base(mut base: Url) -> Result<Url, ScimError> {
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(ScimError::Config(format!(
            "the SCIM base URL must be an http(s) URL, got {base}"
        )));
    }
    base.set_query(None);
    base.set_fragment(None);
    base.path_segments_mut()
        .map_err(|()| ScimError::Config("the SCIM base URL cannot take a path".into()))?
        .pop_if_empty();
    Ok(base)
}

/// A 409 create conflict that means "already there" (docs/postman-scim.md#creating-a-user):
/// scimType `uniqueness`, or none at all. Any other 409 stays an error.
fn conflict_detail(e: &ScimError) -> Option<String> {
    match e {
        ScimError::Http {
            status: 409,
            scim_type,
            detail,
            ..
        } if scim_type.as_deref().is_none_or(|t| t == "uniqueness") => Some(detail.clone()),
        _ => None,
    }
}

fn decode<T: DeserializeOwned>(verb: Verb, path: &str, reply: &Reply) -> Result<T, ScimError> {
    serde_json::from_slice(&reply.body).map_err(|e| ScimError::Decode {
        method: verb.as_str(),
        path: path.to_owned(),
        message: if reply.body.is_empty() {
            "empty body".to_owned()
        } else {
            e.to_string()
        },
    })
}

/// A PUT/PATCH answer is documented as the updated resource; an empty (204) or plain-text answer is
/// tolerated (docs/postman-scim.md#empty-write-answers). But an HTML page (a proxy's error page on
/// a 200) or JSON that is cut off or not an object means we cannot tell that Postman applied the
/// write: an error, so the snapshot is not changed and the (idempotent) write is repeated later.
fn check_write_reply(verb: Verb, path: &str, reply: &Reply) -> Result<(), ScimError> {
    let body = reply.body.trim_ascii_start();
    match body.first() {
        None => Ok(()),
        Some(b'<') => Err(ScimError::Decode {
            method: verb.as_str(),
            path: path.to_owned(),
            message: format!(
                "expected the updated resource, got an HTML page starting {:?}",
                String::from_utf8_lossy(&body[..body.len().min(60)])
            ),
        }),
        Some(b'{') | Some(b'[') => match decode::<serde_json::Value>(verb, path, reply)? {
            serde_json::Value::Object(_) => Ok(()),
            _ => Err(ScimError::Decode {
                method: verb.as_str(),
                path: path.to_owned(),
                message: "expected the updated resource (a JSON object)".to_owned(),
            }),
        },
        Some(_) => Ok(()),
    }
}

/// Whether a 400 answer to a member removal refuses the form of the request (so the other form may
/// work) rather than its content: a `scimType` about the path, filter or value
/// (<https://www.rfc-editor.org/rfc/rfc7644#section-3.12>), Postman's generic `invalidSyntax` for a
/// body it does not accept (docs/postman-scim.md#errors), or, without a `scimType`, a detail that
/// talks about the form. A wrong guess costs one extra request: the other form is only remembered
/// if it works.
fn refuses_removal_form(e: &ScimError) -> bool {
    let ScimError::Http {
        status: 400,
        scim_type,
        detail,
        ..
    } = e
    else {
        return false;
    };
    match scim_type.as_deref() {
        Some("invalidPath" | "invalidFilter" | "noTarget" | "invalidValue" | "invalidSyntax") => {
            true
        }
        Some(_) => false,
        None => {
            let d = detail.to_ascii_lowercase();
            ["support", "filter", "path", "operation", "value"]
                .iter()
                .any(|w| d.contains(w))
        }
    }
}

/// `host[:port]` of a redirect's `Location` (resolved against the request URL, so a relative
/// one names our own host). Never the path or query: they may carry personal data or tokens.
fn location_host(request: &Url, headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(LOCATION)?.to_str().ok()?;
    let target = request.join(raw).ok()?;
    let host = target.host_str()?;
    Some(match target.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// A fully percent-encoded query string. Spaces become `%20` (not form-style `+`) and a literal
/// `+` becomes `%2B`, so an address like `a+b@example.com` cannot turn into a space on the
/// server (docs/postman-scim.md#listing-and-filtering: a `+` in an address must be encoded).
fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode_component(s: &str) -> String {
    // byte_serialize encodes everything but [A-Za-z0-9*-._] and writes a space as `+`; a
    // literal `+` comes out as `%2B`, so every remaining `+` was a space.
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3,
/// <https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3>), a date judged against the answer's
/// own `Date` (so a skewed server clock does not matter), else our clock. Absurd, negative or
/// non-finite values never panic: they are clamped by `limits` (and the wait again by the
/// retry policy's `max_wait`) or ignored.
fn retry_after_hint(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let now = headers
        .get(DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| DateTime::parse_from_rfc2822(d.trim()).ok())
        .map_or_else(Utc::now, |d| d.with_timezone(&Utc));
    limits::parse_retry_after(value, now)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::Instant;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    const KEY: &str = "PMAT-scim-test-key";

    fn config(server: &MockServer) -> ScimClientConfig {
        ScimClientConfig {
            base_url: Url::parse(&format!("{}/scim/v2", server.uri())).expect("mock url"),
            api_key: SecretString::from(KEY),
            auth_scheme: AuthScheme::Raw,
            writes_per_minute: 60_000,
            reads_per_minute: 60_000,
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::fast(),
            max_body_bytes: limits::MAX_BODY_BYTES,
        }
    }

    async fn setup() -> (MockServer, ScimClient, Arc<Metrics>) {
        let server = MockServer::start().await;
        let metrics = Arc::new(Metrics::new());
        let client = ScimClient::new(config(&server), metrics.clone()).expect("client");
        (server, client, metrics)
    }

    async fn requests(server: &MockServer) -> Vec<Request> {
        server.received_requests().await.expect("recording is on")
    }

    fn body(req: &Request) -> Value {
        serde_json::from_slice(&req.body).expect("request body is JSON")
    }

    fn header<'a>(req: &'a Request, name: &str) -> &'a str {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn user_json(id: &str, user_name: &str) -> Value {
        json!({
            "schemas": [wire::USER_SCHEMA], "id": id, "userName": user_name,
            "name": {"givenName": "Taylor", "familyName": "Lee"},
            "externalId": "00u1", "active": true,
            "meta": {"resourceType": "User"}
        })
    }

    fn attrs() -> UserAttrs {
        UserAttrs {
            user_name: "taylor.lee@example.com".into(),
            given_name: "Taylor".into(),
            family_name: "Lee".into(),
        }
    }

    fn scim_error(status: u16, scim_type: Option<&str>, detail: &str) -> ResponseTemplate {
        let mut b = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "detail": detail, "status": status.to_string()
        });
        if let Some(t) = scim_type {
            b["scimType"] = json!(t);
        }
        ResponseTemplate::new(status).set_body_json(b)
    }

    #[tokio::test]
    async fn create_user_sends_the_documented_body_with_the_raw_key_and_json_headers() {
        let (server, client, metrics) = setup().await;
        Mock::given(method("POST"))
            .and(path("/scim/v2/Users"))
            .respond_with(
                ResponseTemplate::new(201).set_body_json(user_json("u1", "taylor.lee@example.com")),
            )
            .mount(&server)
            .await;
        let out = client.create_user(&attrs(), "00u1").await.expect("created");
        let CreateOutcome::Created(user) = out else {
            panic!("expected Created, got {out:?}");
        };
        assert_eq!(user.id, ScimUserId::new("u1"));
        assert_eq!(user.attrs, attrs());

        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(header(r, "authorization"), KEY);
        assert_eq!(header(r, "content-type"), "application/json");
        assert_eq!(header(r, "accept"), "application/json");
        assert_eq!(
            header(r, "user-agent"),
            concat!("okta-postman-sync/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            body(r),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "taylor.lee@example.com",
                "name": {"givenName": "Taylor", "familyName": "Lee"},
                "externalId": "00u1",
                "active": true
            })
        );
        assert!(metrics
            .encode()
            .contains("scim_requests_total{method=\"POST\",status=\"201\"} 1"));
    }

    #[tokio::test]
    async fn the_bearer_scheme_prefixes_the_key_and_a_trailing_slash_in_the_base_is_tolerated() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/ServiceProviderConfig"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"patch": {}})))
            .mount(&server)
            .await;
        let mut cfg = config(&server);
        cfg.auth_scheme = AuthScheme::Bearer;
        cfg.base_url = Url::parse(&format!("{}/scim/v2/", server.uri())).expect("url");
        let client = ScimClient::new(cfg, Arc::new(Metrics::new())).expect("client");
        client.service_provider_config().await.expect("ok");
        let reqs = requests(&server).await;
        assert_eq!(header(&reqs[0], "authorization"), format!("Bearer {KEY}"));
        assert!(!format!("{client:?}").contains(KEY));
    }

    #[tokio::test]
    async fn user_updates_send_put_with_every_created_attribute_and_replace_only_patches() {
        let (server, client, _) = setup().await;
        Mock::given(path("/scim/v2/Users/u1"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(user_json("u1", "x@example.com")),
            )
            .mount(&server)
            .await;
        let id = ScimUserId::new("u1");
        client
            .replace_user(&id, &attrs(), "00u1", false)
            .await
            .expect("put");
        client.set_active(&id, false).await.expect("patch active");
        client
            .set_user_name(&id, "new@example.com")
            .await
            .expect("patch userName");
        let reqs = requests(&server).await;
        let methods: Vec<_> = reqs.iter().map(|r| r.method.to_string()).collect();
        assert_eq!(methods, ["PUT", "PATCH", "PATCH"]);
        assert_eq!(
            body(&reqs[0]),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "taylor.lee@example.com",
                "name": {"givenName": "Taylor", "familyName": "Lee"},
                "externalId": "00u1",
                "active": false
            })
        );
        assert_eq!(
            body(&reqs[1]),
            json!({"schemas": [wire::PATCH_OP_SCHEMA],
                   "Operations": [{"op": "replace", "value": {"active": false}}]})
        );
        assert_eq!(
            body(&reqs[2]),
            json!({"schemas": [wire::PATCH_OP_SCHEMA],
                   "Operations": [{"op": "replace", "path": "userName", "value": "new@example.com"}]})
        );
    }

    #[tokio::test]
    async fn group_calls_send_the_documented_bodies_and_chunk_members_by_one_hundred() {
        let (server, client, _) = setup().await;
        Mock::given(method("POST"))
            .and(path("/scim/v2/Groups"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({
                "id": "g1", "displayName": "Eng", "members": [{"value": "u1"}]
            })))
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .and(path("/scim/v2/Groups/g1"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .and(path("/scim/v2/Groups/g1"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        let g = ScimGroupId::new("g1");
        let out = client
            .create_group("Eng", &[ScimUserId::new("u1")])
            .await
            .expect("create");
        let GroupCreateOutcome::Created(group) = out else {
            panic!("expected Created, got {out:?}");
        };
        assert_eq!(group.id, g);
        assert!(group.members.contains(&ScimUserId::new("u1")));
        client
            .rename_group(&g, "Engineering")
            .await
            .expect("rename");
        let many: Vec<_> = (0..150).map(|i| ScimUserId::new(format!("u{i}"))).collect();
        client.add_group_members(&g, &many).await.expect("add");
        client
            .remove_group_members(&g, &many[..2])
            .await
            .expect("remove");
        client.add_group_members(&g, &[]).await.expect("no-op");
        client.delete_group(&g).await.expect("delete");

        let reqs = requests(&server).await;
        assert_eq!(
            reqs.len(),
            6,
            "create, rename, 2 add chunks, remove, delete"
        );
        assert_eq!(
            body(&reqs[0]),
            json!({"schemas": [wire::GROUP_SCHEMA], "displayName": "Eng",
                   "members": [{"value": "u1"}]})
        );
        assert_eq!(
            body(&reqs[1]),
            json!({"schemas": [wire::PATCH_OP_SCHEMA], "Operations": [
                {"op": "replace", "value": {"id": "g1", "displayName": "Engineering"}}]})
        );
        let add1 = body(&reqs[2]);
        assert_eq!(add1["Operations"][0]["op"], "add");
        assert_eq!(add1["Operations"][0]["path"], "members");
        assert_eq!(
            add1["Operations"][0]["value"].as_array().map(Vec::len),
            Some(100)
        );
        assert_eq!(add1["Operations"][0]["value"][0], json!({"value": "u0"}));
        assert_eq!(
            body(&reqs[3])["Operations"][0]["value"]
                .as_array()
                .map(Vec::len),
            Some(50)
        );
        assert_eq!(
            body(&reqs[4]),
            json!({"schemas": [wire::PATCH_OP_SCHEMA], "Operations": [
                {"op": "remove", "path": "members[value eq \"u0\"]"},
                {"op": "remove", "path": "members[value eq \"u1\"]"}]})
        );
        assert_eq!(reqs[5].method.as_str(), "DELETE");
        assert_eq!(reqs[5].url.path(), "/scim/v2/Groups/g1");
    }

    #[tokio::test]
    async fn list_users_pages_by_start_index_until_total_results() {
        let (server, client, _) = setup().await;
        for (start, n) in [(1u64, 100u64), (101, 100), (201, 50)] {
            let resources: Vec<_> = (start..start + n)
                .map(|i| user_json(&format!("u{i}"), &format!("p{i}@example.com")))
                .collect();
            Mock::given(method("GET"))
                .and(path("/scim/v2/Users"))
                .and(wiremock::matchers::query_param(
                    "startIndex",
                    start.to_string(),
                ))
                .and(wiremock::matchers::query_param("count", "100"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                    "totalResults": 250, "startIndex": start, "itemsPerPage": n,
                    "Resources": resources
                })))
                .expect(1)
                .mount(&server)
                .await;
        }
        let mut seen = Vec::new();
        let n = client
            .list_users(|u| seen.push(u.id))
            .await
            .expect("listed");
        assert_eq!(n, 250);
        assert_eq!(seen.len(), 250);
        assert_eq!(seen[0], ScimUserId::new("u1"));
        assert_eq!(seen[249], ScimUserId::new("u250"));
    }

    #[tokio::test]
    async fn a_plus_in_a_user_name_filter_is_percent_encoded() {
        let (server, client, _) = setup().await;
        Mock::given(method("GET"))
            .and(path("/scim/v2/Users"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 1, "Resources": [user_json("u1", "a+b@example.com")]
            })))
            .mount(&server)
            .await;
        let u = client
            .find_user_by_name("a+b@example.com")
            .await
            .expect("lookup");
        assert_eq!(u.map(|u| u.id), Some(ScimUserId::new("u1")));
        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 1);
        let query = reqs[0].url.query().unwrap_or("");
        assert!(
            query.contains("filter=userName%20eq%20%22a%2Bb%40example.com%22"),
            "query was {query}"
        );
        let decoded: Vec<(String, String)> = reqs[0].url.query_pairs().into_owned().collect();
        assert!(decoded.contains(&("filter".into(), "userName eq \"a+b@example.com\"".into())));
    }

    #[tokio::test]
    async fn a_mixed_case_lookup_falls_back_to_the_lowercased_value_and_quotes_are_escaped() {
        let (server, client, _) = setup().await;
        Mock::given(method("GET"))
            .and(wiremock::matchers::query_param(
                "filter",
                "userName eq \"taylor.lee@example.com\"",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 1, "Resources": [user_json("u1", "taylor.lee@example.com")]
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"totalResults": 0, "Resources": []})),
            )
            .mount(&server)
            .await;
        let u = client
            .find_user_by_name("Taylor.Lee@Example.com")
            .await
            .expect("lookup");
        assert_eq!(u.map(|u| u.id), Some(ScimUserId::new("u1")));
        assert_eq!(requests(&server).await.len(), 2);

        assert_eq!(
            client.find_user_by_name("a\"b\\c@x.io").await.expect("ok"),
            None
        );
        let reqs = requests(&server).await;
        let pairs: Vec<(String, String)> = reqs[2].url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("filter".into(), r#"userName eq "a\"b\\c@x.io""#.into())));
    }

    #[tokio::test]
    async fn a_409_uniqueness_on_create_is_already_exists() {
        let (server, client, _) = setup().await;
        Mock::given(method("POST"))
            .respond_with(scim_error(
                409,
                Some("uniqueness"),
                "This person is already a member of the team.",
            ))
            .mount(&server)
            .await;
        let out = client.create_user(&attrs(), "00u1").await.expect("outcome");
        assert_eq!(
            out,
            CreateOutcome::AlreadyExists {
                detail: "This person is already a member of the team.".into()
            }
        );
        let g = client.create_group("Eng", &[]).await.expect("outcome");
        assert!(matches!(g, GroupCreateOutcome::AlreadyExists { .. }));
        assert_eq!(requests(&server).await.len(), 2);
    }

    #[tokio::test]
    async fn an_undecodable_list_page_is_asked_again_and_a_persistent_one_is_an_error() {
        let (server, client, metrics) = setup().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string("{\"totalResults\": 1, \"Reso"),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 1, "Resources": [user_json("u1", "ann@example.com")]
            })))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        let mut seen = Vec::new();
        let n = client
            .list_users(|u| seen.push(u))
            .await
            .expect("second answer decodes");
        assert_eq!((n, seen.len()), (1, 1));
        assert_eq!(requests(&server).await.len(), 2);
        assert!(metrics
            .encode()
            .contains("okta_postman_sync_retries_total{api=\"scim\"} 1"));

        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"))
            .mount(&server)
            .await;
        let err = client.list_users(|_| {}).await.expect_err("never decodes");
        assert!(matches!(err, ScimError::Decode { .. }), "{err:?}");
        assert_eq!(requests(&server).await.len(), 2 + DECODE_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn writes_accept_204_without_a_body_and_200_with_a_non_json_body() {
        let (server, client, _) = setup().await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(200).set_body_string("OK"))
            .mount(&server)
            .await;
        let id = ScimUserId::new("u1");
        client.set_active(&id, true).await.expect("204 is fine");
        client
            .replace_user(&id, &attrs(), "00u1", true)
            .await
            .expect("200 text is fine");
    }

    #[tokio::test]
    async fn a_create_that_returns_no_id_is_an_ambiguous_decode_error() {
        let (server, client, _) = setup().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201))
            .mount(&server)
            .await;
        let err = client
            .create_user(&attrs(), "00u1")
            .await
            .expect_err("no id");
        assert!(matches!(err, ScimError::Decode { .. }), "{err:?}");
        assert!(err.is_ambiguous());
        assert_eq!(requests(&server).await.len(), 1);
    }

    #[tokio::test]
    async fn a_patch_that_gets_503_twice_then_200_succeeds_on_the_third_attempt() {
        let (server, client, metrics) = setup().await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(200).set_body_json(user_json("u1", "x@y.z")))
            .mount(&server)
            .await;
        client
            .set_active(&ScimUserId::new("u1"), false)
            .await
            .expect("third time lucky");
        assert_eq!(requests(&server).await.len(), 3);
        let text = metrics.encode();
        assert!(text.contains("scim_requests_total{method=\"PATCH\",status=\"503\"} 2"));
        assert!(text.contains("retries_total{api=\"scim\"} 2"));
    }

    #[tokio::test]
    async fn a_post_that_gets_500_is_not_retried_and_is_ambiguous() {
        let (server, client, _) = setup().await;
        Mock::given(method("POST"))
            .respond_with(scim_error(500, None, "Couldn't fetch members of the team."))
            .mount(&server)
            .await;
        let err = client.create_user(&attrs(), "00u1").await.expect_err("500");
        assert!(err.is_ambiguous());
        assert!(!err.is_retryable());
        assert_eq!(err.status(), Some(500));
        assert_eq!(requests(&server).await.len(), 1);
    }

    #[tokio::test]
    async fn a_post_that_times_out_is_not_retried_and_is_ambiguous() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(2)))
            .mount(&server)
            .await;
        let mut cfg = config(&server);
        cfg.timeout = Duration::from_millis(200);
        let client = ScimClient::new(cfg, Arc::new(Metrics::new())).expect("client");
        let err = client.create_group("Eng", &[]).await.expect_err("timeout");
        assert!(
            matches!(
                err,
                ScimError::Timeout {
                    ambiguous: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(requests(&server).await.len(), 1);
    }

    #[tokio::test]
    async fn a_post_that_cannot_connect_is_retried_because_it_was_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let metrics = Arc::new(Metrics::new());
        let mut cfg = ScimClientConfig::new(SecretString::from(KEY));
        cfg.base_url = Url::parse(&format!("http://{addr}/scim/v2")).expect("url");
        cfg.retry = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::fast()
        };
        let client = ScimClient::new(cfg, metrics.clone()).expect("client");
        let err = client
            .create_user(&attrs(), "00u1")
            .await
            .expect_err("refused");
        assert!(!err.is_ambiguous(), "{err:?}");
        assert!(err.is_retryable());
        assert!(!err.to_string().contains(KEY));
        assert!(metrics
            .encode()
            .contains("scim_requests_total{method=\"POST\",status=\"0\"} 3"));
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_retried_even_for_a_post() {
        let (server, client, _) = setup().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_body_json(user_json("u1", "x@y.z")))
            .mount(&server)
            .await;
        let out = client.create_user(&attrs(), "00u1").await.expect("created");
        assert!(matches!(out, CreateOutcome::Created(_)));
        assert_eq!(requests(&server).await.len(), 2);
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_judged_against_the_answers_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after_hint(&h), Some(Duration::from_secs(7)));
        h.insert(
            DATE,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:27:00 GMT"),
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_hint(&h), Some(Duration::from_secs(60)));
        for hostile in ["1e30", "-1", "NaN", "Fri, 31 Dec 9999 23:59:59 GMT"] {
            h.insert(RETRY_AFTER, HeaderValue::from_static(hostile));
            assert!(
                retry_after_hint(&h).is_none_or(|d| d <= limits::MAX_HINT),
                "{hostile}"
            );
        }
    }

    #[tokio::test]
    async fn a_400_is_not_retried_and_its_scim_error_body_is_parsed() {
        let (server, client, _) = setup().await;
        Mock::given(method("PATCH"))
            .respond_with(scim_error(
                400,
                Some("invalidSyntax"),
                "The request body seems to be incomplete or have unsupported characters.",
            ))
            .mount(&server)
            .await;
        let err = client
            .rename_group(&ScimGroupId::new("g1"), "x")
            .await
            .expect_err("400");
        assert!(err.is_permanent());
        assert!(!err.is_retryable());
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.scim_type(), Some("invalidSyntax"));
        assert!(err.to_string().contains("incomplete or have unsupported"));
        assert_eq!(requests(&server).await.len(), 1);
    }

    #[tokio::test]
    async fn a_401_carries_the_operator_hint_and_never_the_key() {
        let (server, client, _) = setup().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({
                "type": "https://api.postman.com/problems/unauthorized",
                "title": "Unauthorized",
                "detail": format!("Invalid API key {KEY}"),
                "status": 401
            })))
            .mount(&server)
            .await;
        let err = client.probe_users().await.expect_err("401");
        assert!(err.hint().is_some_and(|h| h.contains("ACTIVE")));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("[redacted]"));
        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 1);
        let q: Vec<(String, String)> = reqs[0].url.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            [
                ("count".into(), "1".into()),
                ("startIndex".into(), "1".into())
            ]
        );
    }

    #[tokio::test]
    async fn get_user_maps_404_to_none_and_a_missing_group_delete_to_success() {
        let (server, client, _) = setup().await;
        Mock::given(method("GET"))
            .respond_with(scim_error(
                404,
                None,
                "This person isn't a member of the team.",
            ))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(scim_error(
                404,
                None,
                "This group isn't a member of the team.",
            ))
            .mount(&server)
            .await;
        assert_eq!(
            client.get_user(&ScimUserId::new("nope")).await.expect("ok"),
            None
        );
        client
            .delete_group(&ScimGroupId::new("gone"))
            .await
            .expect("already absent");
    }

    #[tokio::test]
    async fn writes_are_paced_proactively_across_clones() {
        let server = MockServer::start().await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        let metrics = Arc::new(Metrics::new());
        let mut cfg = config(&server);
        cfg.writes_per_minute = 120; // about 2 per second, burst 1
        let client = ScimClient::new(cfg, metrics.clone()).expect("client");
        let (a, b) = (client.clone(), client.clone());
        let id = ScimUserId::new("u1");
        let started = Instant::now();
        let (r1, r2, r3) = tokio::join!(
            client.set_active(&id, true),
            a.set_active(&id, true),
            b.set_active(&id, true)
        );
        r1.and(r2).and(r3).expect("all succeed");
        // Two of the three had to wait for a token (~0.51 s each); none got a 429.
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(requests(&server).await.len(), 3);
        let text = metrics.encode();
        assert!(text.contains("rate_limit_wait_seconds_total{api=\"scim\"}"));
        assert!(!text.contains("retries_total"));
    }

    // -----------------------------------------------------------------------------------------
    // Hostile upstreams

    /// What a [`raw_server`] connection answers after reading a request head.
    #[derive(Clone, Copy)]
    enum RawAnswer {
        /// This head (status line and headers), then the connection is held open.
        Head(&'static str),
        /// This head, then 16 KiB chunks of a chunked body until the client goes away.
        Endless(&'static str),
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1:0 for what wiremock cannot do (a lying
    /// `Content-Length`, a body that never ends). Returns its SCIM base URL and a count of the
    /// request heads it read.
    async fn raw_server(answer: RawAnswer) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    match answer {
                        RawAnswer::Head(head) => {
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            // Hold the connection until the client drops it.
                            while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                        }
                        RawAnswer::Endless(head) => {
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                            while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                        }
                    }
                });
            }
        });
        let url = Url::parse(&format!("http://{addr}/scim/v2")).expect("url");
        (url, heads)
    }

    fn raw_client(base: Url, max_body_bytes: usize) -> ScimClient {
        let cfg = ScimClientConfig {
            base_url: base,
            api_key: SecretString::from(KEY),
            auth_scheme: AuthScheme::Raw,
            writes_per_minute: 60_000,
            reads_per_minute: 60_000,
            // Far longer than any of these tests takes: a test that ends by timeout fails on
            // the error kind, not on time.
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::fast(),
            max_body_bytes,
        };
        ScimClient::new(cfg, Arc::new(Metrics::new())).expect("client")
    }

    const DECLARES_200_MB: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Content-Length: 209715200\r\n\r\n{\"totalResults\":";
    const ENDLESS_200: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\n\r\n";
    const ENDLESS_400: &str = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
        Transfer-Encoding: chunked\r\n\r\n";

    #[tokio::test]
    async fn retry_after_values_that_once_panicked_are_clamped_and_the_request_is_retried() {
        for hostile in [
            "1e30",
            "-1",
            "NaN",
            "18446744073709551616",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let (server, client, _) = setup().await;
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", hostile))
                .up_to_n_times(1)
                .mount(&server)
                .await;
            Mock::given(method("GET"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"totalResults": 0, "Resources": []})),
                )
                .mount(&server)
                .await;
            // The fast policy's max_wait (200 ms) bounds the wait whatever the header says.
            let n = client.list_users(|_| {}).await.expect(hostile);
            assert_eq!(n, 0);
            assert_eq!(requests(&server).await.len(), 2, "{hostile}");
        }
    }

    #[tokio::test]
    async fn a_declared_200_mb_body_is_refused_before_reading_and_a_get_is_not_retried() {
        let (base, heads) = raw_server(RawAnswer::Head(DECLARES_200_MB)).await;
        let client = raw_client(base, limits::MAX_BODY_BYTES);
        let err = client.list_users(|_| {}).await.expect_err("too large");
        assert!(
            matches!(
                err,
                ScimError::TooLarge {
                    ambiguous: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("209715200"), "{err}");
        assert!(err.to_string().contains("scim_url"), "{err}");
        assert!(!err.is_retryable());
        assert_eq!(heads.load(Ordering::SeqCst), 1, "not asked again");
    }

    #[tokio::test]
    async fn an_oversized_answer_to_a_post_is_ambiguous_and_to_a_put_is_not() {
        let (base, heads) = raw_server(RawAnswer::Head(DECLARES_200_MB)).await;
        let client = raw_client(base, limits::MAX_BODY_BYTES);
        let err = client
            .create_user(&attrs(), "00u1")
            .await
            .expect_err("too large");
        assert!(matches!(err, ScimError::TooLarge { .. }), "{err:?}");
        assert!(err.is_ambiguous(), "the create may have happened");
        let err = client
            .replace_user(&ScimUserId::new("u1"), &attrs(), "00u1", true)
            .await
            .expect_err("too large");
        assert!(matches!(err, ScimError::TooLarge { .. }), "{err:?}");
        assert!(!err.is_ambiguous() && !err.is_retryable());
        assert_eq!(heads.load(Ordering::SeqCst), 2, "neither was repeated");
    }

    #[tokio::test]
    async fn an_endless_chunked_body_is_cut_at_the_cap() {
        let (base, heads) = raw_server(RawAnswer::Endless(ENDLESS_200)).await;
        let client = raw_client(base, 256 * 1024);
        let err = client
            .get_user(&ScimUserId::new("u1"))
            .await
            .expect_err("endless");
        assert!(
            matches!(err, ScimError::TooLarge { .. }),
            "stopped by the cap, not by the timeout: {err:?}"
        );
        assert!(err.to_string().contains("262144"), "{err}");
        assert_eq!(heads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_endless_error_body_is_cut_and_the_status_still_decides() {
        let (base, heads) = raw_server(RawAnswer::Endless(ENDLESS_400)).await;
        // A body cap larger than the error cap: error bodies get the smaller one.
        let client = raw_client(base, limits::MAX_BODY_BYTES);
        let err = client
            .set_active(&ScimUserId::new("u1"), false)
            .await
            .expect_err("400");
        assert_eq!(err.status(), Some(400), "{err:?}");
        assert!(err.is_permanent());
        assert!(err.to_string().contains("limit"), "{err}");
        assert_eq!(heads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_307_is_an_error_naming_the_host_and_the_target_receives_nothing() {
        let (server, client, _) = setup().await;
        let elsewhere = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(201).set_body_json(user_json("FOREIGN", "x@y.z")))
            .mount(&elsewhere)
            .await;
        let target = Url::parse(&elsewhere.uri()).expect("url");
        let host = format!(
            "{}:{}",
            target.host_str().expect("host"),
            target.port().expect("port")
        );
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(307).insert_header(
                "Location",
                format!("{}/scim/v2/Users?token=secret-token", elsewhere.uri()),
            ))
            .mount(&server)
            .await;
        let err = client
            .create_user(&attrs(), "00u1")
            .await
            .expect_err("redirect");
        let ScimError::Redirect {
            status,
            location_host,
            ..
        } = &err
        else {
            panic!("expected a redirect error, got {err:?}");
        };
        assert_eq!(*status, 307);
        assert_eq!(location_host.as_deref(), Some(host.as_str()));
        let text = err.to_string();
        assert!(text.contains(&host) && text.contains("scim_url"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(!err.is_ambiguous() && !err.is_retryable() && err.is_permanent());
        assert!(
            client.get_user(&ScimUserId::new("u1")).await.is_err(),
            "a GET is not followed either"
        );
        assert_eq!(requests(&elsewhere).await.len(), 0, "nothing reached it");
        assert_eq!(requests(&server).await.len(), 2, "no retry");
    }

    fn is_filter_removal(req: &Request) -> bool {
        serde_json::from_slice::<Value>(&req.body)
            .ok()
            .and_then(|b| b["Operations"][0]["path"].as_str().map(str::to_owned))
            .is_some_and(|p| p.starts_with("members["))
    }

    #[tokio::test]
    async fn a_refused_filter_path_removal_falls_back_to_the_value_list_once_for_all_clones() {
        let (server, client, _) = setup().await;
        Mock::given(method("PATCH"))
            .and(is_filter_removal)
            .respond_with(scim_error(
                400,
                Some("invalidPath"),
                "Filters in a PATCH path are not supported.",
            ))
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        let g = ScimGroupId::new("g1");
        client
            .remove_group_members(&g, &[ScimUserId::new("u1"), ScimUserId::new("u2")])
            .await
            .expect("fallback works");
        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            body(&reqs[0])["Operations"],
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"},
                   {"op": "remove", "path": "members[value eq \"u2\"]"}])
        );
        assert_eq!(
            body(&reqs[1])["Operations"],
            json!([{"op": "remove", "path": "members",
                    "value": [{"value": "u1"}, {"value": "u2"}]}])
        );
        // A clone goes straight to the form that worked.
        client
            .clone()
            .remove_group_members(&g, &[ScimUserId::new("u3")])
            .await
            .expect("value list");
        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 3);
        assert!(!is_filter_removal(&reqs[2]));
    }

    #[tokio::test]
    async fn when_both_removal_forms_are_refused_the_first_refusal_is_returned_and_nothing_is_remembered(
    ) {
        let (server, client, _) = setup().await;
        Mock::given(method("PATCH"))
            .and(is_filter_removal)
            .respond_with(scim_error(400, Some("invalidFilter"), "bad filter"))
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(scim_error(400, Some("invalidValue"), "no value please"))
            .mount(&server)
            .await;
        let g = ScimGroupId::new("g1");
        let err = client
            .remove_group_members(&g, &[ScimUserId::new("u1")])
            .await
            .expect_err("both refused");
        assert_eq!(err.scim_type(), Some("invalidFilter"), "{err:?}");
        let _ = client
            .remove_group_members(&g, &[ScimUserId::new("u1")])
            .await;
        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 4);
        assert!(
            is_filter_removal(&reqs[2]),
            "still tries the RFC form first"
        );
    }

    #[tokio::test]
    async fn a_removal_refused_for_another_reason_is_not_retried_in_the_other_form() {
        let (server, client, _) = setup().await;
        Mock::given(method("PATCH"))
            .respond_with(scim_error(
                404,
                None,
                "This group isn't a member of the team.",
            ))
            .mount(&server)
            .await;
        let err = client
            .remove_group_members(&ScimGroupId::new("g1"), &[ScimUserId::new("u1")])
            .await
            .expect_err("404");
        assert_eq!(err.status(), Some(404));
        assert_eq!(requests(&server).await.len(), 1);
    }

    #[tokio::test]
    async fn absurd_total_results_never_overflow_nor_cut_a_listing_silently() {
        let page = |total: Value, n: u64| {
            let resources: Vec<_> = (0..n)
                .map(|i| user_json(&format!("u{i}"), &format!("p{i}@example.com")))
                .collect();
            json!({"totalResults": total, "Resources": resources})
        };
        // u64::MAX: the listing ends on the first empty page.
        let (server, client, _) = setup().await;
        Mock::given(method("GET"))
            .and(wiremock::matchers::query_param("startIndex", "1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(json!(u64::MAX), 100)))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(json!(u64::MAX), 0)))
            .mount(&server)
            .await;
        assert_eq!(client.list_users(|_| {}).await.expect("listed"), 100);

        // Negative, fractional or non-numeric: the page does not decode (asked again, then an
        // error); null is absent, and a short page ends the listing.
        for total in [json!(-1), json!(1e300), json!("12")] {
            let (server, client, _) = setup().await;
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_body_json(page(total.clone(), 3)))
                .mount(&server)
                .await;
            let err = client.list_users(|_| {}).await.expect_err("undecodable");
            assert!(matches!(err, ScimError::Decode { .. }), "{total}: {err:?}");
            assert_eq!(requests(&server).await.len(), DECODE_ATTEMPTS as usize);
        }
        let (server, client, _) = setup().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page(json!(null), 3)))
            .mount(&server)
            .await;
        assert_eq!(client.list_users(|_| {}).await.expect("listed"), 3);

        // 0 with items, or a server that ignores startIndex: more than it claims exist.
        for (total, n) in [(0u64, 100u64), (250, 100)] {
            let (server, client, _) = setup().await;
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_body_json(page(json!(total), n)))
                .mount(&server)
                .await;
            let err = client.list_users(|_| {}).await.expect_err("inconsistent");
            assert!(err.to_string().contains("inconsistent"), "{err}");
            assert!(requests(&server).await.len() <= 3);
        }
    }
}
