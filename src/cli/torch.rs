//! The commands that train (`train`, `train-program`, `export`, `worker`) belong to the
//! training binary, `archsmith-torch`, which links libtorch; this binary does not, so that
//! every other command starts at once. They are forwarded with their arguments unchanged: on
//! Unix the training binary replaces this process, so exit codes, signals and standard streams
//! are its own.

use anyhow::Result;
use archsmith::exit::ExitStatus;
use clap::Args;

/// A training command's arguments, handed on unparsed (`--help` included).
#[derive(Args, Debug)]
pub struct Passthrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// Runs `archsmith-torch COMMAND ARGS...` in place of this process.
pub fn forward(command: &str, a: Passthrough) -> Result<ExitStatus> {
    let program = archsmith::exec::torch_program()?;
    let mut cmd = std::process::Command::new(&program);
    cmd.arg(command).args(&a.args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        anyhow::bail!("cannot run {} ({e})", program.display());
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .map_err(|e| anyhow::anyhow!("cannot run {} ({e})", program.display()))?;
        // The training binary exits with the same statuses; anything else (a crash) is an
        // error.
        Ok(status
            .code()
            .and_then(ExitStatus::from_code)
            .unwrap_or(ExitStatus::Error))
    }
}
