//! Turns one Okta app user into a `model::DesiredUser`: which Okta attributes become the
//! Postman userName and names (a configurable fallback chain per attribute), and whether the
//! person is entitled to an active Postman account. Pure functions over parsed data: no I/O, no
//! clock. This module must not decide what to do in Postman; that is the planner's job.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::wire;
use crate::model::{DesiredUser, OktaUserId, UserAttrs};

/// Where one attribute value is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `app.credentials.userName`: the app-specific username Okta keeps for the assignment.
    AppUserName,
    /// `app.profile.<attr>`: the app user's profile (app-specific attributes,
    /// docs/okta-api.md#app-users).
    AppProfile(String),
    /// `user.profile.<attr>`: the Okta user's profile (needs `expand=user`,
    /// docs/okta-api.md#app-users).
    UserProfile(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::AppUserName => f.write_str("app.credentials.userName"),
            Source::AppProfile(a) => write!(f, "app.profile.{a}"),
            Source::UserProfile(a) => write!(f, "user.profile.{a}"),
        }
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "app.credentials.userName" {
            return Ok(Source::AppUserName);
        }
        let (ctor, attr): (fn(String) -> Source, &str) =
            if let Some(attr) = s.strip_prefix("app.profile.") {
                (Source::AppProfile, attr)
            } else if let Some(attr) = s.strip_prefix("user.profile.") {
                (Source::UserProfile, attr)
            } else {
                return Err("expected app.credentials.userName, app.profile.<attr> or \
                            user.profile.<attr>"
                    .to_string());
            };
        // Okta profile attribute names are variable names; nested paths are not supported.
        if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "attribute name {attr:?} must be letters, digits or '_' (no nested paths)"
            ));
        }
        Ok(ctor(attr.to_string()))
    }
}

/// A bad mapping entry in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {entry:?} is not a valid attribute source: {reason}")]
pub struct MappingError {
    /// The configuration key holding the chain (e.g. `okta.mapping.user_name`).
    pub key: String,
    /// The offending entry, as written.
    pub entry: String,
    pub reason: String,
}

/// Which Okta attributes become the Postman userName, givenName and familyName. Each is a
/// fallback chain: the first source with a non-blank string value wins.
///
/// Defaults:
/// - `user_name`: `app.credentials.userName`, then `user.profile.login`
/// - `given_name`: `app.profile.firstName`, then `user.profile.firstName`
/// - `family_name`: `app.profile.lastName`, then `user.profile.lastName`
///
/// A user whose userName resolves to nothing is skipped (reported, never deactivated for it). A
/// name that resolves to nothing falls back, as a last resort, to the local part of the userName
/// (before `@`), because Postman requires both names (docs/postman-scim.md#creating-a-user); it is
/// `""` only if that local part is empty too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeMapping {
    pub user_name: Vec<Source>,
    pub given_name: Vec<Source>,
    pub family_name: Vec<Source>,
}

impl Default for AttributeMapping {
    fn default() -> Self {
        Self {
            user_name: vec![Source::AppUserName, Source::UserProfile("login".into())],
            given_name: vec![
                Source::AppProfile("firstName".into()),
                Source::UserProfile("firstName".into()),
            ],
            family_name: vec![
                Source::AppProfile("lastName".into()),
                Source::UserProfile("lastName".into()),
            ],
        }
    }
}

impl AttributeMapping {
    /// Parses one fallback chain from configuration. `key_name` is the configuration key, used
    /// in the error that names the first bad entry. An empty chain is an error too.
    pub fn parse(key_name: &str, entries: &[String]) -> Result<Vec<Source>, MappingError> {
        if entries.is_empty() {
            return Err(MappingError {
                key: key_name.to_string(),
                entry: String::new(),
                reason: "the list must name at least one source".to_string(),
            });
        }
        entries
            .iter()
            .map(|e| {
                e.parse().map_err(|reason| MappingError {
                    key: key_name.to_string(),
                    entry: e.clone(),
                    reason,
                })
            })
            .collect()
    }
}

