//! The simulators' own id types. They mirror the product's id newtypes (`model::OktaUserId`, ...)
//! in shape but are separate types: this crate must not depend on the product (the product's
//! `demo` depends on it), so a test comparing a simulator id with a product id compares strings
//! (`sim_id.as_str() == product_id.as_str()`).

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    /// A simulated Okta user id (`00u...`).
    OktaUserId
);
id_newtype!(
    /// A simulated Okta group id (`00g...`).
    OktaGroupId
);
id_newtype!(
    /// A simulated Postman SCIM user id (48 hex characters, as in Postman's examples).
    ScimUserId
);
id_newtype!(
    /// A simulated Postman SCIM group id.
    ScimGroupId
);
