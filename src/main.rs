//! Thin entry point: parse the command line, run the command, print its error and map the result
//! to an exit code, in one place (ripgrep's `main.rs`).

use std::process::ExitCode;

use clap::Parser;
use okta_postman_sync::cli::Cli;
use okta_postman_sync::exit::Exit;

fn main() -> ExitCode {
    // Everything this process creates (the state database with every member's email, its
    // -wal/-shm, the lock file, saved output) is private to the service user, whatever umask
    // the service manager or shell left us.
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-mode mask; it cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let exit = if e.use_stderr() {
                Exit::Config
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return exit.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let exit = match runtime.block_on(okta_postman_sync::cmd::dispatch(cli)) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("{e}");
            e.exit()
        }
    };
    // Do not wait for stray blocking tasks (a stuck DNS lookup) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    exit.into()
}
