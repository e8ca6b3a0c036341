//! Thin entry point: parse the command line, run the command, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates (the state database with every member's email, its
    // -wal/-shm, the lock file, saved output) is private to the service user, whatever umask
    // the service manager or shell left us.
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-mode mask; it cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
    let cli = match okta_postman_sync::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                okta_postman_sync::app::EXIT_CONFIG
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(okta_postman_sync::app::EXIT_FAILED);
        }
    };
    let code = runtime.block_on(okta_postman_sync::app::run_cli(cli));
    // Do not wait for stray blocking tasks (a stuck DNS lookup) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}
