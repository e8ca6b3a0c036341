//! Group push, in the same shape as users: [`read`] what the plan needs, [`plan`] purely,
//! [`apply`] through the journal.

pub mod apply;
pub mod plan;
pub mod read;
