//! `reconcile`: make Postman match Okta once, print the report (text or JSON) and exit with the
//! run's outcome (0 converged, 1 failed or partial, 3 refused by a guard). A dry run opens the
//! store read-only and changes nothing anywhere. A long run (the first provisioning of thousands
//! of people takes hours at Postman's write limit) shows its progress on stderr
//! ([`super::progress`]). With `--save-plan FILE` a clean dry run also writes its plan for
//! `apply` (see [`crate::sync::saved`]). This command must not decide anything about the run
//! itself.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::progress::RunProgress;
use super::{cancel_on_signals, load_config, print_json, CliError};
use crate::bootstrap;
use crate::cli::OutputFormat;
use crate::exit::Exit;
use crate::sync::{saved, Outcome, RunOptions};

pub async fn run(
    config_path: &Path,
    opts: &RunOptions,
    output: OutputFormat,
    save_plan: Option<&Path>,
) -> Result<Exit, CliError> {
    let config = load_config(config_path)?;
    let app = bootstrap::assemble(config, !opts.dry_run)?;
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let progress = RunProgress::start();
    let mut report = app.engine.run(opts, &cancel, Some(progress.sink())).await;
    progress.finish();
    // The plan is saved before the report is printed, so the report can name it; a plan that
    // is not saved is explained after the report, which shows why.
    let not_saved = match (save_plan, report.saved_plan.take()) {
        (Some(path), Some(plan)) if report.outcome == Outcome::Ok => {
            saved::write_private(path, &plan.to_file_text()).map_err(|e| match e {
                saved::SaveError::NotRegular { .. } => CliError::config(e),
                saved::SaveError::Io { .. } => CliError::failed(e),
            })?;
            report.plan_id = Some(plan.plan_id.clone());
            eprintln!(
                "Saved plan {} ({} operations) to {}. Review it, then run `okta-postman-sync apply {}` \
                 within the --max-age of apply (default 1h).",
                plan.plan_id,
                plan.operations.len(),
                path.display(),
                path.display()
            );
            None
        }
        (Some(path), _) => Some(format!(
            "no plan was saved to {}: {}",
            path.display(),
            match report.outcome {
                Outcome::Refused => "a safety guard refused this plan (see REFUSED above). If you reviewed \
                     the list and it is intended, add --allow-deactivations N to approve exactly this plan",
                _ => "the dry run did not complete cleanly (see Errors above), and a plan computed from \
                     an incomplete read cannot be applied as reviewed. Fix the cause and try again",
            }
        )),
        (None, _) => None,
    };
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print!("{}", crate::output::render_run(&report)),
    }
    if let Some(msg) = not_saved {
        eprintln!("error: {msg}");
        // A clean dry run that still saved nothing is a failure of what was asked.
        if report.outcome == Outcome::Ok {
            return Ok(Exit::Failed);
        }
    }
    Ok(Exit::from(report.outcome))
}
