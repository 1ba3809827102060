//! The real providers against loopback servers speaking each wire format, with faults
//! injected: rate limits, server errors, resets, stalls, malformed bodies, bad keys.

mod llm_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use archsmith::llm::{
    BudgetLimit, FinishReason, LlmClient, LlmError, Message, SamplingParams, RETRY_SCALE_ENV,
};
use llm_support::{client, lookup, msgs, resetting_server, Wire, KEY, KEY_VAR, WIRES};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

fn unwrap_exhausted(e: LlmError) -> (u32, LlmError) {
    match e {
        LlmError::RetriesExhausted { attempts, last, .. } => (attempts, *last),
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_success_with_several_samples() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(body_partial_json(json!({
            "model": "gpt-4o-mini", "n": 3, "temperature": 0.7,
            "messages": [{"role": "system", "content": "You design networks."},
                         {"role": "user", "content": "Propose one candidate."}]
        })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(
                &["a", "b", "c"],
                1000,
                300,
            )),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.samples_per_call = 3;
    cfg.temperature = Some(0.7);
    let c = client(&cfg);
    let r = c.complete("propose.1", msgs()).await.expect("reply");
    assert_eq!(r.texts(), ["a", "b", "c"]);
    assert!(r
        .choices
        .iter()
        .all(|c| c.finish_reason == FinishReason::Stop));
    assert_eq!(
        (r.attempts, r.usage.input_tokens, r.usage.output_tokens),
        (1, 1000, 300)
    );
    let u = c.usage();
    assert_eq!(
        (
            u.calls,
            u.succeeded,
            u.failed,
            u.input_tokens,
            u.output_tokens
        ),
        (1, 1, 0, 1000, 300)
    );
    // gpt-4o-mini: $0.15 / $0.60 per million.
    assert!(
        (u.cost_usd - (1000.0 * 0.15 + 300.0 * 0.60) / 1e6).abs() < 1e-12,
        "{}",
        u.cost_usd
    );
}

#[tokio::test]
async fn openai_tops_up_when_the_server_ignores_n() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(&["only one"], 10, 5)),
        )
        .expect(3)
        .mount(&server)
        .await;
    let c = client(&Wire::OpenAi.config(&server.uri()));
    let params = SamplingParams {
        n: 3,
        ..Default::default()
    };
    let r = c
        .complete_with("propose.1", msgs(), params)
        .await
        .expect("reply");
    assert_eq!(r.choices.len(), 3);
    assert_eq!((r.attempts, r.usage.total()), (3, 45));
    let bodies = server.received_requests().await.unwrap_or_default();
    let ns: Vec<_> = bodies
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .map(|v| v["n"].clone())
                .ok()
        })
        .collect();
    // The missing samples go out as single-sample requests at once (up to `concurrency`),
    // where n would be 1 and is left out.
    assert_eq!(
        ns,
        [
            Some(json!(3)),
            Some(serde_json::Value::Null),
            Some(serde_json::Value::Null)
        ]
    );
    assert_eq!(c.usage().calls, 1, "one logical call");
}

#[tokio::test]
async fn anthropic_success_with_several_samples_is_sequential_calls() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": "claude-3-5-haiku-latest", "max_tokens": 512, "system": "You design networks.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Propose one candidate."}]}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(Wire::Anthropic.ok_body(&["x"], 200, 50)))
        .expect(2)
        .mount(&server)
        .await;
    let mut cfg = Wire::Anthropic.config(&server.uri());
    cfg.samples_per_call = 2;
    cfg.max_tokens = Some(512);
    let c = client(&cfg);
    let r = c.complete("propose.1", msgs()).await.expect("reply");
    assert_eq!(r.texts(), ["x", "x"]);
    assert_eq!(
        (r.attempts, r.usage.input_tokens, r.usage.output_tokens),
        (2, 400, 100)
    );
    let u = c.usage();
    assert_eq!((u.calls, u.succeeded, u.total_tokens()), (1, 1, 500));
    assert!((u.cost_usd - (400.0 * 0.80 + 100.0 * 4.0) / 1e6).abs() < 1e-12);
}