/// Whether a person is entitled to an active Postman account, and why.
///
/// Active iff the app-user status is ACTIVE or PROVISIONED (ACTIVE is also the status of SSO-only
/// assignments: docs/okta-api.md#statuses) and the Okta user status is not SUSPENDED, DEPROVISIONED
/// or STAGED. LOCKED_OUT, PASSWORD_EXPIRED and RECOVERY keep access (the person is still entitled,
/// they just have to sign in again, docs/okta-api.md#statuses). Any status this code does not know
/// is treated as not entitled. `user_status` is `None` when Okta did not embed the user; the
/// app-user status alone decides then.
pub fn entitlement(app_user_status: &str, user_status: Option<&str>) -> (bool, String) {
    let app = app_user_status.trim().to_ascii_uppercase();
    match app.as_str() {
        "ACTIVE" | "PROVISIONED" => {}
        "" => return (false, "app user has no status".to_string()),
        known @ ("INACTIVE" | "SUSPENDED" | "PENDING" | "APPROVED" | "REVOKED" | "STAGED"
        | "DEPROVISIONED" | "IMPORTED" | "MATCHED" | "UNASSIGNED" | "IMPLICIT") => {
            return (false, format!("app user {known}"));
        }
        unknown => {
            return (
                false,
                format!("app user status {unknown} is not known to this version"),
            )
        }
    }
    let Some(user) = user_status else {
        return (
            true,
            format!("app user {app}, Okta user status not returned"),
        );
    };
    let user = user.trim().to_ascii_uppercase();
    match user.as_str() {
        "ACTIVE" | "PROVISIONED" | "LOCKED_OUT" | "PASSWORD_EXPIRED" | "RECOVERY" => {
            (true, format!("app user {app}, Okta user {user}"))
        }
        "SUSPENDED" | "DEPROVISIONED" | "STAGED" => (false, format!("Okta user {user}")),
        "" => (false, "Okta user has no status".to_string()),
        unknown => (
            false,
            format!("Okta user status {unknown} is not known to this version"),
        ),
    }
}

/// Maps one app user whose id is `id`. `Err((id, reason))` means it must go to
/// `OktaRead.skipped`.
pub(super) fn desired_user(
    id: OktaUserId,
    app: &wire::AppUser,
    mapping: &AttributeMapping,
) -> Result<DesiredUser, (OktaUserId, String)> {
    let user = app.embedded.as_ref().and_then(|e| e.user.as_ref());
    let Some(user_name) = resolve(&mapping.user_name, app, user) else {
        let tried: Vec<String> = mapping.user_name.iter().map(Source::to_string).collect();
        return Err((
            id,
            format!("no userName: none of {} has a value", tried.join(", ")),
        ));
    };
    let local_part = user_name.split('@').next().unwrap_or_default().to_string();
    let given_name = resolve(&mapping.given_name, app, user).unwrap_or_else(|| local_part.clone());
    let family_name = resolve(&mapping.family_name, app, user).unwrap_or(local_part);
    let (active, reason) = entitlement(
        app.status.as_deref().unwrap_or(""),
        user.and_then(|u| u.status.as_deref()),
    );
    Ok(DesiredUser {
        okta_id: id,
        attrs: UserAttrs {
            user_name,
            given_name,
            family_name,
        },
        active,
        reason,
    })
}

/// Which mapping source supplied each attribute of one app user (for `why`). `None` for a
/// name means no source had a value and the local part of the userName was used; `None` for
/// the userName means the user is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeSources {
    pub user_name: Option<Source>,
    pub given_name: Option<Source>,
    pub family_name: Option<Source>,
}

/// The sources [`desired_user`] takes each attribute from, by the same resolution: it can
/// never name a different source than the one whose value the mapping used.
pub(super) fn sources(app: &wire::AppUser, mapping: &AttributeMapping) -> AttributeSources {
    let user = app.embedded.as_ref().and_then(|e| e.user.as_ref());
    let winner = |chain: &[Source]| resolve_with_source(chain, app, user).map(|(s, _)| s.clone());
    AttributeSources {
        user_name: winner(&mapping.user_name),
        given_name: winner(&mapping.given_name),
        family_name: winner(&mapping.family_name),
    }
}

/// The first non-blank string value along the chain, trimmed.
fn resolve(chain: &[Source], app: &wire::AppUser, user: Option<&wire::User>) -> Option<String> {
    resolve_with_source(chain, app, user).map(|(_, v)| v)
}

/// [`resolve`], with the source that supplied the value.
fn resolve_with_source<'c>(
    chain: &'c [Source],
    app: &wire::AppUser,
    user: Option<&wire::User>,
) -> Option<(&'c Source, String)> {
    chain.iter().find_map(|source| {
        let value = match source {
            Source::AppUserName => app.credentials.as_ref()?.user_name.clone()?,
            Source::AppProfile(attr) => string_value(app.profile.as_ref()?.get(attr)?)?,
            Source::UserProfile(attr) => string_value(user?.profile.as_ref()?.get(attr)?)?,
        };
        let value = value.trim();
        (!value.is_empty()).then(|| (source, value.to_string()))
    })
}

