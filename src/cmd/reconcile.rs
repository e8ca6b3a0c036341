//! `reconcile`: make Postman match Okta once, print the report (text or JSON) and exit with the
//! run's outcome (0 converged, 1 failed or partial, 3 refused by a guard). A dry run opens the
//! store read-only and changes nothing anywhere. A long run (the first provisioning of thousands
//! of people takes hours at Postman's write limit) shows its progress on stderr
//! ([`super::progress`]). This command must not decide anything about the run itself.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::progress::RunProgress;
use super::{cancel_on_signals, load_config, print_json, CliError};
use crate::bootstrap;
use crate::cli::OutputFormat;
use crate::exit::Exit;
use crate::sync::RunOptions;

pub async fn run(
    config_path: &Path,
    opts: &RunOptions,
    output: OutputFormat,
) -> Result<Exit, CliError> {
    let config = load_config(config_path)?;
    let app = bootstrap::assemble(config, !opts.dry_run)?;
    let cancel = CancellationToken::new();
    cancel_on_signals(cancel.clone());
    let progress = RunProgress::start();
    let report = app.engine.run(opts, &cancel, Some(progress.sink())).await;
    progress.finish();
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print!("{}", crate::output::render_run(&report)),
    }
    Ok(Exit::from(report.outcome))
}
