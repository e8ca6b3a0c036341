//! Postman SCIM JSON shapes (docs/postman-scim.md): request bodies exactly as documented and
//! tolerant response types, converted to `crate::model` types at this boundary. Nothing here
//! leaves the `scim` module, does I/O, or decides what to send.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{PostmanGroup, PostmanUser, ScimGroupId, ScimUserId, UserAttrs};

pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

// ---------------------------------------------------------------------------------------------
// Responses

/// A SCIM ListResponse (docs/postman-scim.md#listing-and-filtering).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct ListResponse<T> {
    /// A negative, fractional or non-numeric value fails to decode (the page is refused), and
    /// the paging loop checks a decoded one against what was returned.
    #[serde(default)]
    pub total_results: Option<u64>,
    #[serde(default, rename = "Resources")]
    pub resources: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Name {
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
}

/// A User resource (docs/postman-scim.md#user-resource).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct User {
    pub id: String,
    pub user_name: String,
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// Always present in Postman's examples; if it were missing, RFC 7643 gives no default and
    /// we read the member as active (listed members are on the team).
    #[serde(default)]
    pub active: Option<bool>,
}

impl From<User> for PostmanUser {
    fn from(u: User) -> Self {
        let name = u.name.unwrap_or_default();
        PostmanUser {
            id: ScimUserId(u.id),
            attrs: UserAttrs {
                user_name: u.user_name,
                given_name: name.given_name.unwrap_or_default(),
                family_name: name.family_name.unwrap_or_default(),
            },
            active: u.active.unwrap_or(true),
            external_id: u.external_id,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemberRef {
    pub value: String,
}

/// A Group resource (docs/postman-scim.md#groups). `members` is `None` when the body had no such
/// field (the documented PATCH response schema omits it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Group {
    pub id: String,
    pub display_name: String,
    #[serde(default)]
    pub members: Option<Vec<MemberRef>>,
}

impl From<Group> for PostmanGroup {
    fn from(g: Group) -> Self {
        PostmanGroup {
            id: ScimGroupId(g.id),
            display_name: g.display_name,
            members: g
                .members
                .unwrap_or_default()
                .into_iter()
                .map(|m| ScimUserId(m.value))
                .collect::<BTreeSet<_>>(),
        }
    }
}

/// What an error body told us: SCIM `scimType` and a human-readable detail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ErrorInfo {
    pub scim_type: Option<String>,
    pub detail: String,
}

/// Longest snippet of a non-JSON error body we keep.
const SNIPPET_CHARS: usize = 200;

/// Reads an error body in any of the shapes Postman documents (docs/postman-scim.md#errors): the
/// SCIM error (`status` is a string), `{type,title,detail,status}`, `{error:{name,message}}`;
/// anything else becomes a short snippet of the text.
pub(crate) fn parse_error_body(body: &[u8]) -> ErrorInfo {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) {
        let scim_type = text(obj.get("scimType")).filter(|s| !s.is_empty());
        let detail = text(obj.get("detail"))
            .or_else(|| {
                let err = obj.get("error")?;
                let message = text(err.get("message"));
                match (text(err.get("name")), message) {
                    (Some(n), Some(m)) => Some(format!("{n}: {m}")),
                    (n, m) => m.or(n),
                }
            })
            .or_else(|| text(obj.get("title")))
            .or_else(|| text(obj.get("message")));
        if let Some(detail) = detail {
            return ErrorInfo { scim_type, detail };
        }
        if scim_type.is_some() {
            return ErrorInfo {
                scim_type,
                detail: "(no detail)".to_owned(),
            };
        }
    }
    ErrorInfo {
        scim_type: None,
        detail: snippet(body),
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut out: String = s.chars().take(SNIPPET_CHARS).collect();
    if s.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NameOut<'a> {
    pub given_name: &'a str,
    pub family_name: &'a str,
}

impl<'a> From<&'a UserAttrs> for NameOut<'a> {
    fn from(a: &'a UserAttrs) -> Self {
        NameOut {
            given_name: &a.given_name,
            family_name: &a.family_name,
        }
    }
}

/// `POST /Users` (docs/postman-scim.md#creating-a-user).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateUser<'a> {
    pub schemas: [&'static str; 1],
    pub user_name: &'a str,
    pub name: NameOut<'a>,
    pub external_id: &'a str,
    pub active: bool,
}

