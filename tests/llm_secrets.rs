//! A known fake key goes through recording, every kind of error and Debug formatting; then
//! every file written and every log line captured is searched for it.

mod llm_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use archsmith::llm::{build_provider, HttpSettings, LlmClient, OpenAiProvider};
use llm_support::{lookup, msgs, Wire, KEY, WIRES};
use serde_json::json;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_appears_nowhere() {
    let logs = Captured::default();
    let writer = logs.clone();
    // TRACE for every crate, reqwest and hyper included, so that a header logged anywhere
    // would be caught.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = String::new();
    for wire in WIRES {
        let server = MockServer::start().await;
        let key_header = match wire {
            Wire::OpenAi => ("authorization", format!("Bearer {KEY}")),
            Wire::Anthropic => ("x-api-key", KEY.to_string()),
        };
        // The key did reach the server: the success mock only answers when it is right.
        Mock::given(method("POST"))
            .and(header(key_header.0, key_header.1.as_str()))
            // A successful reply that echoes the key in the model's text.
            .respond_with(ResponseTemplate::new(200).set_body_json(wire.ok_body(
                &[&format!("fine; you sent {KEY}")],
                1,
                1,
            )))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        // Error bodies that echo the key back, as careless servers do.
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(401).set_body_json(
                json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
            ))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(500)
                    .set_body_string(format!("crash while handling key={KEY}")),
            )
            .up_to_n_times(4)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(format!("{{\"oops\": \"{KEY}")),
            )
            .mount(&server)
            .await;

        // Credentials in a base URL are refused, without repeating them.
        let with_creds = server
            .uri()
            .replacen("http://", &format!("http://user:{KEY}@"), 1);
        let e = LlmClient::from_config_with(&wire.config(&with_creds), None, &lookup)
            .expect_err("refused");
        assert!(e.to_string().contains("holds credentials"), "{e}");
        seen.push_str(&format!("{e}\n{e:?}\n"));
        let mut settings =
            HttpSettings::from_config(&wire.config(&server.uri()), &lookup).expect("settings");
        settings.base_url = with_creds.clone();
        seen.push_str(&format!("{settings:?}\n"));
        let e = OpenAiProvider::new(settings).expect_err("refused");
        seen.push_str(&format!("{e}\n{e:?}\n"));

        let mut cfg = wire.config(&server.uri());
        cfg.retry.max_attempts = 4;
        let path = dir.path().join("llm.jsonl");
        let client = LlmClient::from_config_with(&cfg, Some(&path), &lookup).expect("client");
        let ok = client
            .complete("propose.1", msgs())
            .await
            .expect("first call succeeds");
        assert_eq!(ok.texts(), ["fine; you sent ***"]);
        seen.push_str(&format!("{ok:?}\n"));
        for step in ["propose.2", "propose.3", "propose.4"] {
            let e = client.complete(step, msgs()).await.expect_err("fails");
            seen.push_str(&format!("{e}\n{e:?}\n"));
            seen.push_str(&format!("{:#}\n", anyhow::Error::new(e)));
        }
        seen.push_str(&format!("{cfg:?}\n{client:?}\n"));
        let settings = HttpSettings::from_config(&cfg, &lookup).expect("settings");
        seen.push_str(&format!(
            "{settings:?}\n{:?}\n",
            OpenAiProvider::new(settings.clone())
        ));
        seen.push_str(&format!(
            "{:?}\n",
            archsmith::llm::AnthropicProvider::new(settings)
        ));
        seen.push_str(&serde_json::to_string(&cfg).expect("config serialises"));
        let bare = build_provider(&cfg, &lookup).expect("provider");
        seen.push_str(bare.name());

        // A connection error to a dead port, with the key in the URL.
        let dead = Wire::OpenAi.config("http://127.0.0.1:9");
        let c = LlmClient::from_config_with(&dead, Some(&path), &lookup).expect("client");
        let e = c
            .complete("propose.5", msgs())
            .await
            .expect_err("no server");
        seen.push_str(&format!("{e}\n{e:?}\n"));
    }

    let recorded = std::fs::read_to_string(dir.path().join("llm.jsonl")).expect("llm.jsonl");
    let logs =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).to_string();
    assert_eq!(
        recorded.lines().count(),
        10,
        "every exchange recorded, failures included"
    );
    assert!(
        recorded.contains("***"),
        "the echoed key was scrubbed, not dropped"
    );
    assert!(logs.contains("retrying"), "logs were captured");
    for (what, text) in [
        ("llm.jsonl", &recorded),
        ("logs", &logs),
        ("formatted values", &seen),
    ] {
        assert!(!text.contains(KEY), "the key leaked into {what}:\n{text}");
        assert!(
            !text.contains("SECRET"),
            "part of the key leaked into {what}"
        );
    }
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let p = entry.expect("entry").path();
        let bytes = std::fs::read(&p).expect("read");
        assert!(
            !String::from_utf8_lossy(&bytes).contains("SECRET"),
            "{} holds the key",
            p.display()
        );
    }
}
