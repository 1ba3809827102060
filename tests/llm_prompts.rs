//! The prompt templates: snapshots of each with a fixed context, strict undefined variables,
//! history capping, and user overrides.

use archsmith::llm::prompt::{
    HistoryRow, PredictContext, PromptError, Prompts, ProposeContext, RepairContext, SystemContext,
};

const GRAMMAR: &str = "net := seq(layer, ...) | route(im2col(k,s,p), layer, col2im)\nlayer := linear(int) | relu | leakyrelu";

fn row(candidate: &str, score: Option<f64>, params: Option<u64>, outcome: &str) -> HistoryRow {
    HistoryRow {
        candidate: candidate.into(),
        score,
        params,
        outcome: outcome.into(),
    }
}

fn history() -> Vec<HistoryRow> {
    vec![
        row("seq(linear(64), relu)", Some(0.71), Some(52_000), "ok"),
        row(
            "seq(linear(8))",
            None,
            None,
            "invalid: linear(8) output 8 does not match the 10 classes",
        ),
        row(
            "route(im2col(3,1,1), linear(64), col2im)",
            Some(0.83),
            Some(1_790),
            "ok",
        ),
        row(
            "seq(linear(256), leakyrelu, linear(10))",
            Some(0.78),
            Some(2_400_000),
            "ok | slow",
        ),
    ]
}

fn propose(budget: usize) -> ProposeContext {
    ProposeContext {
        task: "CIFAR-10 image classification, 32x32x3 inputs, 10 classes, 5 epochs.".into(),
        space_name: "einspace".into(),
        grammar_text: GRAMMAR.into(),
        metric: "validation accuracy".into(),
        maximize: true,
        history: history(),
        target: None,
        k: 3,
        history_budget_chars: budget,
    }
}

#[test]
fn system_snapshot() {
    let ctx = SystemContext {
        space_name: "einspace".into(),
        metric: "validation accuracy".into(),
        maximize: true,
    };
    insta::assert_snapshot!(Prompts::embedded().system(&ctx).expect("render"));
}

#[test]
fn propose_snapshot() {
    let r = Prompts::embedded()
        .propose(&propose(10_000))
        .expect("render");
    assert_eq!((r.history_shown, r.history_total), (4, 4));
    insta::assert_snapshot!(r.text);
}

#[test]
fn propose_first_round_snapshot() {
    let mut ctx = propose(10_000);
    ctx.history.clear();
    ctx.grammar_text.clear();
    ctx.k = 1;
    ctx.target = Some(0.9);
    insta::assert_snapshot!(Prompts::embedded().propose(&ctx).expect("render").text);
}

#[test]
fn repair_snapshot() {
    let ctx = RepairContext {
        task: "CIFAR-10 image classification.".into(),
        space_name: "einspace".into(),
        grammar_text: GRAMMAR.into(),
        candidate: "route(im2col(3,1,1), linear(64))".into(),
        error: "route at 1:1: expected 3 arguments (im2col, layer, col2im), found 2; the route is missing col2im".into(),
    };
    insta::assert_snapshot!(Prompts::embedded().repair(&ctx).expect("render"));
}

#[test]
fn predict_snapshot() {
    let ctx = PredictContext {
        task: "CIFAR-10 image classification.".into(),
        space_name: "einspace".into(),
        grammar_text: String::new(),
        metric: "validation accuracy".into(),
        maximize: true,
        examples: history(),
        history_budget_chars: 10_000,
        candidates: vec![
            "seq(linear(128), relu, linear(10))".into(),
            "route(im2col(5,1,2), linear(32), col2im)".into(),
        ],
    };
    insta::assert_snapshot!(Prompts::embedded().predict(&ctx).expect("render").text);
}

#[test]
fn history_is_capped_by_dropping_the_worst_rows() {
    let prompts = Prompts::embedded();
    let full = prompts.propose(&propose(10_000)).expect("render");
    let mut last = usize::MAX;
    for budget in [10_000, 400, 330, 250, 200, 100, 0] {
        let r = prompts.propose(&propose(budget)).expect("render");
        assert!(r.history_shown <= last, "fewer rows for a smaller budget");
        last = r.history_shown;
        let table: String = r
            .text
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        if r.history_shown > 0 {
            assert!(
                table.chars().count() <= budget,
                "budget {budget}: {} chars\n{table}",
                table.chars().count()
            );
        }
        // The rows kept are always the best ones, in order.
        let rows: Vec<&str> = table.lines().skip(2).collect();
        for (i, line) in rows.iter().enumerate() {
            assert!(
                full.text.contains(line) && line.starts_with(&format!("| {} |", i + 1)),
                "{line}"
            );
        }
        if r.history_shown < r.history_total {
            assert!(
                r.text
                    .contains(&format!("the best {} are shown", r.history_shown)),
                "{}",
                r.text
            );
        }
    }
    let small = prompts.propose(&propose(250)).expect("render");
    assert!(
        small.history_shown >= 1 && small.history_shown < 4,
        "{}",
        small.history_shown
    );
    assert!(
        small
            .text
            .contains("route(im2col(3,1,1), linear(64), col2im)"),
        "the best row survives"
    );
    assert!(
        !small.text.contains("seq(linear(8))"),
        "the failed row goes first"
    );
}

#[test]
fn strict_undefined_names_template_and_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("propose.j2"),
        "Task: {{ task }}\nSpace: {{ spcae_name }}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("history.j2"),
        "{% for row in history %}{{ row.candiate }}{% endfor %}",
    )
    .expect("write");
    let prompts = Prompts::with_overrides(dir.path()).expect("load");
    let e = prompts.propose(&propose(10_000)).expect_err("must fail");
    match &e {
        PromptError::Undefined {
            template, variable, ..
        } => {
            assert_eq!(
                (template.as_str(), variable.as_str()),
                ("history.j2", "row.candiate")
            )
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.path().join("history.j2"), "{{ history_shown }}").expect("write");
    let prompts = Prompts::with_overrides(dir.path()).expect("load");
    let e = prompts.propose(&propose(10_000)).expect_err("must fail");
    assert_eq!(
        e.to_string(),
        "template propose.j2, line 2: undefined variable `spcae_name`"
    );

    // A template that is not there, and one that does not parse.
    let e = prompts.render("nope.j2", &()).expect_err("unknown");
    assert!(
        e.to_string()
            .starts_with("no template named nope.j2; known: different.j2, evolve.j2, follow_plan.j2, history.j2, plans.j2, predict.j2, propose.j2"),
        "{e}"
    );
    std::fs::write(dir.path().join("repair.j2"), "{% if %}").expect("write");
    let e = Prompts::with_overrides(dir.path()).expect_err("syntax");
    assert!(
        e.to_string()
            .starts_with("template repair.j2: syntax error"),
        "{e}"
    );
}

#[test]
fn overrides_replace_file_by_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("system.j2"),
        "Custom system for {{ space_name }}.",
    )
    .expect("write");
    let prompts = Prompts::with_overrides(dir.path()).expect("load");
    let ctx = SystemContext {
        space_name: "nb201".into(),
        metric: "accuracy".into(),
        maximize: true,
    };
    assert_eq!(
        prompts.system(&ctx).expect("render"),
        "Custom system for nb201."
    );
    assert!(
        prompts.propose(&propose(10_000)).is_ok(),
        "the other templates stay embedded"
    );
    assert!(matches!(
        prompts.origins().get("system.j2"),
        Some(archsmith::llm::prompt::TemplateOrigin::File(_))
    ));
}
