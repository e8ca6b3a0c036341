//! Serde shapes of the Okta JSON this client reads. They are private to `okta` and converted to
//! `model` types at the boundary (mapping.rs, mod.rs); nothing outside the client sees them.
//!
//! Okta adds properties over time and may omit null ones, and its status enums keep growing
//! (docs/okta-api.md#conventions): so no `deny_unknown_fields`, every field is an `Option` with
//! `#[serde(default)]`, and statuses are plain strings judged by `mapping::entitlement`.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// An Okta JSON object of free-form attributes (`profile`): app-specific, `additionalProperties`.
pub(super) type Profile = Map<String, Value>;

/// Most JSON values (scalars, arrays, objects, object keys) one list item or one profile may
/// hold. A decoded `Value` takes 32 bytes or more for every one, whatever its text took: an item
/// of `[0,0,0,…]` two bytes a value would decode to 16 times the body. Okta's records hold a few
/// hundred values; 100,000 bounds one item at a few megabytes.
pub(super) const MAX_ITEM_VALUES: usize = 100_000;

/// One item of `GET /api/v1/apps/{appId}/users?expand=user` (docs/okta-api.md#app-users). Its `id`
/// (the Okta **user** id, not an assignment id) is read from the raw item before this shape, so
/// that an item of the wrong shape can still be reported by id.
#[derive(Debug, Deserialize)]
pub(super) struct AppUser {
    /// `AppUserStatus`: ACTIVE, PROVISIONED, STAGED, INACTIVE, ... (kept as text).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub credentials: Option<AppUserCredentials>,
    #[serde(default, deserialize_with = "bounded_profile")]
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
    #[serde(default, deserialize_with = "bounded_profile")]
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
    /// Present with `expand=user` (docs/okta-api.md#app-users).
    #[serde(default)]
    pub user: Option<User>,
}

/// An Okta `User` (docs/okta-api.md#statuses), as embedded in app users.
#[derive(Debug, Deserialize)]
pub(super) struct User {
    /// `UserStatus`: ACTIVE, SUSPENDED, DEPROVISIONED, ... (kept as text).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "bounded_profile")]
    pub profile: Option<Profile>,
}

/// One item of `GET /api/v1/apps/{appId}/groups?expand=group` (docs/okta-api.md#groups). Its `id`,
/// the group id, is read from the raw item.
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

/// An Okta `Group` (docs/okta-api.md#groups).
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

/// `GET /api/v1/apps/{appId}/users/{userId}?expand=user` (A2, A2.1) for `why`: the app user
/// with its assignment `scope` (`USER` direct, `GROUP` by group membership).
#[derive(Debug, Deserialize)]
pub(super) struct AppUserWithScope {
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(flatten)]
    pub app_user: AppUser,
}

/// `GET /api/v1/users/{id-or-login}` (A2 `getUser`, A2.4): what `why` needs to find a person
/// by login.
#[derive(Debug, Deserialize)]
pub(super) struct UserRecord {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "bounded_profile")]
    pub profile: Option<Profile>,
}

/// One item of `GET /api/v1/users/{id}/groups` (A2 `listUserGroups`): a `Group` (A2.3), whose
/// `id` is read from the raw item.
#[derive(Debug, Deserialize)]
pub(super) struct UserGroup {
    #[serde(default)]
    pub profile: Option<GroupProfile>,
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

/// Okta's error body (docs/okta-api.md#errors). Any field may be missing; the body may be empty or
/// not JSON at all.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default, rename = "errorCode")]
    pub error_code: Option<String>,
    #[serde(default, rename = "errorSummary")]
    pub error_summary: Option<String>,
    #[serde(default, rename = "errorId")]
    pub error_id: Option<String>,
}

/// The token endpoint's answer (docs/okta-api.md#oauth-service-apps):
/// `{"token_type":"Bearer","expires_in":3600, "access_token":"…","scope":"…"}`, or
/// `"token_type":"DPoP"` for DPoP-bound tokens (docs/okta-api.md#dpop).
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

/// A list item decoded as JSON with at most [`MAX_ITEM_VALUES`] values (the general path,
/// when an item does not fit its typed shape).
pub(super) struct BoundedValue(pub Value);

impl<'de> Deserialize<'de> for BoundedValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let left = Cell::new(MAX_ITEM_VALUES);
        Budgeted { left: &left }.deserialize(d).map(BoundedValue)
    }
}

/// `profile`: an object of at most [`MAX_ITEM_VALUES`] values, or null.
fn bounded_profile<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Profile>, D::Error> {
    let left = Cell::new(MAX_ITEM_VALUES);
    match (Budgeted { left: &left }).deserialize(d)? {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(de::Error::invalid_type(
            match &other {
                Value::Bool(b) => de::Unexpected::Bool(*b),
                Value::String(s) => de::Unexpected::Str(s),
                Value::Array(_) => de::Unexpected::Seq,
                _ => de::Unexpected::Other("a number"),
            },
            &"a profile object",
        )),
    }
}

/// Builds a `Value` as serde_json does, counting every value against `left`.
#[derive(Clone, Copy)]
struct Budgeted<'a> {
    left: &'a Cell<usize>,
}

impl Budgeted<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "an item holds more than {MAX_ITEM_VALUES} JSON values (Okta's records hold a \
                 few hundred); refusing to decode it"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.take()?;
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_profiles_decode_as_usual_within_the_value_budget() {
        let text = r#"{"id":"00u1","n":[1,-2,3.5,null,true,"x"],"o":{"a":{}}}"#;
        let v: BoundedValue = serde_json::from_str(text).expect("decodes");
        assert_eq!(v.0, serde_json::from_str::<Value>(text).expect("json"));
        let item: AppUserItem =
            serde_json::from_str(r#"{"id":"00u1","profile":{"email":"a@b.c"}}"#).expect("item");
        assert_eq!(item.profile.expect("profile")["email"], "a@b.c");
        let item: AppUserItem =
            serde_json::from_str(r#"{"id":"00u1","profile":null}"#).expect("item");
        assert!(item.profile.is_none());
    }

    #[test]
    fn an_item_with_more_values_than_the_budget_is_refused_not_built() {
        let huge = format!("[{}0]", "0,".repeat(MAX_ITEM_VALUES));
        let e = serde_json::from_str::<BoundedValue>(&huge)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("JSON values"), "{e}");
        let item = format!(r#"{{"id":"00u1","profile":{{"a":{huge}}}}}"#);
        assert!(serde_json::from_str::<AppUserItem>(&item).is_err());
        // The same budget through `from_value` (the general path decodes Values again).
        let v: Value = serde_json::from_str(&item).expect("json");
        assert!(serde_json::from_value::<AppUser>(v).is_err());
    }
}
