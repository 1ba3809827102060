//! Worker mode: train the candidate of a [`JobSpec`] in this process and print its epochs and,
//! last, its result (`archsmith worker --job JSON` for one job, as a Ray job runs it;
//! `archsmith worker --serve` for a job a line on stdin, as local worker processes run it).
//!
//! A job is checked as a proposal is: the grammar parsed, the candidate parsed, hashed and
//! validated against the space for the task's input, before anything trains. A job that
//! cannot run (a grammar or task the worker cannot load, a candidate that does not validate)
//! gives a result with a `worker` failure saying why; retrying it would not help.

use crate::data::{Data, TaskData};
use crate::evaluate::evaluate_with;
use crate::trainer::TrainOptions;
use archsmith::exec::{epoch_line, job_failed, result_line, JobSpec, TaskSpec, PROTOCOL};
use archsmith::space::{parse_one, CheckOptions, Space};
use archsmith::train::{Epoch, Evaluation, Flow};
use std::io::{BufRead, Write};

/// Runs jobs, keeping the last task's data loaded for the next job.
#[derive(Default)]
pub struct Worker {
    /// The last job's grammar text and space, and its task and data: jobs of one run share them.
    space: Option<(String, Space)>,
    data: Option<(TaskSpec, Data)>,
}

impl Worker {
    pub fn new() -> Worker {
        Worker::default()
    }

    /// Runs one job, printing its epoch lines and its result line to `out`.
    pub fn run(&mut self, spec: &JobSpec, out: &mut dyn Write) -> std::io::Result<Evaluation> {
        let mut io_err = None;
        let r = match self.prepare(spec) {
            Err(message) => job_failed(message),
            Ok((node, analysis, device)) => {
                let (Some((_, space)), Some((_, data))) = (&self.space, &self.data) else {
                    return Err(std::io::Error::other(
                        "the job's space or data went missing",
                    ));
                };
                let opts = TrainOptions {
                    recipe: spec.recipe.clone(),
                    seed: spec.seed,
                    device,
                    max_params: spec.limits.max_params,
                    test: false,
                };
                let mut on_epoch = |e: &Epoch| {
                    if let Err(err) =
                        writeln!(out, "{}", epoch_line(spec.eval, e)).and_then(|_| out.flush())
                    {
                        io_err = Some(err);
                        return Flow::Stop;
                    }
                    if spec.promoted(e.epoch, e.valid_score) {
                        Flow::Continue
                    } else {
                        Flow::Stop
                    }
                };
                evaluate_with(
                    space.grammar.kind,
                    &node,
                    &analysis,
                    data,
                    &opts,
                    &spec.program,
                    spec.weights_to.as_deref(),
                    &mut on_epoch,
                )
            }
        };
        if let Some(e) = io_err {
            return Err(e);
        }
        writeln!(out, "{}", result_line(spec.eval, &r))?;
        out.flush()?;
        Ok(r)
    }

    /// Loads the space and the task's data (unless the last job had the same), validates the
    /// candidate and settles the device.
    fn prepare(
        &mut self,
        spec: &JobSpec,
    ) -> Result<
        (
            archsmith::space::Node,
            archsmith::space::Analysis,
            tch::Device,
        ),
        String,
    > {
        if spec.protocol != PROTOCOL {
            return Err(format!(
                "the job speaks protocol {}, this worker {} ({}); install the same archsmith on the workers as on the driver",
                spec.protocol,
                PROTOCOL,
                env!("CARGO_PKG_VERSION")
            ));
        }
        if self.space.as_ref().map(|(g, _)| g) != Some(&spec.grammar) {
            self.space = None;
            let space = Space::from_parts(&spec.grammar, &spec.space, Vec::new(), None)
                .map_err(|e| format!("the job's grammar ({}) does not load: {e}", spec.space))?;
            self.space = Some((spec.grammar.clone(), space));
        }
        if self.data.as_ref().map(|(t, _)| t) != Some(&spec.task) {
            self.data = None;
            let task = archsmith::run::config::task_from(&spec.task.name, spec.task.sizes)
                .map_err(|e| format!("task {}: {e}", spec.task.name))?;
            let data = task.load().map_err(|e| {
                format!(
                    "cannot load the data of task {} on this worker: {e}",
                    spec.task.name
                )
            })?;
            self.data = Some((spec.task.clone(), data));
        }
        let (Some((_, space)), Some((_, data))) = (&self.space, &self.data) else {
            return Err("the job's space or data did not load".into());
        };
        let lowered = parse_one(&spec.candidate).map_err(|errs| {
            format!(
                "the job's candidate does not parse: {}",
                errs.first().map(|e| e.message.as_str()).unwrap_or("?")
            )
        })?;
        let node = lowered.node;
        if node.hash_hex() != spec.hash {
            return Err(format!(
                "the job's candidate hashes to {}, not {} as the job says",
                node.hash_hex(),
                spec.hash
            ));
        }
        let opts = CheckOptions {
            limits: spec.limits,
            classes: Some(data.classes),
            infos: false,
            head: spec.recipe.head,
        };
        let analysis = space.check(&node, None, data.input, &opts).map_err(|d| {
            format!(
                "the job's candidate does not validate on this worker: {}",
                d.first().map(|d| d.to_string()).unwrap_or_default()
            )
        })?;
        let device = crate::device::parse_device(&spec.device)
            .map_err(|e| format!("device {}: {e}", spec.device))?;
        Ok((node, analysis, device))
    }
}

/// `archsmith worker --serve`: one job a line on `input`, epochs and results on `out`, until
/// `input` ends. A line that is not a job gets a result line with a `worker` failure.
pub fn serve(input: &mut dyn BufRead, out: &mut dyn Write) -> std::io::Result<()> {
    let mut w = Worker::new();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<JobSpec>(&line) {
            Ok(spec) => {
                w.run(&spec, out)?;
            }
            Err(e) => {
                let eval = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("eval").and_then(|e| e.as_u64()))
                    .unwrap_or(u64::MAX);
                let r = job_failed(format!("the job line is not a job: {e}"));
                writeln!(out, "{}", result_line(eval, &r))?;
                out.flush()?;
            }
        }
    }
}

/// Why a job given on the command line cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The text is not a job description (JSON of a [`JobSpec`]).
    #[error("the job is not a valid job description: {0}")]
    Invalid(#[source] serde_json::Error),
}

/// Parses a job given on the command line, naming what is wrong with it.
pub fn parse_job(text: &str) -> Result<JobSpec, JobError> {
    serde_json::from_str(text).map_err(JobError::Invalid)
}
