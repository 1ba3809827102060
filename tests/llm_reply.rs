//! Reply parsing over a fixture set of replies (one snapshot per file): the requested format,
//! markdown drift, fenced blocks, numbered lists, and replies with nothing to take.

use archsmith::llm::reply::{parse_predictions, parse_reply, ReplyError};

#[test]
fn proposal_replies() {
    insta::glob!("fixtures/llm/replies/*.txt", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let shown = match parse_reply(&text) {
            Ok(parsed) => serde_json::to_string_pretty(&parsed).expect("json"),
            Err(e) => format!("error: {e}"),
        };
        insta::assert_snapshot!(shown);
    });
}

#[test]
fn prediction_replies() {
    insta::glob!("fixtures/llm/predictions/*.txt", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let shown = match parse_predictions(&text, 3) {
            Ok(parsed) => serde_json::to_string_pretty(&parsed).expect("json"),
            Err(e) => format!("error: {e}"),
        };
        insta::assert_snapshot!(shown);
    });
}

#[test]
fn failure_reasons_are_precise() {
    let garbage = "I cannot help with that.";
    assert_eq!(
        parse_reply(garbage),
        Err(ReplyError::NoCandidates {
            reason: "no line starting with CANDIDATE:, no fenced block and no numbered list found in a 24-character reply".into()
        })
    );
    let e = parse_reply("CANDIDATE:\n\nPLAN: x")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1 line(s) starting with CANDIDATE: but nothing after the tag"),
        "{e}"
    );
}

proptest::proptest! {
    /// Whatever the model writes, the parser returns and never panics.
    #[test]
    fn never_panics(text in "\\PC{0,300}") {
        let _ = parse_reply(&text);
        let _ = parse_predictions(&text, 3);
    }

    /// A reply in the requested format gives back exactly the candidates and scores written.
    #[test]
    fn requested_format_round_trips(
        cands in proptest::collection::vec(("[a-z]{1,8}", proptest::collection::vec(0u32..512, 0..4), 0.0f64..1.0), 1..6)
    ) {
        let mut text = String::from("PLAN: test plan.\n");
        let mut expected = Vec::new();
        for (name, args, score) in &cands {
            let c = if args.is_empty() { name.clone() } else {
                format!("{name}({})", args.iter().map(|a| format!("linear({a})")).collect::<Vec<_>>().join(", "))
            };
            text.push_str(&format!("CANDIDATE: {c}\nPREDICTED: {score}\n"));
            expected.push((c, *score));
        }
        let parsed = parse_reply(&text).expect("parses");
        let got: Vec<(String, f64)> = parsed.proposals.iter().map(|p| (p.text.clone(), p.predicted.unwrap_or(-1.0))).collect();
        proptest::prop_assert_eq!(got, expected);
        proptest::prop_assert_eq!(parsed.plan.as_deref(), Some("test plan."));
    }
}
