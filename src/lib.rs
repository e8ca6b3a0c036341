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
//! - [`groups`]: the pure group planner; [`groups_apply`]: its reads, executor and engine step.
//! - The simulators of Okta and Postman are the workspace crate `okta-postman-sync-sim`
//!   (`crates/sim/`): a dev-dependency, and behind the default-on `demo` feature for [`demo`].
//! - [`config`]: the TOML shape and its validation; secrets sources.
//! - [`store`]: SQLite snapshot, write-ahead journal, quarantine, run history, single-writer lock.
//! - [`plan`]: the pure planner and its safety guards.
//! - [`apply`]: executes a plan with the journal; [`engine`]: one run end to end.
//! - [`schedule`], [`daemon`], [`http`]: the long-running service and its endpoints.
//! - [`app`], [`cli`], [`check`], [`status`], [`demo`], [`output`], [`telemetry`]: the commands.

pub mod app;
pub mod apply;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
// Without the `demo` feature the simulators are not linked in; `demo` then answers with the
// stand-in in `no_demo.rs`, which says so, so the CLI and its dispatch are the same in both builds.
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(not(feature = "demo"))]
#[path = "no_demo.rs"]
pub mod demo;
pub mod engine;
pub mod groups;
pub mod groups_apply;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod okta;
pub mod output;
pub mod plan;
pub mod retry;
pub mod schedule;
pub mod scim;
pub mod status;
pub mod store;
pub mod telemetry;
