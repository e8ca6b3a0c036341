//! okta-postman-sync keeps a Postman team's membership in step with the people assigned to the
//! Postman app in Okta, through Postman's SCIM 2.0 API.
//!
//! Layout (fetch, plan, apply are separate steps; the plan is a pure function):
//! - [`model`]: domain types and id newtypes shared by every layer.
//! - [`metrics`]: the Prometheus registry.
//! - [`retry`]: the one retry loop (backoff + `Retry-After`) both clients use.
//! - [`limits`]: capped body reads and clamped durations from untrusted answers (both clients).
//! - [`okta`]: hand-written Okta Management API client (paging, rate limits, wire types).
//! - [`scim`]: Postman SCIM client (pacing, retries, SCIM errors, wire types).
//! - The simulators of Okta and Postman are the workspace crate `okta-postman-sync-sim`
//!   (`crates/sim/`): a dev-dependency, and behind the default-on `demo` feature for `demo`.
//! - [`config`]: the TOML shape ([`config`]'s `raw`), secret sources, and the validated
//!   [`config::Config`] holding the real types (mapping, auth scheme, schedule, client settings).
//! - [`store`]: SQLite snapshot, write-ahead journal, quarantine, run history, single-writer lock.
//! - [`sync`]: one run end to end: [`sync::users`] and [`sync::groups`] side by side, each a
//!   pure `plan` and an `apply` step, through one journalled write ([`sync::journal`]), the
//!   guards over the whole plan ([`sync::guard`]) and the typed report ([`sync::outcome`]).
//! - [`status`]: what the state database knows, read once for `status` and `/status`.
//! - [`daemon`]: the long-running service: [`daemon::schedule`] and [`daemon::http`].
//! - [`bootstrap`]: assembles the program from the config (secrets, clients, store, engine).
//! - [`cli`], [`cmd`]: the command line and one file per command; [`exit`]: the exit codes.
//! - [`output`], [`telemetry`]: text renderings; logging and systemd notifications.

pub mod bootstrap;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod okta;
pub mod output;
pub mod retry;
pub mod scim;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
