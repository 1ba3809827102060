//! The `archsmith` binary: a thin shell over the library. Errors print their cause chain and
//! exit 2; commands that judge inputs (validate, train) exit 1 when an input is invalid;
//! `train` exits 3 when training failed (its JSON result, with the reason, is still printed).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            // The chain may quote what a user, a config or a model wrote.
            let chain = archsmith::text::error_chain(&e);
            eprintln!("error: {}", archsmith::text::for_terminal(&chain, 2000));
            ExitCode::from(2)
        }
    }
}
