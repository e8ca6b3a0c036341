//! Users, in the same shape as groups: the read is the Okta client's app-user read (one call,
//! in the engine), [`plan`] is pure, [`apply`] writes through the journal.

pub mod apply;
pub mod plan;
