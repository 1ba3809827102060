//! Search spaces: the grammar language, the candidate notation, validation, sampling,
//! mutation, crossover and features.
//!
//! The pipeline is named by stage: `lex` -> `notation` (candidates) / `grammar` (spaces) ->
//! `check` (membership, shapes, limits). `ops` and `node` hold the semantics, once each.

pub mod cfg;
pub mod check;
pub mod evolve;
pub mod features;
pub mod fuse;
pub mod gnn;
pub mod grammar;
pub mod kind;
pub mod lex;
pub mod node;
pub mod notation;
pub mod ops;
pub mod program;
pub mod sample;
pub mod shape;

pub use cfg::{export_cfg, CfgError, CfgFormat, CfgOptions, ReplyShape};
pub use check::{Analysis, CheckOptions, Diagnostic, Limits, Stage};
pub use features::Features;
pub use grammar::{Grammar, GrammarErrors};
pub use kind::SpaceKind;
pub use node::{Form, Node};
pub use notation::{parse_one, parse_source, Parsed};
pub use ops::{Op, Sym};
pub use program::Ty;
pub use shape::{Head, Mode, Shape};

use lex::Span;
use rand::Rng;
use sample::{Got, SampleSettings, Sampler, Want};
use std::path::{Path, PathBuf};

/// A space shipped with archsmith: its grammar and seed candidates, embedded in the binary so
/// that it works from any directory.
struct Builtin {
    name: &'static str,
    grammar: &'static str,
    seeds: &'static [(&'static str, &'static str)],
}

