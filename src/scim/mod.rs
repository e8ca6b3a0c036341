//! The Postman SCIM 2.0 client: users (list, look up, create, replace, activate/deactivate,
//! rename), groups (list, look up, create, rename, add/remove members, delete) and the
//! credential check, with proactive pacing (`pacing`), the shared retry loop (`crate::retry`),
//! typed errors (`error`) and private wire types (`wire`). It sends exactly the documented
//! bodies (postman-scim.md A4, A5) and returns domain types from `crate::model`.
//!
//! It must not decide what to change (that is the planner's job), must never send a user DELETE
//! (Postman has none: A3), must never retry a POST that may have reached Postman, and must never
//! let the API key reach a log, a `Debug` string or an error.

mod error;
mod pacing;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use url::Url;

pub use error::ScimError;

use crate::metrics::Metrics;
use crate::model::{PostmanGroup, PostmanUser, ScimGroupId, ScimUserId, UserAttrs};
use crate::retry::{retry, Attempt, RetryPolicy};
use error::{is_non_idempotent, is_retryable_status};
use pacing::{Bucket, Pacer};

/// The base URL Postman tells IdPs to use (postman-scim.md A2).
pub const DEFAULT_BASE_URL: &str = "https://api.getpostman.com/scim/v2";

/// SCIM page size: Postman's default and its advertised `filter.maxResults` (A4.2, B3).
const PAGE_SIZE: u64 = 100;

/// Most members changed by one group PATCH.
const MEMBER_CHUNK: usize = 100;

