//! Serde shapes of the Okta JSON this client reads. They are private to `okta` and converted to
//! `model` types at the boundary (mapping.rs, mod.rs); nothing outside the client sees them.
//!
//! Okta adds properties over time and may omit null ones (okta-api.md A1, A8.5), and its status
//! enums keep growing (C, "Serde"): so no `deny_unknown_fields`, every field is an `Option` with
//! `#[serde(default)]`, and statuses are plain strings judged by `mapping::entitlement`.

use serde::Deserialize;
use serde_json::{Map, Value};

/// An Okta JSON object of free-form attributes (`profile`): app-specific, `additionalProperties`.
pub(super) type Profile = Map<String, Value>;

/// One item of `GET /api/v1/apps/{appId}/users?expand=user` (okta-api.md A2.1). Its `id` (the
/// Okta **user** id, not an assignment id) is read from the raw item before this shape, so that
/// an item of the wrong shape can still be reported by id.
#[derive(Debug, Deserialize)]
pub(super) struct AppUser {
    /// `AppUserStatus`: ACTIVE, PROVISIONED, STAGED, INACTIVE, ... (kept as text).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub credentials: Option<AppUserCredentials>,
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default, rename = "_embedded")]
    pub embedded: Option<AppUserEmbedded>,
}

/// [`AppUser`] together with its `id`, for decoding a whole page in one typed pass. Kept in
/// step with `AppUser` field for field (`split` moves them over).
#[derive(Debug, Deserialize)]
pub(super) struct AppUserItem {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub credentials: Option<AppUserCredentials>,
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default, rename = "_embedded")]
    pub embedded: Option<AppUserEmbedded>,
}

impl AppUserItem {
    /// The id (empty if absent: callers check first) and the record.
    pub fn split(self) -> (String, AppUser) {
        (
            self.id.unwrap_or_default(),
            AppUser {
                status: self.status,
                credentials: self.credentials,
                profile: self.profile,
                embedded: self.embedded,
            },
        )
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AppUserCredentials {
    #[serde(default, rename = "userName")]
    pub user_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AppUserEmbedded {
    /// Present with `expand=user` (A2).
    #[serde(default)]
    pub user: Option<User>,
}

/// An Okta `User` (A2.4), as embedded in app users.
#[derive(Debug, Deserialize)]
pub(super) struct User {
    /// `UserStatus`: ACTIVE, SUSPENDED, DEPROVISIONED, ... (kept as text).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
}

/// One item of `GET /api/v1/apps/{appId}/groups?expand=group` (A2.2). Its `id`, the group id,
/// is read from the raw item.
#[derive(Debug, Deserialize)]
pub(super) struct GroupAssignment {
    #[serde(default, rename = "_embedded")]
    pub embedded: Option<GroupAssignmentEmbedded>,
}

#[derive(Debug, Deserialize)]
pub(super) struct GroupAssignmentEmbedded {
    #[serde(default)]
    pub group: Option<Group>,
}

/// An Okta `Group` (A2.3).
#[derive(Debug, Deserialize)]
pub(super) struct Group {
    #[serde(default)]
    pub profile: Option<GroupProfile>,
}

#[derive(Debug, Deserialize)]
pub(super) struct GroupProfile {
    #[serde(default)]
    pub name: Option<String>,
}

/// `GET /api/v1/apps/{appId}`: only what `check` reports.
#[derive(Debug, Deserialize)]
pub(super) struct Application {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Okta's error body (A6). Any field may be missing; the body may be empty or not JSON at all.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default, rename = "errorCode")]
    pub error_code: Option<String>,
    #[serde(default, rename = "errorSummary")]
    pub error_summary: Option<String>,
    #[serde(default, rename = "errorId")]
    pub error_id: Option<String>,
}

/// The token endpoint's answer (okta-api.md A4.2): `{"token_type":"Bearer","expires_in":3600,
/// "access_token":"…","scope":"…"}`, or `"token_type":"DPoP"` for DPoP-bound tokens (A4.3).
#[derive(Default, Deserialize)]
pub(super) struct TokenResponse {
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// An OAuth error answer (RFC 6749 5.2): `{"error":"invalid_client","error_description":"…"}`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct OAuthErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// Just the `id` of a list item (group members: `/groups/{id}/users` returns whole User objects,
/// of which only the id is needed).
#[derive(Debug, Deserialize)]
pub(super) struct IdOnly {
    #[serde(default)]
    pub id: Option<String>,
}
