//! `archsmith-torch`: archsmith's training commands (`train`, `train-program`, `export`,
//! `worker`), which the `archsmith` binary forwards here so that it never loads libtorch
//! itself. Errors print their cause chain and exit 2; `train` exits 3 when training failed
//! (its JSON result, with the reason, is still printed) and 1 when the candidate is invalid.

use std::process::ExitCode;

fn main() -> ExitCode {
    match archsmith_torch::cli::run() {
        Ok(code) => code,
        Err(e) => {
            // The chain may quote what a user, a config or a model wrote.
            let chain = archsmith::text::error_chain(&e);
            eprintln!("error: {}", archsmith::text::for_terminal(&chain, 2000));
            ExitCode::from(2)
        }
    }
}
