//! Command-line parsing and the commands. No logic a library user would need lives here: each
//! command reads its inputs, calls the library, and prints.

use anyhow::{bail, Result};
use archsmith::exit::ExitStatus;
use archsmith::space::{CheckOptions, Diagnostic, Head, Limits, Node, Shape, Space};
use clap::{Args, Parser, Subcommand};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::Write;

mod bench;
mod prompt;
mod report;
mod run;
mod task;
mod torch;

/// archsmith: synthesise neural architectures and tensor programs with a language model in
/// the loop.
#[derive(Parser, Debug)]
#[command(name = "archsmith", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the built-in search spaces or show one.
    #[command(subcommand)]
    Space(SpaceCmd),
    /// Draw random candidates from a space's grammar, one a line.
    Sample(SampleArgs),
    /// Check candidates against a space: syntax, grammar, shapes, limits.
    Validate(ValidateArgs),
    /// Mutate candidates: redraw one subtree of each, keeping it valid.
    Mutate(MutateArgs),
    /// Cross two candidates: replace a subtree of the first by a compatible one of the second.
    Crossover(CrossoverArgs),
    /// Show what the language model is asked: render a step's prompt without sending it.
    #[command(subcommand)]
    Prompt(prompt::PromptCmd),
    /// Score an activation function or an update rule by training a reference network with
    /// it; prints the result as JSON.
    #[command(disable_help_flag = true)]
    TrainProgram(torch::Passthrough),
    /// Train one candidate on a task and print the result as JSON.
    #[command(disable_help_flag = true)]
    Train(torch::Passthrough),
    /// List the tasks or show one.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// Run a search: the built-in default experiment, or one from --config, with overrides.
    Run(run::RunArgs),
    /// Continue a run from its journal after a crash, a kill or a raised budget.
    Resume(run::ResumeArgs),
    /// Run a recorded run again, answering model calls from its llm.jsonl, and compare.
    Replay(run::ReplayArgs),
    /// List the runs in a folder: strategy, evaluations, best score, cost, status.
    Runs(run::RunsArgs),
    /// A run's summary and its best candidates.
    Show(run::ShowArgs),
    /// Export a run's best candidate (or one named), or a candidate file, as a PyTorch module
    /// with its weights (safetensors), as JSON, or as tch weights.
    #[command(disable_help_flag = true)]
    Export(torch::Passthrough),
    /// Write a run's report: one self-contained HTML file with plots and tables.
    Report(report::ReportArgs),
    /// Compare runs: best-so-far by strategy over seeds, improvement over random; HTML and CSV.
    Compare(report::CompareArgs),
    /// Measure strategies on NAS-Bench-Graph: strategies x seeds x tasks, looked up in
    /// parallel; writes one table (Markdown, CSV, JSON) and the HTML comparison.
    Bench(bench::BenchArgs),
    /// Train jobs for an executor: one given inline (as a Ray job runs it), or a job a line on
    /// stdin (as local workers run it). Prints epoch lines and, last, the result line.
    #[command(disable_help_flag = true)]
    Worker(torch::Passthrough),
}

#[derive(Subcommand, Debug)]
pub enum SpaceCmd {
    /// The built-in spaces, with their descriptions.
    List,
    /// A space's grammar, its operations and their shape rules, in words.
    Show {
        /// A built-in space name or a path to a .grammar file or space folder.
        name: String,
        /// Print the grammar file as written instead.
        #[arg(long)]
        source: bool,
    },
    /// Compile a space's grammar into a grammar for constrained decoding: GBNF for llama.cpp
    /// (the `grammar` field of a request) or the Lark dialect of vLLM's structured outputs.
    /// It fixes the candidates' syntax, names, arities, argument values and nesting depth;
    /// shapes, modes and resource limits stay with the validator.
    Export(GrammarExportArgs),
}

