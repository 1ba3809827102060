//! `archsmith task list|show`: the built-in tasks and the real-data formats.

use anyhow::Result;
use archsmith::exit::ExitStatus;
use archsmith::train::Task;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// The built-in tasks and the real-data formats.
    List,
    /// A task's data, input, classes, metric and default recipe.
    Show { name: String },
}

pub fn task(cmd: TaskCmd) -> Result<ExitStatus> {
    match cmd {
        TaskCmd::List => {
            for t in Task::list() {
                let input = t
                    .input
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "from data".into());
                let classes = t
                    .classes
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into());
                let short = t.description.split(':').next().unwrap_or("");
                println!("{:<32} {input:<9} {classes:>3} classes  {short}", t.name);
            }
            Ok(ExitStatus::Success)
        }
        TaskCmd::Show { name } => {
            print!("{}", Task::resolve(&name)?.describe());
            Ok(ExitStatus::Success)
        }
    }
}
