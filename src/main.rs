//! The `archsmith` binary: a thin shell over the library. Every exit code comes from
//! `archsmith::exit::ExitStatus`: an error prints its cause chain and exits 2; the commands
//! say how else they ended (an invalid candidate, a failed training, a paused or interrupted
//! run).

mod cli;

use archsmith::exit::ExitStatus;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(status) => status.into(),
        Err(e) => {
            // The chain may quote what a user, a config or a model wrote.
            let chain = archsmith::text::error_chain(&e);
            eprintln!("error: {}", archsmith::text::for_terminal(&chain, 2000));
            ExitStatus::Error.into()
        }
    }
}
