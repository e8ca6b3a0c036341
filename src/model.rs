//! Domain types shared by every layer: ids, the desired state read from Okta, and what Postman
//! holds. Wire types (Okta JSON, SCIM JSON) never leave their client modules; they are converted
//! into these types at the boundary. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// An Okta user id (`00u...`). Stable for the life of the Okta user: the key of the snapshot.
    OktaUserId
);
id_newtype!(
    /// A Postman SCIM user id (opaque, 48 hex characters in Postman's examples).
    ScimUserId
);
id_newtype!(
    /// An Okta group id (`00g...`).
    OktaGroupId
);
id_newtype!(
    /// A Postman SCIM group id.
    ScimGroupId
);

/// Every kind of operation a plan can hold, users and groups alike. Serialized (and used as
/// the metric label) as today's strings: `create`, `group_add_members`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Create,
    Adopt,
    Update,
    Deactivate,
    Reactivate,
    GroupCreate,
    GroupAdopt,
    GroupRename,
    GroupAddMembers,
    GroupRemoveMembers,
    GroupDelete,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Adopt => "adopt",
            OpKind::Update => "update",
            OpKind::Deactivate => "deactivate",
            OpKind::Reactivate => "reactivate",
            OpKind::GroupCreate => "group_create",
            OpKind::GroupAdopt => "group_adopt",
            OpKind::GroupRename => "group_rename",
            OpKind::GroupAddMembers => "group_add_members",
            OpKind::GroupRemoveMembers => "group_remove_members",
            OpKind::GroupDelete => "group_delete",
        }
    }

    /// The journal's name for it (the same string: one name per kind everywhere).
    pub fn parse(s: &str) -> Option<Self> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == s)
    }

    /// Whether carrying it out sends a SCIM write (an adoption only links the snapshot).
    pub fn is_write(self) -> bool {
        !matches!(self, OpKind::Adopt | OpKind::GroupAdopt)
    }

    pub fn is_group(self) -> bool {
        matches!(
            self,
            OpKind::GroupCreate
                | OpKind::GroupAdopt
                | OpKind::GroupRename
                | OpKind::GroupAddMembers
                | OpKind::GroupRemoveMembers
                | OpKind::GroupDelete
        )
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reports and tests compare kinds with their documented names.
impl PartialEq<&str> for OpKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

pub const ALL_KINDS: [OpKind; 11] = [
    OpKind::Create,
    OpKind::Adopt,
    OpKind::Update,
    OpKind::Deactivate,
    OpKind::Reactivate,
    OpKind::GroupCreate,
    OpKind::GroupAdopt,
    OpKind::GroupRename,
    OpKind::GroupAddMembers,
    OpKind::GroupRemoveMembers,
    OpKind::GroupDelete,
];

/// Who a journalled write is about: the journal and recovery treat users and groups alike.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    User(OktaUserId),
    Group(OktaGroupId),
}

impl Subject {
    /// The Okta id, as the journal stores it.
    pub fn okta_id(&self) -> &str {
        match self {
            Subject::User(id) => id.as_str(),
            Subject::Group(id) => id.as_str(),
        }
    }

    /// The subject of a journal row of this kind about this Okta id.
    pub fn of(kind: OpKind, okta_id: String) -> Self {
        if kind.is_group() {
            Subject::Group(OktaGroupId(okta_id))
        } else {
            Subject::User(OktaUserId(okta_id))
        }
    }
}

/// A Postman resource a write created or found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScimRef {
    User(ScimUserId),
    Group(ScimGroupId),
}

impl ScimRef {
    pub fn as_str(&self) -> &str {
        match self {
            ScimRef::User(id) => id.as_str(),
            ScimRef::Group(id) => id.as_str(),
        }
    }
}

/// The attributes we push to Postman for one person.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserAttrs {
    /// SCIM `userName`: the person's email address.
    pub user_name: String,
    pub given_name: String,
    pub family_name: String,
}

/// One person as Okta says they should be in Postman.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredUser {
    pub okta_id: OktaUserId,
    pub attrs: UserAttrs,
    /// Whether the person should be an active Postman member (see `okta::entitlement`).
    pub active: bool,
    /// Why `active` is what it is, for explanations ("app user ACTIVE, Okta user SUSPENDED").
    pub reason: String,
}

/// The result of reading every user assigned to the Postman app in Okta.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OktaRead {
    pub users: BTreeMap<OktaUserId, DesiredUser>,
    /// Okta users that were listed but could not be mapped (for example no userName). They are
    /// never deactivated on account of this read, and are reported.
    pub skipped: BTreeMap<OktaUserId, String>,
    /// False when any page failed or the read is otherwise known to be incomplete. The planner
    /// computes no deactivations from an incomplete read.
    pub complete: bool,
    /// Why the read is incomplete, for the operator.
    pub incomplete_reason: Option<String>,
}

/// A member of the Postman team as its SCIM API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostmanUser {
    pub id: ScimUserId,
    pub attrs: UserAttrs,
    pub active: bool,
    pub external_id: Option<String>,
}

/// What the snapshot holds for one managed person: what we last pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedUser {
    pub okta_id: OktaUserId,
    pub scim_id: ScimUserId,
    pub attrs: UserAttrs,
    pub active: bool,
}

/// An Okta group to be pushed to Postman, with the Okta users that are its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGroup {
    pub okta_id: OktaGroupId,
    pub display_name: String,
    pub members: BTreeSet<OktaUserId>,
    /// False when a page of this group's members failed: no member removals for it this run.
    pub members_complete: bool,
}

/// A Postman SCIM group as its API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostmanGroup {
    pub id: ScimGroupId,
    pub display_name: String,
    pub members: BTreeSet<ScimUserId>,
}

/// What the snapshot holds for one pushed group: the Postman group linked to an Okta group, its
/// name as last pushed, and the Postman members we believe it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedGroup {
    pub okta_id: OktaGroupId,
    pub scim_id: ScimGroupId,
    pub display_name: String,
    pub members: BTreeSet<ScimUserId>,
}

/// Case-insensitive key used to match Okta users to existing Postman members by userName.
/// Postman's userName is an email address; email addresses are matched case-insensitively here
/// because Postman does not document how it normalises case (docs/postman-scim.md#username-case).
pub fn user_name_key(user_name: &str) -> String {
    user_name.trim().to_lowercase()
}
