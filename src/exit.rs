//! The process exit codes, documented in the README: the one list of them. A leaf: it imports
//! nothing of ours, so every layer may name an exit code without a circle. What maps to which
//! code is decided elsewhere (a run's outcome in `cmd`, an error in `cmd::CliError`).

use std::process::ExitCode;

/// How the process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Converged, or the command did what was asked.
    Ok = 0,
    /// A run failed or was partial; the store or an API could not be used.
    Failed = 1,
    /// The config, a secret, or the command line is wrong: fix it before trying again.
    Config = 2,
    /// A safety guard refused the plan; nothing was changed.
    Refused = 3,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_ones() {
        assert_eq!(
            [Exit::Ok, Exit::Failed, Exit::Config, Exit::Refused].map(Exit::code),
            [0, 1, 2, 3]
        );
    }
}
