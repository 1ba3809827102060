//! One writer per run folder.
//!
//! `run`, `resume` and `replay` hold an exclusive advisory lock (`flock`) on `<run>/.lock` for
//! as long as they may write the folder. The operating system drops the lock when the process
//! ends, however it ends, so a crash never leaves a stale lock behind; the pid and host written
//! into the file only name the holder in the message a second writer gets. Readers (`show`,
//! `report`, `runs`, `compare`, `export`, `replay --scores-only`) never take the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Why a run folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is being written by another archsmith process ({holder}); only one `run` or `resume` may write a run folder at a time. Wait for it to finish, or stop it first; `archsmith show {dir}` reads the run meanwhile"
    )]
    Held { dir: String, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive writer's lock on a run folder; released when dropped or when the process ends.
#[derive(Debug)]
pub struct RunLock {
    // Held for its lock only: closing the file releases it.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `dir` at once, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be writing its line right now; an empty read still refuses.
                let _ = file.read_to_string(&mut text);
                let holder = describe_holder(&text);
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let me = format!(
            "pid {} on host {}\n",
            std::process::id(),
            gethostname::gethostname().to_string_lossy()
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The holder as its lock file names it, made safe to print.
fn describe_holder(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "its pid is not recorded yet".into()
    } else {
        crate::text::visible(&line.chars().take(200).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_and_a_dropped_lock_frees_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("on host"),
            "{err}"
        );
        assert!(err.contains("only one `run` or `resume`"), "{err}");
        drop(first);
        let again = RunLock::acquire(dir.path()).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }

    #[test]
    fn a_missing_folder_is_an_io_error_naming_the_file() {
        let err = RunLock::acquire(Path::new("/nonexistent/run"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/run/.lock"), "{err}");
    }
}