static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "einspace",
        grammar: include_str!("../../spaces/einspace/space.grammar"),
        // einspace's own seeds first (the four of the paper's mixed-seed searches, then
        // resnet34_no_maxpool), then archsmith's smaller CIFAR-style ones.
        seeds: &[
            (
                "resnet18_no_maxpool",
                include_str!("../../spaces/einspace/seeds/resnet18_no_maxpool.arch"),
            ),
            (
                "wideresnet16_4",
                include_str!("../../spaces/einspace/seeds/wideresnet16_4.arch"),
            ),
            (
                "transformer",
                include_str!("../../spaces/einspace/seeds/transformer.arch"),
            ),
            (
                "mlp_mixer",
                include_str!("../../spaces/einspace/seeds/mlp_mixer.arch"),
            ),
            (
                "resnet34_no_maxpool",
                include_str!("../../spaces/einspace/seeds/resnet34_no_maxpool.arch"),
            ),
            (
                "resnet18_cifar",
                include_str!("../../spaces/einspace/seeds/resnet18_cifar.arch"),
            ),
            ("vit", include_str!("../../spaces/einspace/seeds/vit.arch")),
        ],
    },
    Builtin {
        name: "nb201",
        grammar: include_str!("../../spaces/nb201/space.grammar"),
        seeds: &[
            (
                "best_cifar10",
                include_str!("../../spaces/nb201/seeds/best_cifar10.arch"),
            ),
            (
                "resnet",
                include_str!("../../spaces/nb201/seeds/resnet.arch"),
            ),
        ],
    },
    Builtin {
        name: "mlp",
        grammar: include_str!("../../spaces/mlp/space.grammar"),
        seeds: &[
            ("mlp2", include_str!("../../spaces/mlp/seeds/mlp2.arch")),
            ("resmlp", include_str!("../../spaces/mlp/seeds/resmlp.arch")),
        ],
    },
    Builtin {
        name: "activation",
        grammar: include_str!("../../spaces/activation/space.grammar"),
        seeds: &[
            (
                "relu",
                include_str!("../../spaces/activation/seeds/relu.arch"),
            ),
            (
                "gelu",
                include_str!("../../spaces/activation/seeds/gelu.arch"),
            ),
            (
                "swish",
                include_str!("../../spaces/activation/seeds/swish.arch"),
            ),
            (
                "tanh",
                include_str!("../../spaces/activation/seeds/tanh.arch"),
            ),
        ],
    },
    Builtin {
        name: "optimizer",
        grammar: include_str!("../../spaces/optimizer/space.grammar"),
        seeds: &[
            (
                "sgd_momentum",
                include_str!("../../spaces/optimizer/seeds/sgd_momentum.arch"),
            ),
            (
                "adam",
                include_str!("../../spaces/optimizer/seeds/adam.arch"),
            ),
            (
                "adamw",
                include_str!("../../spaces/optimizer/seeds/adamw.arch"),
            ),
            (
                "lion",
                include_str!("../../spaces/optimizer/seeds/lion.arch"),
            ),
        ],
    },
    Builtin {
        name: "nbgraph",
        grammar: include_str!("../../spaces/nbgraph/space.grammar"),
        seeds: &[
            (
                "skip2_gcn2",
                include_str!("../../spaces/nbgraph/seeds/skip2_gcn2.arch"),
            ),
            (
                "skip2_gat2",
                include_str!("../../spaces/nbgraph/seeds/skip2_gat2.arch"),
            ),
            (
                "skip2_gin2",
                include_str!("../../spaces/nbgraph/seeds/skip2_gin2.arch"),
            ),
            (
                "skip2_graph2",
                include_str!("../../spaces/nbgraph/seeds/skip2_graph2.arch"),
            ),
            (
                "skip2_sage2",
                include_str!("../../spaces/nbgraph/seeds/skip2_sage2.arch"),
            ),
            (
                "skip_gcn3",
                include_str!("../../spaces/nbgraph/seeds/skip_gcn3.arch"),
            ),
            (
                "skip_gat3",
                include_str!("../../spaces/nbgraph/seeds/skip_gat3.arch"),
            ),
            (
                "skip_gin3",
                include_str!("../../spaces/nbgraph/seeds/skip_gin3.arch"),
            ),
            (
                "skip_graph3",
                include_str!("../../spaces/nbgraph/seeds/skip_graph3.arch"),
            ),
            (
                "skip_sage3",
                include_str!("../../spaces/nbgraph/seeds/skip_sage3.arch"),
            ),
        ],
    },
    Builtin {
        name: "nbgraph_proteins",
        grammar: include_str!("../../spaces/nbgraph_proteins/space.grammar"),
        seeds: &[
            (
                "skip2_gcn2",
                include_str!("../../spaces/nbgraph_proteins/seeds/skip2_gcn2.arch"),
            ),
            (
                "skip2_sage2",
                include_str!("../../spaces/nbgraph_proteins/seeds/skip2_sage2.arch"),
            ),
            (
                "skip_gcn3",
                include_str!("../../spaces/nbgraph_proteins/seeds/skip_gcn3.arch"),
            ),
            (
                "skip_sage3",
                include_str!("../../spaces/nbgraph_proteins/seeds/skip_sage3.arch"),
            ),
        ],
    },
];

/// A named seed candidate of a space.
#[derive(Clone, Debug)]
pub struct Seed {
    pub name: String,
    /// The seed as written (with its macros and comments).
    pub text: String,
    pub node: Node,
}

/// A search space: a checked grammar and its seeds.
#[derive(Clone, Debug)]
pub struct Space {
    pub grammar: Grammar,
    pub seeds: Vec<Seed>,
    /// Where the space was loaded from, for user spaces.
    pub origin: Option<PathBuf>,
}

/// Errors of the space layer that a caller may need to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("unknown space `{name}`; the built-in spaces are {known}, or give a path to a .grammar file or a folder holding space.grammar")]
    Unknown { name: String, known: String },
    #[error("cannot read space file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Grammar(#[from] GrammarErrors),
    #[error("seed `{name}` of space {space} is invalid:\n{reasons}")]
    BadSeed {
        space: String,
        name: String,
        reasons: String,
    },
    #[error("cannot draw a valid candidate from space {space} for input {input} in {tries} tries (the limits or the input shape may exclude everything; try a larger limit or another input)")]
    NoSample {
        space: String,
        input: Shape,
        tries: usize,
    },
    #[error("the parent candidate is invalid: {}\n  {candidate}", reasons.join("; "))]
    InvalidParent {
        candidate: String,
        reasons: Vec<String>,
    },
    #[error("{what} found no valid child in {attempts} attempts for {candidate}")]
    NoChild {
        what: &'static str,
        candidate: String,
        attempts: usize,
    },
}

