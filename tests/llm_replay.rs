//! Record a run against a loopback server, then replay it with the server gone: the same
//! replies in the same order, and a changed request fails naming its step.

mod llm_support;

use archsmith::llm::{
    read_records, LlmClient, LlmConfig, LlmError, LlmRecord, Message, ProviderKind,
};
use llm_support::{lookup, Wire};
use serde_json::json;
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn ask(i: u32) -> Vec<Message> {
    vec![
        Message::system("You design networks."),
        Message::user(format!("Task: cifar10\nRound {i}\nPropose one candidate.")),
    ]
}

/// Replies texts to the record run: the same request asked twice gets two different replies.
async fn record(dir: &std::path::Path) -> Vec<Result<Vec<String>, String>> {
    let server = MockServer::start().await;
    for (round, reply) in [(1, "first"), (1, "second"), (2, "third")] {
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"messages": [{}, {"content": format!("Task: cifar10\nRound {round}\nPropose one candidate.")}]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(&[reply, &format!("{reply}-b")], 10, 4)))
            .up_to_n_times(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": "context too long"}})),
        )
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.samples_per_call = 2;
    cfg.temperature = Some(0.8);
    let c =
        LlmClient::from_config_with(&cfg, Some(&dir.join("llm.jsonl")), &lookup).expect("client");
    let mut out = Vec::new();
    for (step, round) in [
        ("propose.1", 1),
        ("propose.2", 1),
        ("propose.3", 2),
        ("propose.4", 3),
    ] {
        let r = c.complete(step, ask(round)).await;
        out.push(
            r.map(|r| r.texts().iter().map(|t| t.to_string()).collect())
                .map_err(|e| e.to_string()),
        );
    }
    out
}

fn replay_config(dir: &std::path::Path) -> LlmConfig {
    let mut cfg = LlmConfig::new(ProviderKind::Replay, "gpt-4o-mini");
    cfg.replay_path = Some(dir.join("llm.jsonl"));
    cfg.samples_per_call = 2;
    cfg.temperature = Some(0.8);
    cfg
}

#[tokio::test]
async fn replay_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recorded = record(dir.path()).await; // the server is dropped here
    assert_eq!(
        recorded[0],
        Ok(vec!["first".to_string(), "first-b".to_string()])
    );
    assert_eq!(
        recorded[1],
        Ok(vec!["second".to_string(), "second-b".to_string()])
    );
    assert!(recorded[3]
        .as_ref()
        .is_err_and(|e| e.contains("context too long")));

    // The file reads back into the tagged enum, one exchange per call, failure included.
    let records = read_records(&dir.path().join("llm.jsonl")).expect("records");
    let steps: Vec<_> = records
        .iter()
        .map(|LlmRecord::Exchange(x)| x.step.as_str())
        .collect();
    assert_eq!(steps, ["propose.1", "propose.2", "propose.3", "propose.4"]);
    let LlmRecord::Exchange(first) = &records[0];
    assert_eq!(first.request_hash, first.request.hash());
    assert_eq!((first.attempts, first.usage.total()), (1, 14));
    assert!(first.cost_usd.is_some_and(|c| c > 0.0));
    let LlmRecord::Exchange(last) = &records[3];
    assert_eq!(
        last.error.as_ref().map(|e| e.kind.as_str()),
        Some("rejected")
    );
    let raw = std::fs::read_to_string(dir.path().join("llm.jsonl")).expect("read");
    let line: serde_json::Value =
        serde_json::from_str(raw.lines().next().unwrap_or("")).expect("json");
    assert_eq!(line["type"], "exchange");
    assert_eq!(
        line["data"]["request"]["params"],
        json!({"temperature": 0.8, "n": 2})
    );

    // Replay, recording again into a second file: same replies, same order, no network.
    let replay_dir = tempfile::tempdir().expect("tempdir");
    let c = LlmClient::from_config_with(
        &replay_config(dir.path()),
        Some(&replay_dir.path().join("llm.jsonl")),
        &|_| None,
    )
    .expect("replay client");
    let mut replayed = Vec::new();
    for (step, round) in [
        ("propose.1", 1),
        ("propose.2", 1),
        ("propose.3", 2),
        ("propose.4", 3),
    ] {
        let r = c.complete(step, ask(round)).await;
        replayed.push(
            r.map(|r| r.texts().iter().map(|t| t.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.to_string()),
        );
    }
    for (a, b) in recorded.iter().zip(&replayed).take(3) {
        assert_eq!(a, b);
    }
    let e = replayed[3]
        .as_ref()
        .expect_err("the recorded failure fails again");
    assert!(
        e.starts_with("replay: step propose.4: the recorded call failed (rejected)")
            && e.contains("context too long"),
        "{e}"
    );
    let u = c.usage();
    assert_eq!((u.succeeded, u.failed, u.total_tokens()), (3, 1, 42));
    let again = read_records(&replay_dir.path().join("llm.jsonl")).expect("re-recorded");
    assert_eq!(again.len(), 4);

    // One more identical request than was recorded.
    let e = c
        .complete("propose.5", ask(1))
        .await
        .expect_err("exhausted");
    assert!(
        e.to_string()
            .contains("holds 2 replies for this request and all were used"),
        "{e}"
    );
}

#[tokio::test]
async fn an_altered_request_fails_naming_the_step_with_a_diff() {
    let dir = tempfile::tempdir().expect("tempdir");
    record(dir.path()).await;
    let c = LlmClient::from_config_with(&replay_config(dir.path()), None, &|_| None)
        .expect("replay client");
    c.complete("propose.1", ask(1))
        .await
        .expect("unchanged request replays");

    let mut changed = ask(2);
    changed[1].content = changed[1].content.replace("cifar10", "cifar100");
    let e = c
        .complete("propose.3", changed)
        .await
        .expect_err("no recording");
    let LlmError::ReplayMiss { step, detail, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(step, "propose.3");
    let msg = e.to_string();
    assert!(
        msg.starts_with("replay: no recorded reply for step propose.3 (request sha256:"),
        "{msg}"
    );
    assert!(
        detail.contains("nearest recorded request, step propose.3"),
        "{detail}"
    );
    assert!(
        detail.contains("-Task: cifar10\n+Task: cifar100\n"),
        "{detail}"
    );
    assert!(
        detail.contains(" Round 2\n"),
        "unchanged lines are context: {detail}"
    );

    // A changed sampling parameter is a different request too.
    let mut cfg = replay_config(dir.path());
    cfg.temperature = Some(0.2);
    let c = LlmClient::from_config_with(&cfg, None, &|_| None).expect("replay client");
    let e = c
        .complete("propose.9", ask(2))
        .await
        .expect_err("no recording")
        .to_string();
    assert!(
        e.contains(
            "-params: {\"temperature\":0.8,\"n\":2}\n+params: {\"temperature\":0.2,\"n\":2}"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_torn_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    record(dir.path()).await;
    let path = dir.path().join("llm.jsonl");
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str("{\"type\":\"exchange\",\"data\":{\"step\":");
    std::fs::write(&path, text).expect("write");
    let e =
        LlmClient::from_config_with(&replay_config(dir.path()), None, &|_| None).expect_err("torn");
    assert!(e.to_string().contains("llm.jsonl: line 5:"), "{e}");
}
