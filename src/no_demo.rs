//! `demo` in a build without the `demo` cargo feature (`cargo build --no-default-features`): such
//! a binary holds no simulator code, so the command only says so. This is the one place that
//! message lives; `lib.rs` picks this module or `demo.rs` by the feature.

use crate::app::EXIT_CONFIG;

/// Says that this build has no demo and how to get one; exits 2 like any other unusable
/// invocation.
pub async fn run_demo(_users: usize) -> u8 {
    eprintln!(
        "error: this build of okta-postman-sync has no demo: it was built without the `demo` \
         feature, so the simulators it needs are not in the binary. Rebuild with the default \
         features (`cargo build --release`) to run `okta-postman-sync demo`."
    );
    EXIT_CONFIG
}
