//! The exit codes of both binaries: `archsmith` and the training binary `archsmith-torch`,
//! which runs the training commands in its place. One enum for the two, so that a code means
//! the same whichever program exits with it; README.md's exit-code table documents it.

use std::process::ExitCode;

/// How a command ended, as its exit code tells a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the command did what it was asked.
    Success,
    /// 1: an input was judged and found wanting: a candidate is invalid (`validate`, `train`,
    /// `export`), or a replay differs from its record.
    Invalid,
    /// 2: an error, printed with a message naming what and where: bad arguments, a config
    /// that cannot work, a wrong path, a missing key; also a run that failed.
    Error,
    /// 3: training failed (`train`, `train-program`); the JSON result, which carries the
    /// reason, is still printed.
    TrainingFailed,
    /// 4: the run is paused: its executor (a Ray head) or its local model server stopped
    /// answering. What was recorded is kept; `archsmith resume DIR` continues once it is back.
    Paused,
    /// 130: interrupted by Ctrl-C, the code shells give a process that SIGINT ended (128 + 2).
    Interrupted,
}

impl ExitStatus {
    /// Every status, in the order of their codes.
    pub const ALL: [ExitStatus; 6] = [
        ExitStatus::Success,
        ExitStatus::Invalid,
        ExitStatus::Error,
        ExitStatus::TrainingFailed,
        ExitStatus::Paused,
        ExitStatus::Interrupted,
    ];

    /// The exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Invalid => 1,
            ExitStatus::Error => 2,
            ExitStatus::TrainingFailed => 3,
            ExitStatus::Paused => 4,
            ExitStatus::Interrupted => 130,
        }
    }

    /// The status a code stands for, when it is one of ours.
    pub fn from_code(code: i32) -> Option<ExitStatus> {
        ExitStatus::ALL
            .into_iter()
            .find(|s| i32::from(s.code()) == code)
    }

    /// Prints what a command line got wrong, or the help or version it asked for, and says
    /// how to exit: a usage error is an error; `--help` and `--version` succeed.
    pub fn of_usage(e: &clap::Error) -> ExitStatus {
        let _ = e.print();
        if e.use_stderr() {
            ExitStatus::Error
        } else {
            ExitStatus::Success
        }
    }

    /// Ends the process at once with this code, from where returning to `main` is not
    /// possible (a signal handler).
    pub fn exit(self) -> ! {
        std::process::exit(i32::from(self.code()))
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_read_back() {
        for s in ExitStatus::ALL {
            assert_eq!(ExitStatus::from_code(i32::from(s.code())), Some(s));
        }
        assert_eq!(ExitStatus::from_code(101), None);
    }

    /// The README's table is the documentation of the codes: one row a code, no other rows.
    #[test]
    fn the_readme_table_lists_every_code() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("<!-- exit-codes")
            .expect("the exit-codes marker");
        let end = readme
            .find("<!-- /exit-codes -->")
            .expect("the closing marker");
        let codes: Vec<u8> = readme[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
            .collect();
        let ours: Vec<u8> = ExitStatus::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, ours);
    }
}