#[tokio::test]
async fn rate_limit_with_retry_after_then_success() {
    for wire in WIRES {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(wire.path()))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "2")
                    .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}})),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(wire.path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(wire.ok_body(&["ok"], 7, 3)))
            .mount(&server)
            .await;
        let mut cfg = wire.config(&server.uri());
        // Scaled so that Retry-After: 2 becomes 200 ms while the back-off itself is ~1 ms:
        // the elapsed time shows the header was honoured.
        cfg.retry.delay_scale = 0.1;
        cfg.retry.initial_delay_ms = 10;
        let c = client(&cfg);
        let start = Instant::now();
        let r = c.complete("propose.1", msgs()).await.expect("reply");
        let elapsed = start.elapsed();
        assert_eq!((r.texts(), r.attempts), (vec!["ok"], 2), "{wire:?}");
        if std::env::var_os(RETRY_SCALE_ENV).is_none() {
            assert!(
                elapsed >= Duration::from_millis(190),
                "{wire:?}: waited only {elapsed:?}"
            );
        }
        assert_eq!(requests(&server).await, 2);
        let u = c.usage();
        assert_eq!(
            (u.calls, u.succeeded, u.total_tokens()),
            (1, 1, 10),
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn server_error_then_success() {
    for (wire, status) in [
        (Wire::OpenAi, 500),
        (Wire::OpenAi, 503),
        (Wire::Anthropic, 529),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(wire.path()))
            .respond_with(ResponseTemplate::new(status).set_body_string("upstream trouble"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(wire.path()))
            .respond_with(ResponseTemplate::new(200).set_body_json(wire.ok_body(&["fine"], 4, 2)))
            .mount(&server)
            .await;
        let c = client(&wire.config(&server.uri()));
        let r = c.complete("s", msgs()).await.expect("reply");
        assert_eq!(
            (r.texts(), r.attempts, r.usage.total()),
            (vec!["fine"], 2, 6),
            "{wire:?} {status}"
        );
        assert_eq!(c.usage().total_tokens(), 6);
    }
}

#[tokio::test]
async fn server_errors_until_attempts_run_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .mount(&server)
        .await;
    let c = client(&Wire::OpenAi.config(&server.uri()));
    let e = c.complete("s", msgs()).await.expect_err("must fail");
    assert_eq!(e.attempts(), 4);
    let msg = e.to_string();
    assert!(
        msg.contains("gave up after 4 attempts")
            && msg.contains("HTTP 502")
            && msg.contains("Bad Gateway"),
        "{msg}"
    );
    let (_, last) = unwrap_exhausted(e);
    assert!(matches!(last, LlmError::Status { status: 502, .. }));
    assert_eq!(requests(&server).await, 4);
    let u = c.usage();
    assert_eq!(
        (u.calls, u.succeeded, u.failed, u.total_tokens()),
        (1, 0, 1, 0)
    );
}

#[tokio::test]
async fn reset_connection_then_success() {
    for wire in WIRES {
        let (uri, accepted) = resetting_server(1, wire.ok_body(&["after reset"], 5, 5)).await;
        let c = client(&wire.config(&uri));
        let r = c.complete("s", msgs()).await.expect("reply");
        assert_eq!(
            (r.texts(), r.attempts),
            (vec!["after reset"], 2),
            "{wire:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(c.usage().total_tokens(), 10);
    }
}

#[tokio::test]
async fn reset_connections_until_attempts_run_out() {
    let (uri, accepted) = resetting_server(usize::MAX, json!({})).await;
    let c = client(&Wire::OpenAi.config(&uri));
    let e = c.complete("s", msgs()).await.expect_err("must fail");
    let (attempts, last) = unwrap_exhausted(e);
    assert_eq!(attempts, 4);
    assert!(
        matches!(&last, LlmError::Connection { url, .. } if url == &uri),
        "{last:?}"
    );
    let msg = last.to_string();
    assert!(msg.contains("reset") || msg.contains("closed"), "{msg}");
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
    assert_eq!(c.usage().failed, 1);
}

#[tokio::test]
async fn stalled_body_times_out_then_success() {
    for wire in WIRES {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(wire.ok_body(&["late"], 1, 1))
                    .set_delay(Duration::from_secs(3)),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(wire.ok_body(
                &["on time"],
                2,
                2,
            )))
            .mount(&server)
            .await;
        let mut cfg = wire.config(&server.uri());
        cfg.timeout_secs = 0.3;
        let c = client(&cfg);
        let start = Instant::now();
        let r = c.complete("s", msgs()).await.expect("reply");
        assert_eq!((r.texts(), r.attempts), (vec!["on time"], 2), "{wire:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the stall was waited out"
        );
        assert_eq!(
            c.usage().total_tokens(),
            4,
            "the timed-out reply is not counted"
        );
    }
}

