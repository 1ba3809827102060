//! The grammars `space export` writes for constrained decoding: every sampled candidate of
//! every shipped space is accepted (bare and inside a reply), the depth bound is exact,
//! non-members are rejected, the Lark text says the same as the GBNF, and the texts are
//! snapshotted. Where llama.cpp's or llguidance's own grammar checkers are installed, they
//! check the exported grammars too.

use archsmith::space::cfg::gbnf::Gbnf;
use archsmith::space::cfg::{compile, export_cfg, CfgError, CfgFormat, CfgOptions, ReplyShape};
use archsmith::space::grammar::parse_grammar;
use archsmith::space::{CheckOptions, Node, Shape, Space};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::OnceLock;

/// The shipped spaces with an input each draws valid candidates for.
fn spaces() -> Vec<(Space, Shape)> {
    vec![
        (Space::load("einspace").unwrap(), Shape::im(3, 32, 32)),
        (Space::load("einspace").unwrap(), Shape::col(16, 24)),
        (Space::load("nb201").unwrap(), Shape::im(3, 32, 32)),
        (Space::load("mlp").unwrap(), Shape::vec(32)),
        (Space::load("activation").unwrap(), Shape::vec(32)),
        (Space::load("optimizer").unwrap(), Shape::vec(32)),
    ]
}

fn opts() -> CheckOptions {
    CheckOptions {
        classes: Some(10),
        ..CheckOptions::default()
    }
}

