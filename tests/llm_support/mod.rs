//! Helpers shared by the `llm_*` integration tests: config for a loopback server, success
//! bodies in each wire format, and a raw TCP server that resets connections.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use archsmith::llm::{LlmClient, LlmConfig, Message, ProviderKind};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const KEY_VAR: &str = "ARCHSMITH_TEST_KEY";
pub const KEY: &str = "sk-test-SECRET-123";

/// Stands in for the process environment: only `KEY_VAR` is set.
pub fn lookup(var: &str) -> Option<String> {
    (var == KEY_VAR).then(|| KEY.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

pub const WIRES: [Wire; 2] = [Wire::OpenAi, Wire::Anthropic];

impl Wire {
    pub fn path(self) -> &'static str {
        match self {
            Wire::OpenAi => "/chat/completions",
            Wire::Anthropic => "/v1/messages",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Wire::OpenAi => "gpt-4o-mini",
            Wire::Anthropic => "claude-3-5-haiku-latest",
        }
    }

    /// A success body with one choice per text (Anthropic: the first text only).
    pub fn ok_body(self, texts: &[&str], input: u64, output: u64) -> Value {
        match self {
            Wire::OpenAi => json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": self.model(),
                "choices": texts.iter().enumerate().map(|(i, t)| json!({
                    "index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"
                })).collect::<Vec<_>>(),
                "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
            }),
            Wire::Anthropic => json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": self.model(),
                "content": [{"type": "text", "text": texts[0]}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output}
            }),
        }
    }

    /// A config pointing at `base_url`, fast to fail: 1 s timeout, no retry delays.
    pub fn config(self, base_url: &str) -> LlmConfig {
        let kind = match self {
            Wire::OpenAi => ProviderKind::Openai,
            Wire::Anthropic => ProviderKind::Anthropic,
        };
        let mut cfg = LlmConfig::new(kind, self.model());
        cfg.base_url = Some(base_url.to_string());
        cfg.api_key_env = Some(KEY_VAR.to_string());
        cfg.timeout_secs = 1.0;
        cfg.retry.max_attempts = 4;
        cfg.retry.delay_scale = 0.0;
        cfg
    }
}

pub fn client(cfg: &LlmConfig) -> LlmClient {
    match LlmClient::from_config_with(cfg, None, &lookup) {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    }
}

pub fn msgs() -> Vec<Message> {
    vec![
        Message::system("You design networks."),
        Message::user("Propose one candidate."),
    ]
}

/// A raw HTTP server on loopback that resets the first `drop_first` connections (accept, then
/// close with SO_LINGER 0, which sends RST) and answers every later request with `body` as
/// a 200 JSON response. Returns its base URL and a counter of connections accepted.
pub async fn resetting_server(drop_first: usize, body: Value) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let body = body.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            if n < drop_first {
                let _ = sock.set_zero_linger();
                drop(sock);
                continue;
            }
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers, then as much body as Content-Length says.
                loop {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), count)
}