/// `PUT /Users/{id}` (docs/postman-scim.md#replacing-a-user-put): every attribute `CreateUser`
/// sends, always. A PUT replaces the whole resource
/// (<https://www.rfc-editor.org/rfc/rfc7644#section-3.5.1>: omitted attributes may be cleared), and
/// Postman does not document its reading (docs/postman-scim.md#put-semantics), so leaving one out
/// could clear it; `externalId` is the one a rename used to lose.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReplaceUser<'a> {
    pub schemas: [&'static str; 1],
    pub user_name: &'a str,
    pub name: NameOut<'a>,
    pub external_id: &'a str,
    pub active: bool,
}

/// A SCIM PatchOp (docs/postman-scim.md, "Patching a user" and "Groups").
#[derive(Debug, Serialize)]
pub(crate) struct PatchOp {
    pub schemas: [&'static str; 1],
    #[serde(rename = "Operations")]
    pub operations: Vec<Operation>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Operation {
    pub op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOp {
    pub(crate) fn one(op: &'static str, path: Option<&'static str>, value: Value) -> Self {
        PatchOp {
            schemas: [PATCH_OP_SCHEMA],
            operations: vec![Operation {
                op,
                path: path.map(str::to_owned),
                value: Some(value),
            }],
        }
    }

    /// One `remove` per member with a filter path, `members[value eq "<id>"]`
    /// (<https://www.rfc-editor.org/rfc/rfc7644#section-3.5.2.2>: a remove carries no value; the
    /// filter selects what goes). This is also what Okta's group push sends.
    pub(crate) fn remove_members_by_filter(members: &[ScimUserId]) -> Self {
        PatchOp {
            schemas: [PATCH_OP_SCHEMA],
            operations: members
                .iter()
                .map(|m| Operation {
                    op: "remove",
                    path: Some(format!(
                        "members[value eq \"{}\"]",
                        escape_filter_value(m.as_str())
                    )),
                    value: None,
                })
                .collect(),
        }
    }

    /// One `remove` of path `members` with the ids as a value list: what Entra ID sends, and
    /// the form servers that do not parse filter paths accept.
    pub(crate) fn remove_members_by_value(members: &[ScimUserId]) -> Self {
        let value = members
            .iter()
            .map(|m| serde_json::json!({ "value": m.as_str() }))
            .collect();
        PatchOp::one("remove", Some("members"), Value::Array(value))
    }
}

/// A SCIM filter string value: `"` and `\` escaped (RFC 7644 §3.4.2.2, JSON string rules).
pub(crate) fn escape_filter_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

#[derive(Debug, Serialize)]
pub(crate) struct MemberOut<'a> {
    pub value: &'a str,
}

/// `POST /Groups` (docs/postman-scim.md#groups).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateGroup<'a> {
    pub schemas: [&'static str; 1],
    pub display_name: &'a str,
    pub members: Vec<MemberOut<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scim_error_body_with_a_string_status_is_parsed() {
        let body = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],
            "scimType":"uniqueness","detail":"This person is already a member of the team.","status":"409"}"#;
        assert_eq!(
            parse_error_body(body),
            ErrorInfo {
                scim_type: Some("uniqueness".into()),
                detail: "This person is already a member of the team.".into()
            }
        );
    }

    #[test]
    fn postman_generic_error_shapes_are_understood() {
        let a = parse_error_body(
            br#"{"type":"https://x","title":"Unauthorized","detail":"bad key","status":401}"#,
        );
        assert_eq!(a.detail, "bad key");
        let b =
            parse_error_body(br#"{"error":{"name":"rateLimited","message":"Too many requests"}}"#);
        assert_eq!(b.detail, "rateLimited: Too many requests");
        assert_eq!(b.scim_type, None);
    }

    #[test]
    fn a_non_json_error_body_is_kept_as_a_short_snippet() {
        let long = "x".repeat(1000);
        let info = parse_error_body(long.as_bytes());
        assert_eq!(info.detail.chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(parse_error_body(b"  ").detail, "(empty body)");
        assert_eq!(
            parse_error_body(b"<html>502</html>").detail,
            "<html>502</html>"
        );
    }

    #[test]
    fn a_user_without_name_or_active_converts_with_defaults() {
        let u: User =
            serde_json::from_str(r#"{"id":"abc","userName":"a@example.com"}"#).expect("valid user");
        let p = PostmanUser::from(u);
        assert_eq!(p.attrs.given_name, "");
        assert!(p.active);
        assert_eq!(p.external_id, None);
    }
}