fn gbnf(space: &Space, depth: Option<usize>, reply: Option<ReplyShape>) -> Gbnf {
    let text = export_cfg(
        &space.grammar,
        CfgFormat::Gbnf,
        &CfgOptions { depth, reply },
    )
    .unwrap();
    Gbnf::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn try_gbnf(space: &Space, depth: Option<usize>) -> Option<Gbnf> {
    match compile(&space.grammar, &CfgOptions { depth, reply: None }) {
        Ok(cfg) => Some(Gbnf::parse(&cfg.render(CfgFormat::Gbnf)).unwrap()),
        Err(CfgError::Empty { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

fn reply_text(plan: &str, cands: &[String], predicted: bool) -> String {
    let mut s = format!("PLAN: {plan}\n");
    for (i, c) in cands.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str("CANDIDATE: ");
        s.push_str(c);
        if predicted {
            s.push_str(&format!("\nPREDICTED: 0.{}", 50 + i));
        }
    }
    s
}

/// Samples per space and input; with six of them, thousands in all.
const SAMPLES: u64 = 600;

#[test]
fn every_sample_is_accepted_and_the_depth_bound_is_exact() {
    for (space, input) in spaces() {
        let name = space.name().to_string();
        let bare = gbnf(&space, None, None);
        let k = 3;
        let reply = gbnf(&space, None, Some(ReplyShape::propose(k)));
        let mut by_depth: HashMap<usize, Gbnf> = HashMap::new();
        let mut below_depth: HashMap<usize, Option<Gbnf>> = HashMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let mut texts: Vec<String> = Vec::new();
        let mut deepest = 0;
        for _ in 0..SAMPLES {
            let (node, _) = space.sample(input, &opts(), &mut rng).unwrap();
            let text = node.to_string();
            assert!(bare.accepts(&text), "{name}: rejected sample {text}");
            let d = node.depth();
            deepest = deepest.max(d);
            // Exact bound: accepted at its own depth, rejected one level shallower. Checked
            // on every tenth sample to keep the test fast (each depth compiles once).
            if texts.len().is_multiple_of(10) {
                let at = by_depth
                    .entry(d)
                    .or_insert_with(|| gbnf(&space, Some(d), None));
                assert!(at.accepts(&text), "{name}: depth {d} rejects {text}");
                if d > 0 {
                    // A space with nothing that shallow exports nothing: a rejection too.
                    let below = below_depth
                        .entry(d - 1)
                        .or_insert_with(|| try_gbnf(&space, Some(d - 1)));
                    assert!(
                        !below.as_ref().is_some_and(|g| g.accepts(&text)),
                        "{name}: depth {} accepts {text} of depth {d}",
                        d - 1
                    );
                }
            }
            texts.push(text);
        }
        assert!(deepest <= space.grammar.max_depth, "{name}: {deepest}");
        for chunk in texts.chunks(k).filter(|c| c.len() == k) {
            let r = reply_text("widen the first layers; keep the rest.", chunk, true);
            assert!(reply.accepts(&r), "{name}: rejected reply\n{r}");
            assert!(reply.accepts(&(r.clone() + "\n")), "{name}: final newline");
            // Exactly k candidates, each with its prediction.
            let short = reply_text("a plan", &chunk[..k - 1], true);
            assert!(!reply.accepts(&short), "{name}: accepted {} of {k}", k - 1);
            let bare_entries = reply_text("a plan", chunk, false);
            assert!(!reply.accepts(&bare_entries), "{name}: no PREDICTED lines");
        }
        eprintln!(
            "{name} {input}: {} samples accepted, deepest {deepest}",
            texts.len()
        );
    }
}

#[test]
fn non_members_are_rejected() {
    let ein = Space::load("einspace").unwrap();
    let g = gbnf(&ein, None, None);
    let ok = [
        "seq(route(im2col(3,1,1), linear(64), col2im), norm, leakyrelu)",
        "branch(clone(2), linear(64), norm, add)",
        "branch(clone(4), linear(64), cat(3,4))",
        "branch(group(2,1), seq(linear(16), norm), dot_product)",
        "route(identity, branch(clone(8), identity, add), permute21)",
    ];
    for t in ok {
        assert!(g.accepts(t), "rejected {t}");
    }
    let bad = [
        // Operation names, argument values and arities outside the space.
        "seq(lineer(64), norm)",
        "seq(linear(63), norm)",
        "seq(linear(64,64), norm)",
        "seq(im2col(5,1,1), norm)",
        "route(identity, linear(64))",
        "route(identity, linear(64), norm, identity)",
        "seq(linear(64))",
        // Unbalanced parentheses and other spellings than the canonical one.
        "seq(linear(64), norm",
        "seq(linear(64), norm))",
        "seq(linear(64),norm)",
        "seq( linear(64), norm)",
        "seq(linear(64), norm)\n",
        // A bare computation is not a network in einspace, and a branch needs 1 or k modules.
        "linear(64)",
        "branch(clone(2), linear(64), norm, leakyrelu, add)",
        "branch(clone(4), linear(64), norm, add)",
        // Aggregations whose arity cannot fit the branch count.
        "branch(clone(4), linear(64), dot_product)",
        "branch(clone(2), linear(64), cat(1,4))",
        // A routing operation where a computation belongs and the reverse.
        "seq(permute21, norm)",
        "route(linear(64), norm, identity)",
    ];
    for t in bad {
        assert!(!g.accepts(t), "accepted {t:?}");
    }

    let act = gbnf(&Space::load("activation").unwrap(), None, None);
    assert!(act.accepts("mul(x, sigmoid(x))"));
    assert!(act.accepts("max(x, 0)"));
    assert!(act.accepts("add(x, -1)"));
    for t in [
        "mul(x)",
        "max(x, 7)",
        "max(x, 0.50)",
        "relu(x)",
        "x ",
        "mul(x, sigmoid(x)",
    ] {
        assert!(!act.accepts(t), "activation accepted {t:?}");
    }

    let opt = gbnf(&Space::load("optimizer").unwrap(), None, None);
    let lion =
        "prog(state(m), step(mul(lr, sign(interp(m, g, beta1)))), assign(m, interp(m, g, beta2)))";
    assert!(opt.accepts(lion), "{lion}");
    for t in [
        "prog(state(m), assign(m, g))",
        "prog(state(q), step(g))",
        "prog(step(g))",
        "prog(state(m), step(pow(g, 2)))",
        "prog(state(m), step(mul(lr, g)), step(g), step(g), step(g), step(g))",
    ] {
        assert!(!opt.accepts(t), "optimizer accepted {t:?}");
    }

    // The reply around the candidates.
    let r = gbnf(&ein, None, Some(ReplyShape::propose(1)));
    let c = "seq(linear(64), norm)";
    assert!(r.accepts(&format!("PLAN: go wide\nCANDIDATE: {c}\nPREDICTED: 0.9")));
    assert!(r.accepts(&format!("PLAN: go wide\nCANDIDATE: {c}\nPREDICTED: -12")));
    for t in [
        format!("CANDIDATE: {c}\nPREDICTED: 0.9"),
        format!("PLAN: \nCANDIDATE: {c}\nPREDICTED: 0.9"),
        format!("PLAN: go\nCANDIDATE: {c}\nPREDICTED: high"),
        format!("PLAN: go\nCANDIDATE: {c}\nPREDICTED: 0.9\nthanks"),
        format!("PLAN: go\nCANDIDATE: {c}\nPREDICTED: 0.9\n\n"),
        format!("PLAN: {}\nCANDIDATE: {c}\nPREDICTED: 0.9", "x".repeat(601)),
    ] {
        assert!(!r.accepts(&t), "reply accepted {t:?}");
    }
    let repair = gbnf(&ein, None, Some(ReplyShape::repair()));
    assert!(repair.accepts(&format!("PLAN: fixed the fold\nCANDIDATE: {c}")));
    assert!(!repair.accepts(&format!("PLAN: x\nCANDIDATE: {c}\nPREDICTED: 1")));
}

/// A grammar exercising every module form, a reference chain into a seq and a user rule
/// name that needs mangling.
const FIXTURE: &str = "space fixture
root net
max_depth 3
net = seq(Block_a, net) | residual(Block_a) | nb
nb = nb201(edge, edge, edge, edge, edge, edge)
Block_a = seq(lin, act) | branch(split, lin, merge) | route(pre, net, post) | lin
lin = linear({16, 32})
act = leakyrelu | relu
split = clone({2, 4}) | group(2, 1)
merge = add | cat(1, {2, 4}) | dot_product
pre = identity | im2col(3, 1, 1)
post = identity | col2im
edge = none | skip_connect
";

#[test]
fn snapshots_of_exported_grammars() {
    let g = parse_grammar(FIXTURE, "fixture.grammar").unwrap();
    for (format, tag) in [(CfgFormat::Gbnf, "gbnf"), (CfgFormat::Lark, "lark")] {
        let bare = export_cfg(&g, format, &CfgOptions::default()).unwrap();
        insta::assert_snapshot!(format!("fixture_{tag}"), bare);
        let reply = export_cfg(
            &g,
            format,
            &CfgOptions {
                depth: Some(2),
                reply: Some(ReplyShape::propose(2)),
            },
        )
        .unwrap();
        insta::assert_snapshot!(format!("fixture_reply_{tag}"), reply);
        let mlp = Space::load("mlp").unwrap();
        let text = export_cfg(
            &mlp.grammar,
            format,
            &CfgOptions {
                depth: Some(3),
                reply: None,
            },
        )
        .unwrap();
        insta::assert_snapshot!(format!("mlp_depth3_{tag}"), text);
        let nb = Space::load("nb201").unwrap();
        let text = export_cfg(&nb.grammar, format, &CfgOptions::default()).unwrap();
        insta::assert_snapshot!(format!("nb201_{tag}"), text);
    }
    let fx = gbnf_of(&g, None);
    assert!(fx.accepts("seq(linear(16), relu, linear(32), leakyrelu, nb201(none, none, none, none, none, skip_connect))"));
    assert!(fx.accepts(
        "residual(branch(clone(4), linear(16), linear(32), linear(16), linear(16), cat(1,4)))"
    ));
    assert!(!fx.accepts("residual(branch(clone(4), linear(16), linear(32), cat(1,4)))"));
    assert!(!fx.accepts("residual(branch(group(2,1), linear(16), cat(1,4)))"));
}

fn gbnf_of(g: &archsmith::space::Grammar, depth: Option<usize>) -> Gbnf {
    let text = export_cfg(g, CfgFormat::Gbnf, &CfgOptions { depth, reply: None }).unwrap();
    Gbnf::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Reads the Lark export back as GBNF (the two differ only in spelling), so that the same
/// recogniser checks that both say the same.
fn lark_as_gbnf(lark: &str) -> String {
    let mut out = String::new();
    for line in lark.lines() {
        if line.starts_with("//") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("    | ") {
            out.push_str(" |\n    ");
            out.push_str(rest);
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let (name, body) = line.split_once(": ").expect("a Lark rule");
        let name = if name == "start" { "root" } else { name };
        out.push_str(&name.replace('_', "-"));
        out.push_str(" ::= ");
        out.push_str(body);
    }
    out.push('\n');
    // Rule names are the only words outside literals; literals never hold `_`-joined rule
    // names with a dash, so swapping `_` for `-` outside quotes is enough.
    let mut fixed = String::new();
    let mut in_lit = false;
    let mut prev = ' ';
    for c in out.chars() {
        if c == '"' && prev != '\\' {
            in_lit = !in_lit;
        }
        fixed.push(if !in_lit && c == '_' { '-' } else { c });
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    fixed
        .replace("/[^\\n]{1,", "[^\\n]{1,")
        .replace("}/", "}")
        .replace(
            "/-?[0-9]{1,6}(\\.[0-9]{1,6})?/",
            "\"-\"? [0-9]{1,6} (\".\" [0-9]{1,6})?",
        )
}

#[test]
fn the_lark_export_accepts_what_the_gbnf_export_accepts() {
    for (space, input) in spaces() {
        let o = CfgOptions {
            depth: None,
            reply: Some(ReplyShape::propose(1)),
        };
        let lark = export_cfg(&space.grammar, CfgFormat::Lark, &o).unwrap();
        assert!(lark.contains("\nstart: "), "{lark}");
        let g = Gbnf::parse(&lark_as_gbnf(&lark)).unwrap_or_else(|e| panic!("{e}\n{lark}"));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let (node, _) = space.sample(input, &opts(), &mut rng).unwrap();
            let r = reply_text("keep it small", &[node.to_string()], true);
            assert!(g.accepts(&r), "{}: Lark rejects\n{r}", space.name());
        }
        assert!(!g.accepts("PLAN: x\nCANDIDATE: nothing\nPREDICTED: 1"));
    }
}

#[test]
fn bad_options_are_clear_errors() {
    let ein = Space::load("einspace").unwrap();
    let e = compile(
        &ein.grammar,
        &CfgOptions {
            depth: Some(101),
            reply: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "depth 101 is larger than space einspace's max_depth 100"
    );
    // einspace's root is always a form: nothing fits in depth 0.
    let e = compile(
        &ein.grammar,
        &CfgOptions {
            depth: Some(0),
            reply: None,
        },
    )
    .unwrap_err();
    assert!(matches!(e, CfgError::Empty { depth: 0, .. }), "{e}");
    let e = compile(
        &ein.grammar,
        &CfgOptions {
            depth: None,
            reply: Some(ReplyShape::propose(0)),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("k must be between 1 and 64"), "{e}");
    // Sequences that begin with each other cannot be flattened without left recursion.
    let g = parse_grammar(
        "space loop\nroot a\na = seq(b, c) | c\nb = seq(a, c) | c\nc = norm\n",
        "loop.grammar",
    )
    .unwrap();
    let e = compile(&g, &CfgOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("begin with each other (a -> b -> a)"),
        "{e}"
    );
}

/// llama.cpp's own grammar checker, where one is installed: `test-gbnf-validator` (or
/// `llama-gbnf-validator`) in `ARCHSMITH_GBNF_VALIDATOR` or next to the local llama-server.
fn llama_validator() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("ARCHSMITH_GBNF_VALIDATOR") {
        return Some(p.into());
    }
    let home = std::env::var_os("HOME")?;
    let cache = std::path::Path::new(&home).join(".cache/archsmith");
    for dir in ["llm/bin", "llama/bin"] {
        let base = cache.join(dir);
        for name in ["test-gbnf-validator", "llama-gbnf-validator"] {
            let p = base.join(name);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn llama_cpp_parses_every_export() {
    let Some(validator) = llama_validator() else {
        eprintln!("skipped: llama.cpp's llama-gbnf-validator is not installed (set ARCHSMITH_GBNF_VALIDATOR to its path)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (space, input) in spaces() {
        let o = CfgOptions {
            depth: None,
            reply: Some(ReplyShape::propose(2)),
        };
        let text = export_cfg(&space.grammar, CfgFormat::Gbnf, &o).unwrap();
        let gpath = dir.path().join("g.gbnf");
        std::fs::write(&gpath, &text).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let cands: Vec<String> = (0..2)
            .map(|_| {
                space
                    .sample(input, &opts(), &mut rng)
                    .unwrap()
                    .0
                    .to_string()
            })
            .collect();
        for (input_text, want) in [
            (reply_text("a plan", &cands, true), true),
            (reply_text("a plan", &cands[..1], true), false),
        ] {
            let ipath = dir.path().join("input.txt");
            std::fs::write(&ipath, &input_text).unwrap();
            let out = std::process::Command::new(&validator)
                .arg(&gpath)
                .arg(&ipath)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let valid = said.contains("Input string is valid");
            assert_eq!(valid, want, "{}: llama.cpp said {said}", space.name());
        }
    }
}

#[test]
fn llguidance_parses_every_lark_export() {
    // A Python with llguidance: ARCHSMITH_LLGUIDANCE_PYTHON, else python3.
    let python = std::env::var("ARCHSMITH_LLGUIDANCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import llguidance"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: the Python package llguidance (vLLM's Lark backend) is not installed (set ARCHSMITH_LLGUIDANCE_PYTHON to a Python that has it)");
        return;
    }
    for (space, _) in spaces() {
        let o = CfgOptions {
            depth: None,
            reply: Some(ReplyShape::propose(2)),
        };
        let text = export_cfg(&space.grammar, CfgFormat::Lark, &o).unwrap();
        let script = "import sys, llguidance\n\
            g = sys.stdin.read()\n\
            is_err, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(llguidance.grammar_from('lark', g))\n\
            print(is_err, msgs)\n\
            sys.exit(1 if is_err or msgs else 0)\n";
        let mut child = std::process::Command::new(&python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: llguidance refused the Lark export: {}{}",
            space.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn node_depth_is_what_the_bound_counts() {
    // seq flattening does not count: seq(a, seq(b, c)) is one level.
    let n: Node = archsmith::space::parse_one("seq(norm, seq(linear(16), norm))")
        .unwrap()
        .node;
    assert_eq!(n.depth(), 1);
}

/// Each shipped space (with an input) and its reply grammar for k = 1, compiled once.
fn compiled() -> &'static [(Space, Shape, Gbnf)] {
    static C: OnceLock<Vec<(Space, Shape, Gbnf)>> = OnceLock::new();
    C.get_or_init(|| {
        spaces()
            .into_iter()
            .map(|(s, x)| {
                let g = gbnf(&s, None, Some(ReplyShape::propose(1)));
                (s, x, g)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_seed_draws_a_candidate_the_reply_grammar_accepts(i in 0usize..6, seed in any::<u64>()) {
        let (space, input, g) = &compiled()[i];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (node, _) = space.sample(*input, &opts(), &mut rng).unwrap();
        let r = reply_text("try something new", &[node.to_string()], true);
        prop_assert!(g.accepts(&r), "{}: rejected\n{}", space.name(), r);
    }
}

/// The NAS-Bench-Graph spaces give each node of a cell its own rule, so their exported grammars
/// accept every distinct cell of the benchmark and refuse a node that reads a node not yet
/// written (`gcn(3)` as the first node): with one rule for all four nodes, such cells were
/// nearly every invalid cell the local model wrote on `nbgraph:cora`.
#[test]
fn the_nbgraph_grammars_accept_every_cell_and_no_input_ahead_of_its_node() {
    use archsmith::space::gnn::{cell_node, distinct_cells, Gnn, NODES};
    for (name, ops, cells) in [
        ("nbgraph", &Gnn::ALL[..], 26_206),
        ("nbgraph_proteins", &Gnn::PROTEINS[..], 2_021),
    ] {
        let space = Space::load(name).unwrap();
        let g = gbnf(&space, None, None);
        let choices: [Vec<(Gnn, u8)>; NODES] = std::array::from_fn(|i| {
            ops.iter()
                .flat_map(|&op| (0..=i as u8).map(move |input| (op, input)))
                .collect()
        });
        let all = distinct_cells(choices);
        assert_eq!(all.len(), cells, "{name}");
        for &(link, cell_ops) in all.iter() {
            let text = cell_node(link, cell_ops).to_string();
            assert!(g.accepts(&text), "{name}: rejected the cell {text}");
        }
        let op = ops[0].name();
        for node in 0..NODES {
            for ahead in node + 1..=NODES {
                let parts: Vec<String> = (0..NODES)
                    .map(|i| format!("{op}({})", if i == node { ahead } else { i }))
                    .collect();
                let text = format!("nbgraph({})", parts.join(", "));
                assert!(!g.accepts(&text), "{name}: accepted {text}");
            }
        }
        // The candidate with every input in range is a member.
        let chain: Vec<String> = (0..NODES).map(|i| format!("{op}({i})")).collect();
        assert!(
            g.accepts(&format!("nbgraph({})", chain.join(", "))),
            "{name}"
        );
    }
}
