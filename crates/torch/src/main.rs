//! `archsmith-torch`: archsmith's training commands (`train`, `train-program`, `export`,
//! `worker`), which the `archsmith` binary forwards here so that it never loads libtorch
//! itself. Its exit codes are `archsmith`'s (`archsmith::exit::ExitStatus`): errors print
//! their cause chain and exit 2; `train` and `train-program` exit 3 when training failed
//! (the JSON result, with the reason, is still printed); `train` and `export` exit 1 when the
//! candidate is invalid.

use archsmith::exit::ExitStatus;
use std::process::ExitCode;

fn main() -> ExitCode {
    match archsmith_torch::cli::run() {
        Ok(status) => status.into(),
        Err(e) => {
            // The chain may quote what a user, a config or a model wrote.
            let chain = archsmith::text::error_chain(&e);
            eprintln!("error: {}", archsmith::text::for_terminal(&chain, 2000));
            ExitStatus::Error.into()
        }
    }
}
