//! `demo` in a build without the `demo` cargo feature (`cargo build --no-default-features`): such
//! a binary holds no simulator code, so the command only says so. This is the one place that
//! message lives; `cmd/mod.rs` picks this module or `demo.rs` by the feature.

use super::CliError;
use crate::exit::Exit;

/// Says that this build has no demo and how to get one; exits 2 like any other unusable
/// invocation.
pub async fn run(_users: usize) -> Result<Exit, CliError> {
    Err(CliError::config(
        "this build of okta-postman-sync has no demo: it was built without the `demo` feature, \
         so the simulators it needs are not in the binary. Rebuild with the default features \
         (`cargo build --release`) to run `okta-postman-sync demo`.",
    ))
}