/// The outcome of validating one candidate: the canonical tree and its analysis, or why not.
pub type Validated = Result<(Node, Analysis), Vec<Diagnostic>>;

/// How many draws `sample` makes before reporting that nothing valid can be drawn.
pub const SAMPLE_TRIES: usize = 1_000;

impl Space {
    /// The names of the built-in spaces.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|b| b.name).collect()
    }

    /// A built-in space by name.
    pub fn builtin(name: &str) -> Option<Result<Space, SpaceError>> {
        let b = BUILTINS.iter().find(|b| b.name == name)?;
        Some(Space::from_parts(
            b.grammar,
            &format!("spaces/{}/space.grammar", b.name),
            b.seeds
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            None,
        ))
    }

    /// A space by built-in name, or from a path: a `.grammar` file, or a folder holding
    /// `space.grammar` and optionally `seeds/*.arch`.
    pub fn load(name_or_path: &str) -> Result<Space, SpaceError> {
        if let Some(s) = Space::builtin(name_or_path) {
            return s;
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(SpaceError::Unknown {
                name: name_or_path.to_string(),
                known: Space::builtin_names().join(", "),
            });
        }
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| SpaceError::Io { path: p, source }
        };
        let (grammar_path, seeds_dir) = if path.is_dir() {
            (path.join("space.grammar"), Some(path.join("seeds")))
        } else {
            (path.to_path_buf(), None)
        };
        let text = std::fs::read_to_string(&grammar_path).map_err(io(&grammar_path))?;
        let mut seeds = Vec::new();
        if let Some(dir) = seeds_dir.filter(|d| d.is_dir()) {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(io(&dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "arch"))
                .collect();
            entries.sort();
            for p in entries {
                let t = std::fs::read_to_string(&p).map_err(io(&p))?;
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                seeds.push((name, t));
            }
        }
        Space::from_parts(
            &text,
            &grammar_path.display().to_string(),
            seeds,
            Some(path.to_path_buf()),
        )
    }

    /// A space from grammar text and seed texts. Seeds must parse (they are validated for an
    /// input shape only when used, since a seed fits some inputs and not others).
    pub fn from_parts(
        grammar_text: &str,
        file: &str,
        seeds: Vec<(String, String)>,
        origin: Option<PathBuf>,
    ) -> Result<Space, SpaceError> {
        let grammar = grammar::parse_grammar(grammar_text, file)?;
        let mut out = Vec::new();
        for (name, text) in seeds {
            match parse_one(&text) {
                Ok(l) => out.push(Seed {
                    name,
                    text,
                    node: l.node,
                }),
                Err(errs) => {
                    return Err(SpaceError::BadSeed {
                        space: grammar.name.clone(),
                        name,
                        reasons: errs
                            .iter()
                            .map(|e| e.render(&text))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    })
                }
            }
        }
        Ok(Space {
            grammar,
            seeds: out,
            origin,
        })
    }

    pub fn name(&self) -> &str {
        &self.grammar.name
    }

    pub fn seed(&self, name: &str) -> Option<&Seed> {
        self.seeds.iter().find(|s| s.name == name)
    }

    pub fn sampler(&self) -> Sampler<'_> {
        Sampler::new(&self.grammar, SampleSettings::default())
    }

    /// Validates a candidate tree.
    pub fn check(
        &self,
        node: &Node,
        spans: Option<&[Span]>,
        input: Shape,
        opts: &CheckOptions,
    ) -> Result<Analysis, Vec<Diagnostic>> {
        check::check(&self.grammar, node, spans, input, opts)
    }

    /// Parses and validates every candidate in `src` (one a line, or several lines with
    /// `let` macros). Syntax errors come back as diagnostics of the syntax stage.
    pub fn validate_source(
        &self,
        src: &str,
        input: Shape,
        opts: &CheckOptions,
    ) -> Vec<(Parsed, Validated)> {
        parse_source(src)
            .into_iter()
            .map(|p| {
                let r = match &p.result {
                    Ok(l) => self
                        .check(&l.node, Some(&l.spans), input, opts)
                        .map(|a| (l.node.clone(), a)),
                    Err(errs) => Err(errs
                        .iter()
                        .map(|e| {
                            let (line, col) = e.span.line_col(src);
                            Diagnostic {
                                stage: Stage::Syntax,
                                path: format!("{line}:{col}"),
                                node: src
                                    .get(e.span.start..e.span.end)
                                    .filter(|s| !s.is_empty())
                                    .map(|s| format!("`{}`", node::abbreviate(s, 40)))
                                    .unwrap_or_else(|| "text".into()),
                                message: e.message.clone(),
                                rule: None,
                                input: None,
                                span: Some(e.span),
                            }
                        })
                        .collect()),
                };
                (p, r)
            })
            .collect()
    }

    /// Parses and validates text holding one candidate.
    pub fn validate_text(&self, text: &str, input: Shape, opts: &CheckOptions) -> Validated {
        let mut all = self.validate_source(text, input, opts);
        match all.len() {
            1 => all.remove(0).1,
            n => Err(vec![Diagnostic {
                stage: Stage::Syntax,
                path: "1:1".into(),
                node: "text".into(),
                message: if n == 0 {
                    "no candidate found (the text is empty or holds only comments and let definitions)".into()
                } else {
                    format!("expected one candidate, found {n}")
                },
                rule: None,
                input: None,
                span: None,
            }]),
        }
    }

    /// Draws one valid candidate (within `opts.limits`) for `input`.
    pub fn sample<R: Rng>(
        &self,
        input: Shape,
        opts: &CheckOptions,
        rng: &mut R,
    ) -> Result<(Node, Analysis), SpaceError> {
        let sampler = self.sampler();
        self.sample_with(&sampler, input, opts, rng)
    }

    /// As [`Space::sample`], with a prepared sampler (for drawing many).
    pub fn sample_with<R: Rng>(
        &self,
        sampler: &Sampler<'_>,
        input: Shape,
        opts: &CheckOptions,
        rng: &mut R,
    ) -> Result<(Node, Analysis), SpaceError> {
        for _ in 0..SAMPLE_TRIES {
            let Some((node, Got::Shape(_))) = sampler.draw(
                rng,
                self.grammar.root,
                Want::Unary(input),
                ops::Ctx::default(),
                0,
            ) else {
                continue;
            };
            if let Ok(a) = self.check(&node, None, input, opts) {
                return Ok((node, a));
            }
        }
        Err(SpaceError::NoSample {
            space: self.name().to_string(),
            input,
            tries: SAMPLE_TRIES,
        })
    }

    /// Features of a valid candidate.
    pub fn features(
        &self,
        node: &Node,
        input: Shape,
        opts: &CheckOptions,
    ) -> Result<Features, Vec<Diagnostic>> {
        let mut o = *opts;
        o.infos = true;
        let a = self.check(node, None, input, &o)?;
        Ok(Features::of(node, &a))
    }

    /// The space in words: its grammar with every rule, then every operation and form it
    /// uses with its shape rule. Used by `space show` and by prompts.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let g = &self.grammar;
        let mut s = String::new();
        let _ = writeln!(s, "space {}", g.name);
        if !g.description.is_empty() {
            let _ = writeln!(s, "{}", g.description);
        }
        if g.kind.is_program() {
            let _ = writeln!(s, "kind: {} program", g.kind.name());
        }
        let _ = writeln!(
            s,
            "\nroot: {}    max depth: {}    min depth: {}",
            g.rules[g.root].name, g.max_depth, g.min_depth
        );
        let _ = writeln!(s, "\nrules (weights are relative within a rule):");
        let mut used_ops: Vec<&'static str> = Vec::new();
        let mut used_forms: Vec<Form> = Vec::new();
        for r in &g.rules {
            let total: f64 = r.alts.iter().map(|a| a.weight).sum();
            let mut parts: Vec<String> = Vec::new();
            let mut i = 0;
            while i < r.alts.len() {
                let a = &r.alts[i];
                // Seed-only alternatives (weight 0) are members but never drawn.
                let p = if a.weight == 0.0 {
                    "seed only".to_string()
                } else {
                    format!("{:.3}", a.weight / total)
                };
                match &a.body {
                    grammar::Body::Op(op) if op.kind() == ops::Kind::Value => {
                        if op.const_value().is_none() && !used_ops.contains(&op.name()) {
                            used_ops.push(op.name());
                        }
                        parts.push(format!("{op}  [{p}]"));
                    }
                    grammar::Body::Op(op) => {
                        if !used_ops.contains(&op.name()) {
                            used_ops.push(op.name());
                        }
                        // Group a run of the same operation family with equal weights.
                        let mut j = i;
                        let mut args = Vec::new();
                        while j < r.alts.len() {
                            match &r.alts[j].body {
                                grammar::Body::Op(o2)
                                    if o2.name() == op.name() && r.alts[j].weight == a.weight =>
                                {
                                    let a2 = o2.args();
                                    if !a2.is_empty() {
                                        args.push(
                                            a2.iter()
                                                .map(|x| x.to_string())
                                                .collect::<Vec<_>>()
                                                .join(","),
                                        );
                                    }
                                    j += 1;
                                }
                                _ => break,
                            }
                        }
                        let n = j - i;
                        let text = if args.is_empty() {
                            op.name().to_string()
                        } else {
                            format!("{}({})", op.name(), args.join(" | "))
                        };
                        if n > 1 {
                            if a.weight == 0.0 {
                                parts.push(format!("{text}  [{p}]"));
                            } else {
                                parts.push(format!("{text}  [{p} each]"));
                            }
                        } else {
                            parts.push(format!("{text}  [{p}]"));
                        }
                        i = j;
                        continue;
                    }
                    grammar::Body::Form(f, slots) => {
                        if !used_forms.contains(f) {
                            used_forms.push(*f);
                        }
                        let sl: Vec<&str> =
                            slots.iter().map(|x| g.rules[*x].name.as_str()).collect();
                        parts.push(format!("{}({})  [{p}]", f.name(), sl.join(", ")));
                    }
                    grammar::Body::Ref(t) => parts.push(format!("{}  [{p}]", g.rules[*t].name)),
                }
                i += 1;
            }
            let _ = writeln!(s, "  {} ->", r.name);
            for p in parts {
                let _ = writeln!(s, "      {p}");
            }
        }
        let _ = writeln!(s, "\nforms:");
        for f in used_forms {
            let _ = writeln!(s, "  {}: {}", f.name(), f.spec().rule);
        }
        let _ = writeln!(
            s,
            "\n{}:",
            if g.kind.is_program() {
                "symbols"
            } else {
                "operations and their shape rules"
            }
        );
        for name in used_ops {
            if let Some(spec) = ops::spec(name) {
                let params = if spec.params.is_empty() {
                    String::new()
                } else {
                    format!("({})", spec.params.join(", "))
                };
                let _ = writeln!(
                    s,
                    "  {}{} [{}]: {}",
                    spec.name,
                    params,
                    spec.kind.name(),
                    spec.rule
                );
            }
        }
        let _ = match g.kind {
            SpaceKind::Network => writeln!(
                s,
                "\nhead: the network's output is averaged over positions (HxW for im, S for col) and fed to one linear layer to the classes."
            ),
            SpaceKind::Activation => writeln!(
                s,
                "\nprogram: one expression in x, applied elementwise; it must be a tensor (depend on x). Numbers stand as constants. At most {} nodes.\nscore: a fixed reference network is trained with the function in every non-linearity.",
                program::MAX_ACTIVATION_NODES
            ),
            SpaceKind::Optimizer => writeln!(
                s,
                "\nprogram: run on every parameter tensor at every step. Values are scalars (t, lr, beta1, beta2, wd, eps, numbers) or tensors (g, w, state); an expression with a tensor part is a tensor. State is declared in state(...), starts at zero, and must be assigned; statements run in order; exactly one step(e), and the weights become w - e. At most {} statements and {} nodes.\nscore: a fixed reference network is trained with the rule in place of the optimizer, the learning rate tuned over a small grid.",
                program::MAX_STATEMENTS,
                program::MAX_RULE_NODES
            ),
        };
        if !self.seeds.is_empty() {
            let _ = writeln!(
                s,
                "\nseeds: {}",
                self.seeds
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        s
    }
}
