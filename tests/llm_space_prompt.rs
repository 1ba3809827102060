//! Replies checked against einspace: valid candidates come back canonical with their analysis,
//! invalid and unparseable ones with the validator's words, ready for a repair prompt; and a
//! propose-then-repair exchange through a scripted provider.

use std::fmt::Write;
use std::sync::Arc;

use archsmith::llm::prompt::{Prompts, ProposeContext, SystemContext};
use archsmith::llm::reply::ReplyError;
use archsmith::llm::space_prompt::{
    check_candidate, check_reply, grammar_text, repair_message, CheckedReply, Verdict,
};
use archsmith::llm::{
    BudgetConfig, LlmClient, Message, MockProvider, PriceTable, Role, SamplingParams,
};
use archsmith::space::{CheckOptions, Shape, Space};

fn einspace() -> Space {
    Space::load("einspace").expect("built-in space")
}

fn input() -> Shape {
    Shape::im(3, 32, 32)
}

/// A reply's verdicts in a form that reads well in a snapshot.
fn show(r: &CheckedReply) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "plan: {}", r.plan.as_deref().unwrap_or("-"));
    let _ = writeln!(s, "format: {:?}", r.format);
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for (i, c) in r.candidates.iter().enumerate() {
        let p = &c.proposal;
        let predicted = p.predicted.map_or("-".into(), |x| x.to_string());
        match &c.verdict {
            Verdict::Valid(v) => {
                let _ = writeln!(
                    s,
                    "[{}] line {} valid, predicted {predicted}\n    as written: {}\n    canonical:  {}\n    params {} flops {} output {}",
                    i + 1,
                    p.line,
                    p.text,
                    v.canonical,
                    v.analysis.params,
                    v.analysis.flops,
                    v.analysis.output
                );
            }
            Verdict::Invalid(bad) => {
                let _ = writeln!(
                    s,
                    "[{}] line {} invalid, predicted {predicted}\n    as written: {}\n{}",
                    i + 1,
                    p.line,
                    p.text,
                    bad.message
                        .lines()
                        .map(|l| format!("    {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
    s
}

#[test]
fn einspace_replies() {
    let space = einspace();
    insta::glob!("fixtures/llm/einspace_replies/*.txt", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let shown = match check_reply(&space, &text, input(), &CheckOptions::default()) {
            Ok(r) => show(&r),
            Err(e) => format!("error: {e}"),
        };
        insta::assert_snapshot!(shown);
    });
}

#[test]
fn verdicts_sort_valid_from_invalid() {
    let space = einspace();
    let text = std::fs::read_to_string("tests/fixtures/llm/einspace_replies/tagged_mixed.txt")
        .expect("fixture");
    let r = check_reply(&space, &text, input(), &CheckOptions::default()).expect("parses");
    let valid: Vec<&str> = r.valid().map(|(_, v)| v.canonical.as_str()).collect();
    assert_eq!(valid, ["route(im2col(3,1,1), linear(64), col2im)"]);
    let invalid: Vec<usize> = r.invalid().map(|(p, _)| p.line).collect();
    assert_eq!(invalid, [5, 7, 9], "in reply order");

    // The message is the diagnostics, one line each, and each diagnostic is in it.
    for c in &r.candidates {
        if let Verdict::Invalid(bad) = &c.verdict {
            assert_eq!(bad.message, repair_message(&bad.diagnostics));
            assert_eq!(bad.message.lines().count(), bad.diagnostics.len());
            for d in &bad.diagnostics {
                assert!(bad.message.contains(&d.to_string()));
            }
            let ctx = c
                .repair_context("a task", &space)
                .expect("invalid has a repair context");
            assert_eq!(
                (ctx.candidate.as_str(), ctx.error.as_str()),
                (bad.candidate.as_str(), bad.message.as_str())
            );
            assert_eq!(
                bad.candidate, c.proposal.text,
                "one-line replies show as written"
            );
        } else {
            assert!(c.repair_context("a task", &space).is_none());
        }
    }

    // A valid candidate comes back canonical, whatever its spacing.
    match check_candidate(
        &space,
        "route( im2col(3, 1, 1),linear(64) ,col2im )",
        input(),
        &CheckOptions::default(),
    ) {
        Verdict::Valid(v) => {
            assert_eq!(v.canonical, "route(im2col(3,1,1), linear(64), col2im)");
            assert_eq!(v.hash, v.node.hash_hex());
        }
        Verdict::Invalid(bad) => panic!("{}", bad.message),
    }
}

/// A candidate written over several lines, with comments and macros, is shown on one line, and
/// the positions in its diagnostics point into that line.
#[test]
fn multi_line_candidates_are_shown_on_one_line() {
    let space = einspace();
    let opts = CheckOptions::default();
    // Parses, fails a shape rule: shown canonical, macros expanded.
    let text = "# a conv\nlet conv(d) = route(im2col(3,1,1), linear(d), col2im)\nseq(conv(64),\n    route(permute21, linear(64), permute21))\n";
    let bad = match check_candidate(&space, text, input(), &opts) {
        Verdict::Invalid(bad) => bad,
        Verdict::Valid(v) => panic!("valid: {}", v.canonical),
    };
    assert_eq!(
        bad.candidate,
        "seq(route(im2col(3,1,1), linear(64), col2im), route(permute21, linear(64), permute21))"
    );
    assert!(
        bad.message.contains("permute21 at seq.1.route.0"),
        "{}",
        bad.message
    );

    // Does not parse: comments dropped, statements joined, the column is on that line.
    let text = "# forgot col2im\nseq(route(im2col(3,1,1),\n          linear(64)), norm)\n";
    let bad = match check_candidate(&space, text, input(), &opts) {
        Verdict::Invalid(bad) => bad,
        Verdict::Valid(v) => panic!("valid: {}", v.canonical),
    };
    assert_eq!(bad.candidate, "seq(route(im2col(3,1,1), linear(64)), norm)");
    assert!(
        bad.message
            .starts_with("- `route(im2col(3,1,1), linear(64))` at 1:5:"),
        "{}",
        bad.message
    );
}

#[test]
fn a_reply_without_candidates_is_the_parsers_error() {
    let r = check_reply(
        &einspace(),
        "Sorry, I cannot help.",
        input(),
        &CheckOptions::default(),
    );
    assert!(matches!(r, Err(ReplyError::NoCandidates { .. })), "{r:?}");
}

/// The exchange the agent loop will have: propose, check, send the invalid ones back for
/// repair with the validator's words, check the repair.
#[tokio::test]
async fn propose_then_repair_through_a_provider() {
    let space = einspace();
    let prompts = Prompts::embedded();
    let opts = CheckOptions::default();
    let mock = Arc::new(MockProvider::new());
    mock.push_texts([
        std::fs::read_to_string("tests/fixtures/llm/einspace_replies/tagged_mixed.txt")
            .expect("fixture"),
        "Sorry, no idea.".to_string(),
    ]);
    mock.push_text(
        "PLAN: fold back with col2im.\nCANDIDATE: route(im2col(3,1,1), linear(64), col2im)",
    );
    let client = LlmClient::new(
        mock.clone(),
        "mock-model",
        SamplingParams {
            n: 2,
            ..Default::default()
        },
        PriceTable::defaults(),
        BudgetConfig::default(),
        None,
    );
    let system = prompts
        .system(&SystemContext {
            space_name: space.name().into(),
            metric: "validation accuracy".into(),
            maximize: true,
        })
        .expect("system");
    let propose = prompts
        .propose(&ProposeContext {
            task: "Classify synthetic images.".into(),
            space_name: space.name().into(),
            grammar_text: grammar_text(&space),
            metric: "validation accuracy".into(),
            maximize: true,
            history: Vec::new(),
            target: None,
            k: 4,
            history_budget_chars: 6_000,
        })
        .expect("propose");
    let reply = client
        .complete(
            "propose.1",
            vec![Message::system(system.clone()), Message::user(propose.text)],
        )
        .await
        .expect("reply");
    let texts = reply.texts();
    assert_eq!(texts.len(), 2);
    let first = check_reply(&space, texts[0], input(), &opts).expect("candidates");
    assert_eq!((first.valid().count(), first.invalid().count()), (1, 3));
    assert!(
        check_reply(&space, texts[1], input(), &opts).is_err(),
        "an empty sample is a parse error, not a candidate"
    );

    let (bad_proposal, _) = first.invalid().next().expect("an invalid candidate");
    let bad = first
        .candidates
        .iter()
        .find(|c| c.proposal == *bad_proposal)
        .expect("present");
    let ctx = bad
        .repair_context("Classify synthetic images.", &space)
        .expect("invalid");
    let repair = prompts.repair(&ctx).expect("repair");
    let fixed = client
        .complete(
            "repair.1",
            vec![Message::system(system), Message::user(repair)],
        )
        .await
        .expect("reply");
    let fixed = check_reply(&space, fixed.texts()[0], input(), &opts).expect("candidate");
    assert_eq!(fixed.valid().count(), 1);

    // What the provider was sent: the grammar in the proposal, the diagnostics in the repair.
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let user = |i: usize| {
        requests[i]
            .messages
            .iter()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .expect("user message")
    };
    assert!(user(0).contains(&grammar_text(&space)));
    assert!(
        user(1).contains("permute21 applies to col tensors"),
        "{}",
        user(1)
    );
    assert!(user(1).contains("route(permute21, linear(64), permute21)"));
}