/// `space export`: what to compile and how.
#[derive(Args, Debug)]
pub struct GrammarExportArgs {
    /// A built-in space name or a path to a .grammar file or space folder.
    pub name: String,
    /// gbnf (llama.cpp) or lark (vLLM `structured_outputs.grammar`, llguidance's Lark).
    #[arg(long, value_enum, default_value = "gbnf")]
    pub format: archsmith::llm::GrammarFormat,
    /// Deepest nesting of forms allowed (default: the space's max_depth, which accepts every
    /// candidate the space's sampler draws).
    #[arg(long)]
    pub depth: Option<usize>,
    /// The whole reply the propose prompt asks for: a PLAN line, then k CANDIDATE and
    /// PREDICTED lines (the default).
    #[arg(long, conflicts_with = "candidate_only")]
    pub reply: bool,
    /// One bare candidate, without the reply around it.
    #[arg(long)]
    pub candidate_only: bool,
    /// Number of candidates in the reply.
    #[arg(short, default_value_t = 1)]
    pub k: usize,
    /// Leave out the PREDICTED lines (the repair prompt's reply).
    #[arg(long)]
    pub no_predicted: bool,
    /// Print the rule count, size and time to export on stderr.
    #[arg(long)]
    pub stats: bool,
}

fn export_grammar(a: GrammarExportArgs) -> Result<ExitStatus> {
    use archsmith::space::cfg::{compile, CfgFormat, CfgOptions, ReplyShape};
    let s = Space::load(&a.name)?;
    let format = CfgFormat::from(a.format);
    let reply = (!a.candidate_only).then(|| ReplyShape {
        predicted: !a.no_predicted,
        ..ReplyShape::propose(a.k)
    });
    let opts = CfgOptions {
        depth: a.depth,
        reply,
    };
    let start = std::time::Instant::now();
    let cfg = compile(&s.grammar, &opts)?;
    let text = cfg.render(format);
    let took = start.elapsed();
    print!("{text}");
    if a.stats {
        eprintln!(
            "{}: {} rules, {} bytes, exported in {:.1} ms",
            s.name(),
            cfg.stats(format).rules,
            text.len(),
            took.as_secs_f64() * 1e3
        );
    }
    Ok(ExitStatus::Success)
}

/// Which space and input every candidate command needs.
#[derive(Args, Debug)]
pub struct SpaceArgs {
    /// A built-in space (einspace, nb201, mlp) or a path to a .grammar file or space folder.
    #[arg(long, default_value = "einspace")]
    pub space: String,
    /// The input shape after the batch dimension, e.g. 3x32x32, 64x16 or 784.
    #[arg(long, default_value = "3x32x32")]
    pub input: Shape,
    /// Number of classes of the task, to count the head's parameters.
    #[arg(long)]
    pub classes: Option<u64>,
    /// How the head reads a sequence, for its parameters (a recipe's `head`).
    #[arg(long, value_enum, default_value_t = Head::Positions)]
    pub head: Head,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Largest number of parameters a valid candidate may have.
    #[arg(long, default_value_t = Limits::default().max_params)]
    pub max_params: u64,
    /// Largest forward FLOPs for one example.
    #[arg(long, default_value_t = Limits::default().max_flops)]
    pub max_flops: u64,
    /// Largest activation memory for one example, in MiB.
    #[arg(long, default_value_t = Limits::default().max_activation_bytes >> 20)]
    pub max_activation_mb: u64,
}

impl SpaceArgs {
    fn options(&self) -> CheckOptions {
        CheckOptions {
            limits: Limits {
                max_params: self.limits.max_params,
                max_flops: self.limits.max_flops,
                max_activation_bytes: self.limits.max_activation_mb.saturating_mul(1 << 20),
            },
            classes: self.classes,
            infos: false,
            head: self.head,
        }
    }

