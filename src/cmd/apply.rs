//! `apply FILE`: carry out a plan saved by `reconcile --dry-run --save-plan FILE`, and only that
//! plan. This command checks what the file alone can tell — its checksum (exit 2 when it was
//! altered or damaged), its age against `--max-age`, and that it was made for this state file
//! and Okta app (exit 3 otherwise) — then runs the engine with the saved plan as the expected
//! one: the engine re-reads, re-plans in the same mode, and refuses before any write unless the
//! fresh plan holds exactly the saved operations ([`crate::sync::saved::compare`]). The saved
//! `--allow-deactivations` is the reviewer's approval and applies to this plan only. This
//! command must not decide anything about the run itself.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::progress::RunProgress;
use super::{cancel_on_signals, load_config, print_json, CliError};
use crate::bootstrap;
use crate::cli::OutputFormat;
use crate::config::Config;
use crate::exit::Exit;
use crate::sync::saved::{self, SavedPlan, Target};
use crate::sync::RunOptions;

/// A plan dated this far in the future is still accepted (clocks of two hosts disagree a little).
const CLOCK_SKEW: Duration = Duration::from_secs(300);

pub async fn run(
    config_path: &Path,
    file: &Path,
    max_age: Duration,
    output: OutputFormat,
) -> Result<Exit, CliError> {
    let config = load_config(config_path)?;
    let plan = load(file)?;
    check_binding(&plan, &config, file)?;
    check_age(&plan, max_age, file)?;

    let app = bootstrap::assemble(Arc::clone(&config), true)?;
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let opts = RunOptions {
        dry_run: false,
        full: plan.full,
        allow_deactivations: plan.policy.allow_deactivations,
        save_plan: false,
        expected: Some(Arc::new(plan.clone())),
        trigger: crate::store::Trigger::new(format!("apply {}", plan.plan_id)),
        // A one-shot command: each request keeps the full retry policy.
        retry_budget: None,
    };
    let progress = RunProgress::start();
    let report = app.engine.run(&opts, &cancel, Some(progress.sink())).await;
    progress.finish();
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => {
            println!(
                "Saved plan {} (made {}, {} operations)",
                plan.plan_id,
                plan.created_at.to_rfc3339(),
                plan.operations.len()
            );
            print!("{}", crate::output::render_run(&report));
        }
    }
    Ok(Exit::from(report.outcome))
}

/// Reads the file and verifies its checksum: a damaged or edited plan is the operator's to
/// replace (exit 2).
fn load(file: &Path) -> Result<SavedPlan, CliError> {
    let bytes = saved::read_file(file).map_err(|e| {
        CliError::config(format!(
            "cannot read the saved plan {}: {e}. Check the path, or make a plan with \
             `reconcile --dry-run --save-plan FILE`",
            file.display()
        ))
    })?;
    SavedPlan::from_file_text(&bytes).map_err(|e| {
        CliError::config(format!(
            "the saved plan {} cannot be applied: {e}. Make a fresh plan with \
             `reconcile --dry-run --save-plan FILE` and review it again",
            file.display()
        ))
    })
}

fn refused(message: String) -> CliError {
    CliError::new(Exit::Refused, message).labelled("refused")
}

/// The plan must be for the state file and the Okta app this config names: another one's
/// operations mean nothing here (exit 3).
fn check_binding(plan: &SavedPlan, config: &Config, file: &Path) -> Result<(), CliError> {
    let state = Target::resolve_state_path(&config.sync.state_path);
    if plan.state_path != state {
        return Err(refused(format!(
            "the saved plan {} ({}) was made for the state file {}, but this config uses {}. \
             Nothing was changed. Apply it with the config it was made with, or make a fresh plan \
             with this one",
            plan.plan_id,
            file.display(),
            plan.state_path,
            state
        )));
    }
    let (org, app) = (config.okta.org_url.to_string(), &config.okta.app_id);
    if plan.okta_org_url != org || &plan.app_id != app {
        return Err(refused(format!(
            "the saved plan {} ({}) was made for the Okta app {} at {}, but this config names \
             app {} at {}. Nothing was changed. Apply it with the config it was made with, or make \
             a fresh plan with this one",
            plan.plan_id,
            file.display(),
            plan.app_id,
            plan.okta_org_url,
            app,
            org
        )));
    }
    Ok(())
}

/// A plan older than `--max-age` describes a world that has probably moved (exit 3).
fn check_age(plan: &SavedPlan, max_age: Duration, file: &Path) -> Result<(), CliError> {
    let now = Utc::now();
    let age = now.signed_duration_since(plan.created_at);
    if age < -chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default() {
        return Err(refused(format!(
            "the saved plan {} ({}) is dated {}, in the future. Nothing was changed. Check the \
             clocks of this host and the one that made the plan, then make a fresh plan",
            plan.plan_id,
            file.display(),
            plan.created_at.to_rfc3339()
        )));
    }
    let age = age.to_std().unwrap_or_default();
    if age > max_age {
        return Err(refused(format!(
            "the saved plan {} ({}) was made {} ago, more than --max-age {}. Nothing was changed. \
             Make a fresh plan with `reconcile --dry-run --save-plan FILE`, review it, and apply \
             that (or pass a larger --max-age if this plan is still what you reviewed)",
            plan.plan_id,
            file.display(),
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_age)
        )));
    }
    Ok(())
}
