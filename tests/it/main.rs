//! The integration tests, as one test binary (ripgrep's `tests/tests.rs`, zero-to-production's
//! `tests/api/main.rs`): one module per area, and the shared harness in `common` compiled once
//! instead of once per file. Everything runs against the real library or the real binary
//! (`CARGO_BIN_EXE_okta-postman-sync`) and the simulators (`okta-postman-sync-sim`) on
//! 127.0.0.1, offline.
//!
//! All modules share one process: a test must not change process-wide state (environment,
//! current directory, umask, rlimits) in this process; it passes such settings to the child it
//! spawns instead. Pick one area with a filter: `cargo test --test it kill::`.

mod common;

mod apply;
mod bad_config;
mod bad_data;
mod cli;
mod config_examples;
mod daemon;
mod events;
mod faults;
mod fuzz;
mod groups;
mod history;
mod kill;
mod okta_oauth;
mod reconcile;
mod store_faults;
mod why;