    fn load(&self) -> Result<Space> {
        Ok(Space::load(&self.space)?)
    }
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub space: SpaceArgs,
    /// How many candidates to draw.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: usize,
    /// Random seed; the same seed gives the same candidates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub space: SpaceArgs,
    /// A file of candidates (one a line, or several lines with `let` macros), or - for stdin.
    #[arg(default_value = "-")]
    pub file: String,
    /// Print one JSON object a candidate instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MutateArgs {
    #[command(flatten)]
    pub space: SpaceArgs,
    /// Candidates to mutate (a file, or - for stdin).
    #[arg(default_value = "-")]
    pub file: String,
    /// Children to print for each candidate.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct CrossoverArgs {
    #[command(flatten)]
    pub space: SpaceArgs,
    /// The first parent's text (or @FILE).
    pub first: String,
    /// The second parent's text (or @FILE).
    pub second: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the command line; `Ok` carries the exit status of a command that ran to its end.
pub fn run() -> Result<ExitStatus> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return Ok(ExitStatus::of_usage(&e)),
    };
    match cli.command {
        Command::Space(SpaceCmd::List) => {
            let mut out = std::io::stdout().lock();
            for name in Space::builtin_names() {
                let s = Space::load(name)?;
                writeln!(
                    out,
                    "{name:<10} {} ({} seeds)",
                    s.grammar.description,
                    s.seeds.len()
                )?;
            }
            Ok(ExitStatus::Success)
        }
        Command::Space(SpaceCmd::Show { name, source }) => {
            let s = Space::load(&name)?;
            if source {
                print!("{}", s.grammar.source);
            } else {
                print!("{}", s.describe());
            }
            Ok(ExitStatus::Success)
        }
        Command::Space(SpaceCmd::Export(a)) => export_grammar(a),
        Command::Sample(a) => sample(a),
        Command::Validate(a) => validate(a),
        Command::Mutate(a) => mutate(a),
        Command::Crossover(a) => crossover(a),
        Command::Prompt(c) => prompt::run(c),
        Command::TrainProgram(a) => torch::forward("train-program", a),
        Command::Train(a) => torch::forward("train", a),
        Command::Task(c) => task::task(c),
        Command::Export(a) => torch::forward("export", a),
        Command::Report(a) => report::report(a),
        Command::Compare(a) => report::compare(a),
        Command::Bench(a) => bench::run(a),
        Command::Run(a) => run::run(a),
        Command::Resume(a) => run::resume(a),
        Command::Replay(a) => run::replay(a),
        Command::Runs(a) => run::runs(a),
        Command::Show(a) => run::show(a),
        Command::Worker(a) => torch::forward("worker", a),
    }
}

