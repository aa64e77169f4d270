//! The plan of a command scenario: the user's program and what the
//! built-in server serves it.

use crate::scenario::Scenario;

/// Everything a command run needs besides its lab.
#[derive(Clone, Debug)]
pub struct CommandPlan {
    /// The program and its arguments, placeholders (`{server}`, `{url}`,
    /// `{output}`…) not yet filled.
    pub argv: Vec<String>,
    /// Bytes the built-in HTTP server serves at every path.
    pub bytes: u64,
    /// Its pacing, bytes per second.
    pub rate: Option<u64>,
    /// The command writes an `{output}` file, judged against what was
    /// served.
    pub writes_output: bool,
}

impl CommandPlan {
    /// The plan of `s`.
    pub fn of(s: &Scenario) -> CommandPlan {
        let argv = s.workload.command.clone();
        CommandPlan {
            writes_output: argv.iter().any(|a| a.contains("{output}")),
            argv,
            bytes: s.workload.bytes,
            rate: s.workload.rate,
        }
    }
}