#[tokio::test]
async fn stalled_body_every_time_is_a_timeout_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.timeout_secs = 0.2;
    cfg.retry.max_attempts = 2;
    let c = client(&cfg);
    let e = c.complete("s", msgs()).await.expect_err("must fail");
    assert!(
        e.to_string()
            .contains("no complete response within the request timeout of 200ms"),
        "{e}"
    );
    let (attempts, last) = unwrap_exhausted(e);
    assert_eq!(attempts, 2);
    assert!(matches!(last, LlmError::Timeout { .. }));
}

#[tokio::test]
async fn malformed_json_is_retried_a_bounded_number_of_times() {
    for wire in WIRES {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw("{\"choices\": [ {\"mess", "application/json"),
            )
            .mount(&server)
            .await;
        let mut cfg = wire.config(&server.uri());
        cfg.retry.max_attempts = 10;
        cfg.retry.bad_body_retries = 2;
        let c = client(&cfg);
        let e = c.complete("s", msgs()).await.expect_err("must fail");
        let msg = e.to_string();
        assert!(
            msg.contains("malformed response") && msg.contains("{\"choices\": [ {\"mess"),
            "{msg}"
        );
        let (attempts, last) = unwrap_exhausted(e);
        assert_eq!(attempts, 3, "{wire:?}: one try and two retries");
        assert!(matches!(last, LlmError::Malformed { .. }));
        assert_eq!(requests(&server).await, 3);
        assert_eq!(c.usage().total_tokens(), 0);
    }
}

#[tokio::test]
async fn malformed_json_once_then_success() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>proxy error</html>", "text/html"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(&["good"], 3, 3)),
        )
        .mount(&server)
        .await;
    let c = client(&Wire::OpenAi.config(&server.uri()));
    let r = c.complete("s", msgs()).await.expect("reply");
    assert_eq!(
        (r.texts(), r.attempts, c.usage().total_tokens()),
        (vec!["good"], 2, 6)
    );
}

#[tokio::test]
async fn empty_choice_list() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}}),
        ))
        .mount(&server)
        .await;
    let c = client(&Wire::OpenAi.config(&server.uri()));
    let e = c.complete("s", msgs()).await.expect_err("must fail");
    assert!(
        e.to_string().contains("the response held no choices"),
        "{e}"
    );
    let (attempts, last) = unwrap_exhausted(e);
    assert_eq!(attempts, 3);
    assert!(matches!(last, LlmError::EmptyChoices { .. }));
    let u = c.usage();
    assert_eq!((u.calls, u.failed, u.total_tokens()), (1, 1, 0));
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_names_the_variable() {
    for wire in WIRES {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!({
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let c = client(&wire.config(&server.uri()));
        let e = c.complete("s", msgs()).await.expect_err("must fail");
        let msg = e.to_string();
        assert!(matches!(e, LlmError::Auth { status: 401, .. }), "{e:?}");
        assert!(
            msg.contains(&format!("check the key in environment variable {KEY_VAR}")),
            "{msg}"
        );
        assert!(
            msg.contains("invalid x-api-key")
                && msg.starts_with(if wire == Wire::OpenAi {
                    "openai:"
                } else {
                    "anthropic:"
                }),
            "{msg}"
        );
        assert_eq!(e.attempts(), 1);
        assert_eq!(requests(&server).await, 1);
        let u = c.usage();
        assert_eq!((u.calls, u.failed, u.total_tokens()), (1, 1, 0));
    }
}

#[tokio::test]
async fn not_found_and_bad_model_point_at_the_model_name() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"message": "The model `gpt-5-turbo-x` does not exist", "code": "model_not_found"}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": "model 'llama9' not found, try pulling it first"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"detail": "temperature must be <= 1"})),
        )
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.model = "gpt-5-turbo-x".into();
    let c = client(&cfg);
    for expected in [
        format!("HTTP 404): The model `gpt-5-turbo-x` does not exist; check the model name `gpt-5-turbo-x` and the base URL {}", server.uri()),
        "HTTP 400): model 'llama9' not found, try pulling it first; check the model name `gpt-5-turbo-x`".to_string(),
        "HTTP 400): temperature must be <= 1; check the request parameters".to_string(),
    ] {
        let e = c.complete("s", msgs()).await.expect_err("must fail");
        assert!(matches!(e, LlmError::Rejected { .. }), "{e:?}");
        assert!(e.to_string().contains(&expected), "{e}\nexpected: {expected}");
        assert_eq!(e.attempts(), 1);
    }
    assert_eq!(requests(&server).await, 3, "none retried");
}