fn sample(a: SampleArgs) -> Result<ExitStatus> {
    let space = a.space.load()?;
    let opts = a.space.options();
    let sampler = space.sampler();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..a.count {
        let (node, _) = space.sample_with(&sampler, a.space.input, &opts, &mut rng)?;
        writeln!(out, "{node}")?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// `1.23M`-style numbers for FLOPs and bytes.
pub fn si(x: u64) -> String {
    let f = x as f64;
    for (div, unit) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")] {
        if f >= div {
            return format!("{:.2}{unit}", f / div);
        }
    }
    x.to_string()
}

fn print_diag(out: &mut impl Write, d: &Diagnostic, src: &str) -> std::io::Result<()> {
    write!(out, "  - {d}")?;
    if let Some(span) = d.span {
        if d.stage != archsmith::space::Stage::Syntax {
            let (l, c) = span.line_col(src);
            write!(out, " [line {l}, column {c}]")?;
        }
    }
    writeln!(out)
}

fn validate(a: ValidateArgs) -> Result<ExitStatus> {
    let space = a.space.load()?;
    let src = archsmith::text::read_input(&a.file)?;
    let opts = a.space.options();
    let results = space.validate_source(&src, a.space.input, &opts);
    if results.is_empty() {
        bail!(
            "no candidates found in {} (it is empty or holds only comments and let definitions)",
            if a.file == "-" {
                "standard input"
            } else {
                &a.file
            }
        );
    }
    // Collected, then printed with control characters made visible: the input is untrusted.
    let mut out: Vec<u8> = Vec::new();
    let mut all_ok = true;
    for (i, (parsed, r)) in results.iter().enumerate() {
        if a.json {
            let v = match r {
                Ok((node, an)) => serde_json::json!({
                    "index": i + 1,
                    "valid": true,
                    "candidate": node.to_string(),
                    "hash": node.hash_hex(),
                    "analysis": an,
                }),
                Err(diags) => serde_json::json!({
                    "index": i + 1,
                    "valid": false,
                    "text": parsed.text,
                    "errors": diags.iter().map(|d| {
                        let mut v = serde_json::to_value(d).unwrap_or_default();
                        if let (Some(span), Some(obj)) = (d.span, v.as_object_mut()) {
                            let (l, c) = span.line_col(&src);
                            obj.insert("line".into(), l.into());
                            obj.insert("column".into(), c.into());
                        }
                        v
                    }).collect::<Vec<_>>(),
                }),
            };
            writeln!(out, "{v}")?;
            all_ok &= r.is_ok();
            continue;
        }
        match r {
            Ok((node, an)) if space.grammar.kind.is_program() => {
                writeln!(
                    out,
                    "[{}] ok  {} program  nodes {}  depth {}  tensor ops/element {}  hash {}",
                    i + 1,
                    space.grammar.kind.name(),
                    an.nodes,
                    an.depth,
                    an.flops,
                    node.hash_hex()
                )?;
                writeln!(out, "    {node}")?;
            }
            Ok((node, an)) => {
                let head = an
                    .head_params
                    .map(|h| format!(" (+{h} head)"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "[{}] ok  params {}{head}  FLOPs {}  output {} ({})  activations {}B  hash {}",
                    i + 1,
                    an.params,
                    si(an.flops),
                    an.output,
                    an.output.mode().name(),
                    si(an.activation_bytes),
                    node.hash_hex()
                )?;
                writeln!(out, "    {node}")?;
            }
            Err(diags) => {
                all_ok = false;
                let (l, _) = parsed.span.line_col(&src);
                writeln!(
                    out,
                    "[{}] invalid ({} error{}), line {l}",
                    i + 1,
                    diags.len(),
                    if diags.len() == 1 { "" } else { "s" }
                )?;
                writeln!(
                    out,
                    "    {}",
                    archsmith::space::node::abbreviate(&parsed.text.replace('\n', " "), 160)
                )?;
                for d in diags {
                    print_diag(&mut out, d, &src)?;
                }
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(archsmith::text::visible_lines(&String::from_utf8_lossy(&out)).as_bytes())?;
    stdout.flush()?;
    Ok(if all_ok {
        ExitStatus::Success
    } else {
        ExitStatus::Invalid
    })
}

/// Parses every candidate of a source and validates it, or fails naming the first bad one.
fn valid_parents(space: &Space, src: &str, a: &SpaceArgs) -> Result<Vec<Node>> {
    let opts = a.options();
    let mut parents = Vec::new();
    for (i, (parsed, r)) in space
        .validate_source(src, a.input, &opts)
        .into_iter()
        .enumerate()
    {
        match r {
            Ok((node, _)) => parents.push(node),
            Err(diags) => bail!(
                "candidate {} is invalid, so it cannot be a parent: {}\n{}",
                i + 1,
                archsmith::space::node::abbreviate(&parsed.text, 120),
                diags
                    .iter()
                    .map(|d| format!("  - {d}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    if parents.is_empty() {
        bail!("no candidates found in the input");
    }
    Ok(parents)
}

fn mutate(a: MutateArgs) -> Result<ExitStatus> {
    let space = a.space.load()?;
    let src = archsmith::text::read_input(&a.file)?;
    let parents = valid_parents(&space, &src, &a.space)?;
    let opts = a.space.options();
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for p in &parents {
        for _ in 0..a.count {
            let child = space.mutate(p, a.space.input, &opts, &mut rng)?;
            writeln!(out, "{child}")?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn text_arg(s: &str) -> Result<String> {
    match s.strip_prefix('@') {
        Some(path) => archsmith::text::read_input(path),
        None => Ok(s.to_string()),
    }
}

fn crossover(a: CrossoverArgs) -> Result<ExitStatus> {
    let space = a.space.load()?;
    let first = valid_parents(&space, &text_arg(&a.first)?, &a.space)?;
    let second = valid_parents(&space, &text_arg(&a.second)?, &a.space)?;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let child = space.crossover(
        &first[0],
        &second[0],
        a.space.input,
        &a.space.options(),
        &mut rng,
    )?;
    println!("{child}");
    Ok(ExitStatus::Success)
}
