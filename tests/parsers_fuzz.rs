//! Fuzzing the parsers that read untrusted text: the candidate notation with macros (and the
//! validator behind it), the grammar language, a model's reply, and the journal reader. Every
//! input must give a value or an error, never a panic or a stack overflow.
//!
//! Inputs are token soups over each language's own vocabulary (so that they reach deep into
//! the parsers, macros that call each other included) and byte-level mutations of real files.
//! The suite runs `ARCHSMITH_FUZZ_CASES` inputs per target (default 256);
//! `benches/fuzz.sh` runs hundreds of thousands and reports the count.

use archsmith::space::grammar::parse_grammar;
use archsmith::space::{parse_source, CheckOptions, Shape, Space};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("ARCHSMITH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Strings built from `vocab`, up to `max` tokens.
fn soup(vocab: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vocab), 0..max).prop_map(|v| v.concat())
}

/// `base` with a few bytes replaced, inserted or deleted (kept as valid UTF-8).
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..8).prop_map(
        move |edits| {
            let mut chars: Vec<char> = base.chars().collect();
            for (at, op, c) in edits {
                if chars.is_empty() {
                    chars.push(c);
                    continue;
                }
                let i = at.index(chars.len());
                match op {
                    0 => chars[i] = c,
                    1 => chars.insert(i, c),
                    _ => {
                        chars.remove(i);
                    }
                }
            }
            chars.into_iter().collect()
        },
    )
}

const NOTATION: &[&str] = &[
    "let ",
    "a",
    "b",
    "c",
    "(",
    ")",
    "(",
    ")",
    ",",
    " = ",
    "\n",
    ";",
    "seq",
    "branch",
    "route",
    "residual",
    "linear",
    "64",
    "0",
    "4294967296",
    "identity",
    "im2col",
    "col2im",
    "clone",
    "group",
    "add",
    "norm",
    "leakyrelu",
    "# c\n",
    " ",
    "x",
    "1.5",
    "-3",
    "\u{1b}",
    "x(a)",
    "let a(x) = seq(x, x)\n",
    "let b(x) = a(a(x))\n",
    "let c(x) = b(b(x))\n",
    "prog",
    "state",
    "assign",
    "step",
    "m",
    "g",
    "mul",
    "sqrt",
    "nb201",
    "conv3",
    "skip",
    "none",
];

const GRAMMAR: &[&str] = &[
    "space t\n",
    "root net\n",
    "kind optimizer\n",
    "max_depth 3\n",
    "net",
    "unit",
    " = ",
    " | ",
    "@ 2",
    "@ -1",
    "{16, 32}",
    "{",
    "}",
    "seq(",
    "branch(",
    "route(",
    ")",
    ",",
    "linear(",
    "16",
    "leakyrelu",
    "identity",
    "\n",
    "# x\n",
    "description \"d\"\n",
    "\"",
    "a",
    " ",
    "net = unit\n",
    "unit = linear({16, 32}) | leakyrelu\n",
    "net = seq(net, net)\n",
    "0.5",
    "=",
];

const REPLY: &[&str] = &[
    "PLAN: ",
    "CANDIDATE: ",
    "PREDICTED: ",
    "seq(linear(64), relu)",
    "0.83",
    "```",
    "```text\n",
    "\n",
    "1. ",
    "- ",
    "**",
    "`",
    "(predicted 0.7)",
    "<img src=x onerror=alert(5)>",
    "\u{202e}",
    "NaN",
    "inf",
    "%",
    "Candidate 2:",
    "# ",
    "route(im2col(3,1,1)",
    ")",
    "  ",
    "score: ",
];

/// Each parser's job is to say no; panicking is the bug.
fn check(target: &str, strategy: impl Strategy<Value = String>, f: impl Fn(&str)) -> u32 {
    let mut r = runner();
    let n = std::cell::Cell::new(0u32);
    let result = r.run(&strategy, |s| {
        n.set(n.get() + 1);
        f(&s);
        Ok(())
    });
    let n = n.get();
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
    println!("{target}: {n} inputs, no panic");
    n
}

#[test]
fn candidate_notation_with_macros_and_validation() {
    let space = Space::load("einspace").unwrap();
    let opts = CheckOptions::default();
    let input = Shape::im(3, 16, 16);
    let seed = space.seed("resnet18_no_maxpool").unwrap().text.clone();
    let seed: &'static str = Box::leak(seed.into_boxed_str());
    let validate = |s: &str| {
        let _ = parse_source(s);
        let _ = space.validate_source(s, input, &opts);
    };
    check("notation soup", soup(NOTATION, 120), validate);
    check("notation mutations", mutated(seed), validate);
}

#[test]
fn grammar_language() {
    check("grammar soup", soup(GRAMMAR, 80), |s| {
        let _ = parse_grammar(s, "fuzz.grammar");
    });
    check(
        "grammar mutations",
        mutated(include_str!("../spaces/einspace/space.grammar")),
        |s| {
            let _ = parse_grammar(s, "fuzz.grammar");
        },
    );
}

#[test]
fn model_replies() {
    check("reply soup", soup(REPLY, 60), |s| {
        let _ = archsmith::llm::reply::parse_reply(s);
        let _ = archsmith::llm::reply::parse_predictions(s, 3);
    });
}

#[test]
fn journal_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    const JOURNAL: &str = concat!(
        r#"{"type":"run_started","data":{"run":"r","session":1,"mode":"new","space":"einspace","task":"textures","strategy":"random","seed":1,"message":"m"}}"#,
        "\n",
        r#"{"type":"proposal","data":{"id":0,"round":0,"origin":"sample","text":"linear(8)","hash":"ab","parents":[],"plan":null,"llm_step":null,"predicted":null}}"#,
        "\n",
        r#"{"type":"train_finished","data":{"eval":0,"hash":"ab","candidate":"linear(8)","score":0.5}}"#,
        "\n"
    );
    check("journal mutations", mutated(JOURNAL), |s| {
        std::fs::write(&path, s).unwrap();
        let _ = archsmith::run::read_journal(&path);
    });
    check(
        "journal soup",
        soup(
            &[
                "{",
                "}",
                "\"type\"",
                ":",
                "\"proposal\"",
                "\"data\"",
                ",",
                "\n",
                "7",
                "null",
                "[",
                "]",
                "\u{0}",
            ],
            60,
        ),
        |s| {
            std::fs::write(&path, s).unwrap();
            let _ = archsmith::run::read_journal(&path);
        },
    );
}