/// How the key goes into the `Authorization` header (postman-scim.md A2, B1).
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
    /// POST, PUT, PATCH and DELETE per minute (Postman allows 180: A8).
    pub writes_per_minute: u32,
    /// GET per minute (Postman allows 300: A8).
    pub reads_per_minute: u32,
    /// Per request.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl ScimClientConfig {
    /// The documented defaults, with this key.
    pub fn new(api_key: SecretString) -> Self {
        Self {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("the default base URL is valid"),
            api_key,
            auth_scheme: AuthScheme::Raw,
            writes_per_minute: 180,
            reads_per_minute: 300,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// Result of `create_user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created(PostmanUser),
    /// 409 `uniqueness` (A4.3, A7): look the user up and reconcile.
    AlreadyExists {
        detail: String,
    },
}

/// Result of `create_group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupCreateOutcome {
    Created(PostmanGroup),
    /// 409 `uniqueness` (A5): look the group up and reconcile.
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
            .build()
            .map_err(|e| ScimError::Config(format!("building the HTTP client: {e}")))?;
        let pacer = Pacer::new(cfg.reads_per_minute, cfg.writes_per_minute)?;
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
            }),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Users

    /// Lists every team member (active or not: A4.2), in pages of 100 by `startIndex`/`count`,
    /// calling `on_user` for each. Returns how many were listed.
    pub async fn list_users(&self, mut on_user: impl FnMut(PostmanUser)) -> Result<u64, ScimError> {
        self.list_pages("Users", None, |u: wire::User| on_user(u.into()))
            .await
    }

    /// Looks a member up by `userName` (their email). Postman's filter is case-sensitive (A4.2,
    /// B5), so: the exact value first, then, if it has upper case and nothing matched, the
    /// lowercased value; matches are compared case-insensitively here.
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

    /// `POST /Users` (A4.3). Not retried once it may have reached Postman: such failures are
    /// `is_ambiguous()` and the caller must look the user up before trying again.
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

    /// `PUT /Users/{id}` (A4.4) with `userName`, `name` and `active` every time, so a strict
    /// full-replace server keeps all three (B12).
    pub async fn replace_user(
        &self,
        id: &ScimUserId,
        attrs: &UserAttrs,
        active: bool,
    ) -> Result<(), ScimError> {
        let body = wire::ReplaceUser {
            schemas: [wire::USER_SCHEMA],
            user_name: &attrs.user_name,
            name: attrs.into(),
            active,
        };
        self.send(Verb::Put, &["Users", id.as_str()], None, Some(&body))
            .await
            .map(drop)
    }

    /// `PATCH /Users/{id}` replacing `active` (A4.5: no path, the value is an object).
    /// `false` removes the member from the team; `true` brings them back (A9).
    pub async fn set_active(&self, id: &ScimUserId, active: bool) -> Result<(), ScimError> {
        let op = wire::PatchOp::one("replace", None, json!({ "active": active }));
        self.send(Verb::Patch, &["Users", id.as_str()], None, Some(&op))
            .await
            .map(drop)
    }

    /// `PATCH /Users/{id}` replacing `userName` (A4.5; verified domains only: A4.4).
    pub async fn set_user_name(&self, id: &ScimUserId, user_name: &str) -> Result<(), ScimError> {
        let op = wire::PatchOp::one("replace", Some("userName"), json!(user_name));
        self.send(Verb::Patch, &["Users", id.as_str()], None, Some(&op))
            .await
            .map(drop)
    }

    /// `GET /Users/{id}`; `None` when Postman says 404 (not a member: A7).
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

    /// Looks a group up by its exact `displayName` (the only group filter: A5).
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

    /// `POST /Groups` (A5). Same retry rules as `create_user`.
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

    /// `PATCH /Groups/{id}` replacing `{id, displayName}` (the documented rename: A5).
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

    /// Adds members with `{"op":"add","path":"members",...}` (B10), at most 100 per PATCH. On an
    /// error, earlier chunks have been applied (adding is idempotent, so repeating is safe).
    pub async fn add_group_members(
        &self,
        id: &ScimGroupId,
        members: &[ScimUserId],
    ) -> Result<(), ScimError> {
        self.patch_members(id, "add", members).await
    }

    /// Removes members with `{"op":"remove","path":"members",...}` (B10), at most 100 per PATCH.
    pub async fn remove_group_members(
        &self,
        id: &ScimGroupId,
        members: &[ScimUserId],
    ) -> Result<(), ScimError> {
        self.patch_members(id, "remove", members).await
    }

    /// `DELETE /Groups/{id}` (A5). A 404 means the group is already gone, which is the goal,
    /// so it counts as success (this also makes a verified repeat after an ambiguous failure
    /// harmless). Not blindly retried, like a POST.
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

    /// `GET /ServiceProviderConfig` (A6): the endpoint answers and returns a JSON object.
    pub async fn service_provider_config(&self) -> Result<(), ScimError> {
        let reply = self
            .send::<()>(Verb::Get, &["ServiceProviderConfig"], None, None)
            .await?;
        let _: serde_json::Map<String, serde_json::Value> =
            decode(Verb::Get, "/ServiceProviderConfig", &reply)?;
        Ok(())
    }

    /// `GET /Users?count=1&startIndex=1`: the key can read team members (A11, Postman-CS check).
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

    async fn patch_members(
        &self,
        id: &ScimGroupId,
        op: &'static str,
        members: &[ScimUserId],
    ) -> Result<(), ScimError> {
        for chunk in members.chunks(MEMBER_CHUNK) {
            let value: Vec<_> = chunk
                .iter()
                .map(|m| json!({ "value": m.as_str() }))
                .collect();
            let patch = wire::PatchOp::one(op, Some("members"), serde_json::Value::Array(value));
            self.send(Verb::Patch, &["Groups", id.as_str()], None, Some(&patch))
                .await?;
        }
        Ok(())
    }

    /// Pages through a ListResponse by `startIndex`/`count` until `totalResults` is reached
    /// (or, without it, until a short or empty page).
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
        loop {
            let start_s = start.to_string();
            let mut pairs = vec![("startIndex", start_s.as_str()), ("count", count.as_str())];
            if let Some(f) = filter {
                pairs.push(("filter", f));
            }
            let query = encode_query(&pairs);
            let reply = self
                .send::<()>(Verb::Get, &[resource], Some(&query), None)
                .await?;
            let page: wire::ListResponse<T> = decode(Verb::Get, &path, &reply)?;
            let n = page.resources.len() as u64;
            page.resources.into_iter().for_each(&mut on_item);
            listed += n;
            start += n;
            let done = match page.total_results {
                _ if n == 0 => true,
                Some(total) => start > total,
                None => n < PAGE_SIZE,
            };
            if done {
                return Ok(listed);
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
            let retry_after = parse_retry_after(resp.headers());
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => return Err(self.transport_attempt(e, method, path, idempotent)),
            };
            if (200..300).contains(&status) {
                return Ok(Reply {
                    body: bytes.to_vec(),
                });
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

/// A 409 create conflict that means "already there" (A4.3, A5, A7): scimType `uniqueness`, or
/// none at all. Any other 409 stays an error.
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

/// A SCIM filter string value: `"` and `\` escaped (RFC 7644 §3.4.2.2, JSON string rules).
fn escape_filter_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A fully percent-encoded query string. Spaces become `%20` (not form-style `+`) and a literal
/// `+` becomes `%2B`, so an address like `a+b@example.com` cannot turn into a space on the
/// server (A4.2: "a `+` in an address must be encoded").
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

/// `Retry-After` in seconds (the form Postman and other clients use: A8). HTTP dates are not
/// documented for Postman and fall back to backoff.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
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
