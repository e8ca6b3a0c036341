//! okta-postman-sync keeps a Postman team's membership in step with the people assigned to the
//! Postman app in Okta, through Postman's SCIM 2.0 API.
//!
//! Layout (read, plan, apply are separate steps; the plans are pure functions):
//! - [`model`]: domain types shared by every layer: id newtypes, operation kinds, subjects.
//! - `limits`: capped body reads and clamped durations from untrusted answers (both clients).
//! - [`retry`]: the one retry loop (backoff + `Retry-After`) both clients use.
//! - [`okta`]: hand-written Okta Management API client (paging, rate limits, OAuth, mapping).
//! - [`scim`]: Postman SCIM client (pacing, retries, SCIM errors, wire types).
//! - [`store`]: the SQLite state behind a cheap-to-clone [`store::StoreHandle`]: schema,
//!   snapshot, journal, failures, runs, the single-writer lock.
//! - [`sync`]: the engine. [`sync::users`] and [`sync::groups`] side by side, each with its
//!   read, pure plan and apply step; [`sync::journal`], the one journalled write both use;
//!   [`sync::guard`], the guards over the whole plan; [`sync::outcome`], the typed report.
//! - [`config`]: the TOML shape, secret sources, and the validated [`config::Config`] holding
//!   the real types (mapping, auth scheme, schedule, client settings).
//! - [`bootstrap`]: assembles the program from the config (secrets, clients, store, engine).
//! - [`daemon`]: the long-running service: [`daemon::schedule`] and [`daemon::http`].
//! - [`events`]: near-real-time sync: System Log polling, the Event Hook receiver, the event
//!   queue worker feeding [`sync::Engine::run_targeted`].
//! - [`status`]: what the state database knows, read for `status` and `/status`.
//! - [`cli`], [`cmd`]: the command line and one file per command; [`exit`]: the exit codes (a
//!   leaf).
//! - [`metrics`], `output`, `telemetry`: Prometheus registry, text renderings, logging.
//!
//! The simulators of Okta and Postman are the workspace crate `okta-postman-sync-sim`
//! (`crates/sim/`): a dev-dependency of the tests, and behind the default-on `demo` feature for
//! the `demo` command. `cargo build --release --no-default-features` leaves them out.

pub mod bootstrap;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod events;
pub mod exit;
pub(crate) mod limits;
pub mod metrics;
pub mod model;
pub mod okta;
pub(crate) mod output;
pub mod retry;
pub mod scim;
pub mod status;
pub mod store;
pub mod sync;
pub(crate) mod telemetry;
