//! Command-line interface (clap derive). Parsing only: no behaviour lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "okta-postman-sync",
    version,
    about = "Keeps a Postman team's membership in step with the people assigned to the Postman app in Okta",
    long_about = None
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "OKTA_POSTMAN_SYNC_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// `history --output`: `jsonl` is one JSON object per line, for a SIEM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    #[default]
    Text,
    Json,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make Postman match Okta once, then exit (0 converged, 1 failed/partial, 2 config error, 3 refused by a guard).
    Reconcile {
        /// Compute and print the plan; change nothing anywhere.
        #[arg(long)]
        dry_run: bool,
        /// Also re-read every Postman member and repair drift (the first run is always full).
        #[arg(long)]
        full: bool,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        /// Allow up to N deactivations in this run, above `[sync] max_deactivations`.
        #[arg(long, value_name = "N")]
        allow_deactivations: Option<usize>,
        /// With --dry-run: also write the plan to FILE (JSON, mode 0600) for review and `apply FILE`.
        #[arg(long, value_name = "FILE", requires = "dry_run")]
        save_plan: Option<PathBuf>,
    },
    /// Carry out a plan saved by `reconcile --dry-run --save-plan FILE`, only if a fresh plan holds exactly its operations (3 if anything moved).
    Apply {
        /// The saved plan.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Refuse a plan older than this (e.g. 30m, 1h, 2h30m).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Run as a daemon: reconcile on the `[sync] schedule`, serve /healthz /readyz /metrics /status.
    Run,
    /// Test the API credentials of both sides without writing anything.
    Check {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show what the state database knows: managed users, failures, the last runs.
    Status {
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// The audit trail: every Postman write and adoption, when, by which run, and why (read-only).
    History {
        /// Only this person: a userName (any case), an Okta user id or a Postman SCIM id.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only entries since this long ago ("7d", "12h") or this RFC 3339 time.
        #[arg(long, value_name = "DURATION|RFC3339")]
        since: Option<String>,
        /// Only this operation (create, update, deactivate, reactivate, adopt, group_create, ...).
        #[arg(long, value_name = "KIND")]
        op: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: HistoryFormat,
    },
    /// Explain why a person has, or lacks, Postman access, and what the next run would do (read-only).
    Why {
        /// A userName (any case), an Okta user id or a Postman SCIM id.
        user: String,
        /// Also read the Postman account and call out differences from the snapshot.
        #[arg(long)]
        live: bool,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// See it work with no accounts: simulated Okta and Postman on 127.0.0.1, the real engine.
    Demo {
        /// Number of people in the simulated Okta org.
        #[arg(long, default_value_t = 300)]
        users: usize,
    },
}
