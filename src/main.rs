//! The `archsmith` binary: a thin shell over the library. Errors print their cause chain and
//! exit 2; commands that judge inputs (validate) exit 1 when an input is invalid.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
