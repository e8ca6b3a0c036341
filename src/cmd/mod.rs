//! The commands behind the CLI, one file each (mini-redis's `cmd/`): each takes its parsed
//! arguments, assembles what it needs through [`crate::bootstrap`], calls the library, prints its
//! result to stdout and returns `Result<Exit, CliError>`. Adding a command is one file here and
//! one arm in [`dispatch`]. `main` prints a [`CliError`] and maps the exit code, once.
//!
//! Commands must not call `std::process::exit` or print their own errors; the library below
//! (bootstrap, daemon, engine) must not import anything from here.

pub mod apply;
pub mod check;
// Without the `demo` feature the simulators are not linked in; `demo` then answers with the
// stand-in in `no_demo.rs`, which says so, so the CLI and its dispatch are the same in both builds.
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(not(feature = "demo"))]
#[path = "no_demo.rs"]
pub mod demo;
pub mod history;
pub mod progress;
pub mod reconcile;
pub mod run;
pub mod status;
pub mod why;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::bootstrap::BootstrapError;
use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::exit::Exit;
use crate::sync::{Outcome, RunOptions};

/// A command that could not do its job: what went wrong (and what to do), and the exit code it
/// means. `main` prints it as `<label>: <message>` on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{label}: {message}")]
pub struct CliError {
    label: &'static str,
    message: String,
    exit: Exit,
}

impl CliError {
    pub fn new(exit: Exit, message: impl fmt::Display) -> Self {
        Self {
            label: "error",
            message: message.to_string(),
            exit,
        }
    }

    /// The operator must fix the config, a secret or the command line (exit 2).
    pub fn config(message: impl fmt::Display) -> Self {
        Self::new(Exit::Config, message)
    }

    /// The command failed for a reason outside the config (exit 1).
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::new(Exit::Failed, message)
    }

    /// The same error under another label than `error` (the demo says `demo failed`).
    pub fn labelled(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    pub fn exit(&self) -> Exit {
        self.exit
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        Self::config(e)
    }
}

impl From<BootstrapError> for CliError {
    fn from(e: BootstrapError) -> Self {
        match e {
            // These messages already carry their cause (and `source` would repeat it).
            BootstrapError::Config(e) => Self::config(e),
            BootstrapError::Store(e) => Self::failed(e),
            // A client that cannot start: the whole cause chain on one line.
            e @ (BootstrapError::Okta(_) | BootstrapError::Scim(_)) => {
                Self::failed(format!("{:#}", anyhow::Error::from(e)))
            }
        }
    }
}

/// The documented exit code of a run: 0 converged, 1 failed or partial, 3 refused by a guard.
impl From<Outcome> for Exit {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ok => Exit::Ok,
            Outcome::Partial | Outcome::Failed => Exit::Failed,
            Outcome::Refused => Exit::Refused,
        }
    }
}

/// Runs the parsed command line.
pub async fn dispatch(cli: Cli) -> Result<Exit, CliError> {
    match cli.command {
        Command::Reconcile {
            dry_run,
            full,
            output,
            allow_deactivations,
            save_plan,
        } => {
            let opts = RunOptions {
                dry_run,
                full,
                allow_deactivations,
                save_plan: save_plan.is_some(),
                expected: None,
                ..RunOptions::default()
            };
            reconcile::run(&cli.config, &opts, output, save_plan.as_deref()).await
        }
        Command::Apply {
            file,
            max_age,
            output,
        } => apply::run(&cli.config, &file, max_age, output).await,
        Command::Run => run::run(&cli.config).await,
        Command::Demo { users } => demo::run(users).await,
        Command::Check { output } => check::run(&cli.config, output).await,
        Command::Status { output } => status::run(&cli.config, output).await,
        Command::History {
            user,
            since,
            op,
            output,
        } => history::run(&cli.config, user, since, op, output).await,
        Command::Why { user, live, output } => why::run(&cli.config, &user, live, output).await,
    }
}

/// Loads and validates the config, then starts logging at its level (the commands that log).
fn load_config(path: &Path) -> Result<Arc<Config>, CliError> {
    let config = Config::load(path)?;
    crate::telemetry::init(&config.log_level, config.log_format);
    Ok(Arc::new(config))
}

/// Prints a command's result as JSON on stdout. An encoding failure is reported, not fatal: the
/// exit code still says how the command went.
fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the output as JSON: {e}"),
    }
}

/// Cancels the token on SIGINT or SIGTERM.
fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested: finishing the operations in flight");
        cancel.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_outcome_maps_to_its_documented_exit_code() {
        for (outcome, exit) in [
            (Outcome::Ok, Exit::Ok),
            (Outcome::Partial, Exit::Failed),
            (Outcome::Failed, Exit::Failed),
            (Outcome::Refused, Exit::Refused),
        ] {
            assert_eq!(Exit::from(outcome), exit);
        }
    }

    #[test]
    fn a_missing_secret_is_a_config_error_and_a_store_error_is_a_failure() {
        let e = CliError::from(BootstrapError::Config(ConfigError::MissingSecret {
            what: "the Postman SCIM API key",
            fix: "set it".into(),
        }));
        assert_eq!(e.exit(), Exit::Config);
        assert!(e.to_string().starts_with("error: the Postman SCIM API key"));
    }
}
