//! `ARCHSMITH_RETRY_SCALE=0` switches retry delays off, overriding the config. Its own test
//! binary, so setting the variable cannot race other tests.

mod llm_support;

use std::time::{Duration, Instant};

use llm_support::{client, msgs, Wire};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn env_var_scales_retry_delays_to_zero() {
    std::env::set_var(archsmith::llm::RETRY_SCALE_ENV, "0");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(Wire::OpenAi.ok_body(&["ok"], 1, 1)))
        .mount(&server)
        .await;
    let mut cfg = Wire::OpenAi.config(&server.uri());
    cfg.retry.delay_scale = 1.0; // the config alone would wait 30 s twice
    let start = Instant::now();
    let r = client(&cfg).complete("s", msgs()).await.expect("reply");
    assert_eq!(r.attempts, 3);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