fn string_value(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: Value) -> Result<DesiredUser, (OktaUserId, String)> {
        let id = OktaUserId::new(json["id"].as_str().expect("test fixture has an id"));
        let app: wire::AppUser =
            serde_json::from_value(json).expect("test fixture is a valid app user");
        desired_user(id, &app, &AttributeMapping::default())
    }

    #[test]
    fn suspended_okta_user_is_not_entitled() {
        assert_eq!(
            entitlement("ACTIVE", Some("SUSPENDED")),
            (false, "Okta user SUSPENDED".to_string())
        );
        assert!(!entitlement("PROVISIONED", Some("DEPROVISIONED")).0);
        assert!(!entitlement("ACTIVE", Some("STAGED")).0);
    }

    #[test]
    fn locked_out_expired_and_recovering_users_keep_access() {
        for s in [
            "ACTIVE",
            "LOCKED_OUT",
            "PASSWORD_EXPIRED",
            "RECOVERY",
            "PROVISIONED",
        ] {
            assert!(entitlement("ACTIVE", Some(s)).0, "{s}");
            assert!(entitlement("PROVISIONED", Some(s)).0, "{s}");
        }
    }

    #[test]
    fn inactive_or_unknown_app_user_statuses_are_not_entitled() {
        for s in [
            "INACTIVE",
            "STAGED",
            "REVOKED",
            "PENDING",
            "SOMETHING_NEW",
            "",
        ] {
            assert!(!entitlement(s, Some("ACTIVE")).0, "{s}");
        }
    }

    #[test]
    fn unknown_okta_user_status_is_not_entitled_and_says_so() {
        let (active, reason) = entitlement("ACTIVE", Some("ACTIVATING"));
        assert!(!active);
        assert!(reason.contains("ACTIVATING"), "{reason}");
    }

    #[test]
    fn a_missing_okta_user_status_leaves_the_app_status_to_decide() {
        assert!(entitlement("ACTIVE", None).0);
        assert!(!entitlement("INACTIVE", None).0);
    }

    #[test]
    fn mapping_entries_parse_and_bad_ones_are_named() {
        let chain = AttributeMapping::parse(
            "user_name",
            &[
                "app.credentials.userName".into(),
                "user.profile.email".into(),
            ],
        )
        .expect("valid chain");
        assert_eq!(
            chain,
            vec![Source::AppUserName, Source::UserProfile("email".into())]
        );
        let err = AttributeMapping::parse(
            "given_name",
            &["app.profile.firstName".into(), "user.email".into()],
        )
        .expect_err("user.email is not a source");
        assert_eq!(err.entry, "user.email");
        assert!(err.to_string().contains("given_name"), "{err}");
        assert!(AttributeMapping::parse("family_name", &[]).is_err());
        assert!(AttributeMapping::parse("x", &["user.profile.a.b".into()]).is_err());
        assert!(AttributeMapping::parse("x", &["app.profile.".into()]).is_err());
    }

    #[test]
    fn sources_print_as_they_are_written() {
        for s in [
            "app.credentials.userName",
            "app.profile.x_1",
            "user.profile.login",
        ] {
            assert_eq!(s.parse::<Source>().expect("valid").to_string(), s);
        }
    }

    #[test]
    fn chains_fall_back_past_missing_null_and_blank_values() {
        let mapped = map(serde_json::json!({
            "id": "00u1", "status": "ACTIVE",
            "credentials": null,
            "profile": {"firstName": null, "lastName": "  "},
            "_embedded": {"user": {"id": "00u1", "status": "ACTIVE",
                "profile": {"login": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace"}}}
        }));
        let u = mapped.expect("mapped");
        assert_eq!(u.attrs.user_name, "ada@example.com");
        assert_eq!(u.attrs.given_name, "Ada");
        assert_eq!(u.attrs.family_name, "Lovelace");
        assert!(u.active);
    }

    #[test]
    fn missing_names_fall_back_to_the_user_name_local_part() {
        let mapped = map(serde_json::json!({
            "id": "00u2", "status": "ACTIVE",
            "credentials": {"userName": "grace@example.com"}
        }));
        let u = mapped.expect("mapped");
        assert_eq!(u.attrs.given_name, "grace");
        assert_eq!(u.attrs.family_name, "grace");
        // No embedded user: the app status decides.
        assert!(u.active);
    }

    #[test]
    fn a_user_without_a_resolvable_user_name_is_skipped_with_the_sources_tried() {
        let mapped = map(serde_json::json!({
            "id": "00u3", "status": "ACTIVE", "credentials": {"userName": ""},
            "_embedded": {"user": {"status": "ACTIVE", "profile": {"login": null}}}
        }));
        let (id, reason) = mapped.expect_err("skipped");
        assert_eq!(id.as_str(), "00u3");
        assert!(reason.contains("app.credentials.userName"), "{reason}");
        assert!(reason.contains("user.profile.login"), "{reason}");
    }

    #[test]
    fn sources_name_the_fallback_that_supplied_each_value() {
        let json = serde_json::json!({
            "id": "00u9",
            "status": "ACTIVE",
            "credentials": {"userName": "  "},
            "profile": {"firstName": "Ann"},
            "_embedded": {"user": {"status": "ACTIVE", "profile": {"login": "ann@example.com"}}}
        });
        let app: wire::AppUser = serde_json::from_value(json.clone()).expect("app user");
        let s = sources(&app, &AttributeMapping::default());
        // A blank app username falls through to the login; no lastName anywhere: the local part.
        assert_eq!(s.user_name, Some(Source::UserProfile("login".into())));
        assert_eq!(s.given_name, Some(Source::AppProfile("firstName".into())));
        assert_eq!(s.family_name, None);
        let d = map(json).expect("mapped");
        assert_eq!(d.attrs.user_name, "ann@example.com");
        assert_eq!(d.attrs.family_name, "ann");
    }
}