#[tokio::test]
async fn missing_key_variable_is_a_clear_error() {
    let mut cfg = Wire::Anthropic.config("http://127.0.0.1:9");
    cfg.api_key_env = Some("ARCHSMITH_NO_SUCH_VAR".into());
    let e = LlmClient::from_config_with(&cfg, None, &lookup).expect_err("must fail");
    assert_eq!(
        e.to_string(),
        "anthropic: environment variable ARCHSMITH_NO_SUCH_VAR is not set (or is empty); it should hold the API key"
    );
}

#[tokio::test]
async fn local_server_without_key_sends_no_auth_header() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(&["local"], 100, 100)),
        )
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.api_key_env = None;
    cfg.model = "qwen2.5-coder:7b".into();
    cfg.budget.max_usd = Some(0.01);
    let c = LlmClient::from_config_with(&cfg, None, &|_| None).expect("no key needed on loopback");
    let r = c.complete("s", msgs()).await.expect("reply");
    assert_eq!(r.texts(), ["local"]);
    let reqs = server.received_requests().await.unwrap_or_default();
    assert!(reqs[0].headers.get("authorization").is_none());
    assert_eq!(c.usage().cost_usd, 0.0, "local models are free");
}

#[tokio::test]
async fn budget_caps_end_the_run_before_the_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(
                &["r"],
                600_000,
                200_000,
            )),
        )
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.budget.max_calls = Some(3);
    cfg.budget.max_usd = Some(0.4);
    let c = client(&cfg);
    // Each call: 0.6M * 0.15 + 0.2M * 0.60 = $0.21; the third is refused at $0.42.
    c.complete("a", msgs()).await.expect("first");
    c.complete("b", msgs()).await.expect("second");
    let e = c.complete("c", msgs()).await.expect_err("over budget");
    match e {
        LlmError::BudgetExhausted { limit, used, cap } => {
            assert_eq!(limit, BudgetLimit::Dollars);
            assert!((used - 0.42).abs() < 1e-9 && cap == 0.4);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        requests(&server).await,
        2,
        "the refused call never reached the server"
    );
    let u = c.usage();
    assert_eq!((u.calls, u.succeeded, u.total_tokens()), (2, 2, 1_600_000));

    cfg.budget = Default::default();
    cfg.budget.max_tokens = Some(1);
    let c = client(&cfg);
    c.complete("a", msgs()).await.expect("first");
    let e = c.complete("b", msgs()).await.expect_err("tokens");
    assert!(matches!(
        e,
        LlmError::BudgetExhausted {
            limit: BudgetLimit::Tokens,
            ..
        }
    ));
}

#[tokio::test]
async fn dollar_cap_needs_a_price() {
    let mut cfg = Wire::OpenAi.config("https://llm.example.com/v1");
    cfg.model = "mystery-model".into();
    cfg.budget.max_usd = Some(1.0);
    let e = LlmClient::from_config_with(&cfg, None, &lookup).expect_err("no price");
    assert!(
        e.to_string().contains("model `mystery-model` has no price"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds_requests_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(Wire::OpenAi.ok_body(&["r"], 1, 1))
                .set_delay(Duration::from_millis(250)),
        )
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.concurrency = 1;
    let c = std::sync::Arc::new(client(&cfg));
    let start = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let c = std::sync::Arc::clone(&c);
            tokio::spawn(async move {
                c.complete(&format!("p.{i}"), vec![Message::user("hi")])
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.expect("join").expect("reply");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(740),
        "3 calls through 1 slot took {:?}",
        start.elapsed()
    );
    assert_eq!(c.usage().succeeded, 3);
}
