//! `status`: prints what the state database knows ([`crate::status`]), read without writing and
//! without any API call. No state database yet is not an error: it says how to start (exit 0).

use std::path::Path;

use super::{print_json, CliError};
use crate::cli::OutputFormat;
use crate::config::Config;
use crate::exit::Exit;
use crate::store::Store;

/// How many runs the command lists.
const RUNS: usize = 10;

pub async fn run(config_path: &Path, output: OutputFormat) -> Result<Exit, CliError> {
    // No logging set up: the command makes no call worth a log line, and stdout is its output.
    let config = Config::load(config_path)?;
    let Some(store) = Store::open_read_only(&config.sync.state_path).map_err(CliError::failed)?
    else {
        eprintln!(
            "No state database at {} yet: nothing has been reconciled. Run `okta-postman-sync reconcile --dry-run` to see the first plan.",
            config.sync.state_path.display()
        );
        return Ok(Exit::Ok);
    };
    let report = crate::status::collect(&store, RUNS).map_err(CliError::failed)?;
    match output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print!("{}", crate::status::render(&report)),
    }
    Ok(Exit::Ok)
}
