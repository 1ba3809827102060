//! A model on this machine: llama.cpp's `llama-server`, started by the run (or found running),
//! spoken to through its `/completion` endpoint with a plain-text prompt, or through its chat
//! endpoint with a chat template the server is told to use.
//!
//! [`LocalServer`] owns the child process: it checks the binary and the model file first
//! (present, a GGUF file, the expected SHA-256), refuses a taken port, waits until `GET
//! /health` answers, and stops the server when dropped. [`LocalProvider`] sends the requests
//! and tells a server that went away ([`LlmError::Unavailable`], which pauses a run) from one
//! that failed a request.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::config::{GrammarFormat, LlmConfig, LocalConfig, LocalEndpoint};
use super::error::LlmError;
use super::http::{HttpCore, HttpSettings};
use super::provider::ChatProvider;
use super::secret::excerpt;
use super::types::{ChatRequest, ChatResponse, Choice, FinishReason, Role, TokenUsage};

const NAME: &str = "local";

/// SHA-256 of the model `scripts/setup-llm.sh` installs (Gemma 3 270M, Q4_K_M).
pub const DEFAULT_MODEL_SHA256: &str =
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// File name of that model.
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// Overrides where `scripts/setup-llm.sh` installs (default `~/.cache/archsmith/llm`).
pub const LLM_HOME_ENV: &str = "ARCHSMITH_LLM_HOME";
/// The `llama-server` binary, when not configured.
pub const SERVER_ENV: &str = "ARCHSMITH_LLAMA_SERVER";
/// The model file, when not configured.
pub const MODEL_ENV: &str = "ARCHSMITH_LLM_MODEL";

/// Where `scripts/setup-llm.sh` installs: `$ARCHSMITH_LLM_HOME` or `~/.cache/archsmith/llm`.
pub fn install_home(lookup: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(h) = lookup(LLM_HOME_ENV).filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    lookup("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/archsmith/llm"))
}

/// The server binary and model file a config means, with the defaults filled in.
fn resolve_paths(
    local: &LocalConfig,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let home = install_home(lookup);
    let server = local
        .server
        .clone()
        .or_else(|| {
            lookup(SERVER_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| home.as_ref().map(|h| h.join("bin/llama-server")));
    let model = local
        .model_path
        .clone()
        .or_else(|| {
            lookup(MODEL_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            home.as_ref()
                .map(|h| h.join("models").join(DEFAULT_MODEL_FILE))
        });
    (server, model)
}

/// Whether the default local model is installed (both files present), for choosing the
/// default strategy. Does not read the model.
pub fn installed(lookup: &dyn Fn(&str) -> Option<String>) -> Option<(PathBuf, PathBuf)> {
    match resolve_paths(&LocalConfig::default(), lookup) {
        (Some(s), Some(m)) if s.is_file() && m.is_file() => Some((s, m)),
        _ => None,
    }
}

fn unavailable(message: String) -> LlmError {
    LlmError::Unavailable {
        provider: NAME.into(),
        message,
    }
}

/// Checks that `path` is a GGUF file with the expected SHA-256 (when one is expected).
fn check_model(path: &Path, sha256: Option<&str>) -> Result<(), LlmError> {
    let setup =
        "install it with `scripts/setup.sh --llm`, or set `[llm.local] model_path` to a GGUF file";
    let mut f = std::fs::File::open(path).map_err(|e| {
        LlmError::Config(format!("local model file {}: {e}; {setup}", path.display()))
    })?;
    let mut magic = [0u8; 4];
    if f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(LlmError::Config(format!(
            "local model file {} is not a GGUF file (it does not start with `GGUF`); {setup}",
            path.display()
        )));
    }
    if let Some(want) = sha256 {
        let mut f = std::fs::File::open(path)
            .map_err(|e| LlmError::Config(format!("local model file {}: {e}", path.display())))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| {
                LlmError::Config(format!("local model file {}: {e}", path.display()))
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let have: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if !have.eq_ignore_ascii_case(want) {
            return Err(LlmError::Config(format!(
                "local model file {} is corrupt: its SHA-256 is {have}, expected {want}; delete it and run `scripts/setup.sh --llm` again",
                path.display()
            )));
        }
    }
    Ok(())
}

/// One `GET /health` over plain TCP (no async runtime needed): `Ok(true)` when the server
/// answers 200 with status ok, `Ok(false)` while it loads (503), `Err` when nothing listens.
pub fn health(port: u16, timeout: Duration) -> std::io::Result<bool> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut s = TcpStream::connect_timeout(&addr.into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status_ok = text
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    Ok(status_ok && text.contains("ok"))
}

/// A free port on 127.0.0.1 (the OS's pick; free when asked, so a tiny race remains).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The last lines of the server's log, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n    ");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        format!("\n    {tail}")
    }
}

/// A running `llama-server` this process started; stopped when dropped.
#[derive(Debug)]
pub struct LocalServer {
    child: Mutex<Child>,
    port: u16,
    log: PathBuf,
}

impl LocalServer {
    /// Checks the inputs, starts the server on 127.0.0.1 and waits until it answers.
    /// `log_dir`: where `llama-server.log` goes (the run folder).
    pub fn start(
        local: &LocalConfig,
        log_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        let (server, model) = resolve_paths(local, lookup);
        let setup = "run `scripts/setup.sh --llm`, or set `[llm.local] server`";
        let server = server.ok_or_else(|| {
            LlmError::Config(format!(
                "no llama-server binary configured and no HOME; {setup}"
            ))
        })?;
        if !server.is_file() {
            return Err(LlmError::Config(format!(
                "llama-server not found at {}; {setup}",
                server.display()
            )));
        }
        let model = model.ok_or_else(|| {
            LlmError::Config("no model file configured; set `[llm.local] model_path`".into())
        })?;
        let expected = local.sha256.clone().or_else(|| {
            (local.model_path.is_none()
                && model.file_name().and_then(|n| n.to_str()) == Some(DEFAULT_MODEL_FILE))
            .then(|| DEFAULT_MODEL_SHA256.to_string())
        });
        check_model(&model, expected.as_deref())?;
        let port = match local.port {
            Some(p) => {
                if TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_err() {
                    return Err(LlmError::Config(format!(
                        "port {p} on 127.0.0.1 is already taken (another llama-server? `scripts/llm-server.sh status`); set another `[llm.local] port`, or leave it out for a free one"
                    )));
                }
                p
            }
            None => free_port().map_err(|e| {
                LlmError::Config(format!("cannot find a free port on 127.0.0.1: {e}"))
            })?,
        };
        let log = log_dir.join("llama-server.log");
        let out = std::fs::File::create(&log).map_err(|source| LlmError::Io {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LlmError::Io {
            path: log.clone(),
            source,
        })?;
        let mut cmd = Command::new(&server);
        cmd.arg("-m")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-t", &local.threads.to_string()])
            .args(["-c", &local.ctx.to_string()])
            // One slot: requests queue rather than split the 2 cores and the context.
            .args(["--parallel", "1"])
            .arg("--no-webui")
            // Weight repacking picks ggml's AMX kernels on CPUs that report AMX, and those
            // crash under hypervisors that do not enable AMX tiles (this machine's kind);
            // without repacking the AVX2 kernels run.
            .arg("--no-repack")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if local.endpoint == LocalEndpoint::Chat {
            cmd.args(["--chat-template", &local.chat_template]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| LlmError::Config(format!("cannot start {}: {e}", server.display())))?;
        let me = LocalServer {
            child: Mutex::new(child),
            port,
            log,
        };
        tracing::info!(server = %server.display(), model = %model.display(), port, "starting the local model server");
        let t0 = Instant::now();
        let timeout = Duration::from_secs_f64(local.start_timeout_secs);
        loop {
            if let Some(status) = me.exited() {
                return Err(LlmError::Config(format!(
                    "llama-server exited ({status}) before it answered; the end of its log {}:{}",
                    me.log.display(),
                    log_tail(&me.log, 8)
                )));
            }
            if let Ok(true) = health(port, Duration::from_secs(2)) {
                break;
            }
            if t0.elapsed() > timeout {
                return Err(LlmError::Config(format!(
                    "llama-server did not answer /health on 127.0.0.1:{port} within {:.0} s (raise `[llm.local] start_timeout_secs`?); the end of its log {}:{}",
                    timeout.as_secs_f64(),
                    me.log.display(),
                    log_tail(&me.log, 8)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::info!(
            port,
            seconds = t0.elapsed().as_secs_f64(),
            "local model server up at http://127.0.0.1:{port}"
        );
        Ok(me)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id (tests kill it to simulate a crash).
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// How the server exited, when it has.
    pub fn exited(&self) -> Option<String> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
            let _ = c.wait();
            tracing::info!(port = self.port, "stopped the local model server");
        }
    }
}

/// The provider for `provider = "local"`.
#[derive(Debug)]
pub struct LocalProvider {
    core: HttpCore,
    /// `None` when the server was already running (`autostart = false`).
    server: Option<LocalServer>,
    endpoint: LocalEndpoint,
}

impl LocalProvider {
    /// Starts the server (when `autostart`), or checks that one answers on the port.
    pub fn from_config(
        cfg: &LlmConfig,
        log_dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, LlmError> {
        let local = cfg.local_settings();
        let server = if local.autostart {
            Some(LocalServer::start(&local, log_dir, lookup)?)
        } else {
            let port = local.port.unwrap_or_default();
            match health(port, Duration::from_secs(2)) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(LlmError::Config(format!(
                        "the llama-server on 127.0.0.1:{port} is still loading its model; try again in a moment"
                    )))
                }
                Err(e) => {
                    return Err(LlmError::Config(format!(
                        "no llama-server answers on 127.0.0.1:{port} ({e}); start one with `scripts/llm-server.sh start`, or set `[llm.local] autostart = true`"
                    )))
                }
            }
            None
        };
        let port = server
            .as_ref()
            .map_or(local.port.unwrap_or_default(), |s| s.port);
        let mut settings = HttpSettings {
            base_url: format!("http://127.0.0.1:{port}"),
            key: None,
            key_env: None,
            timeout: cfg.timeout(),
            concurrency: cfg.concurrency,
            retry: cfg.retry.clone(),
        };
        // A local server that refuses connections is gone, not busy: two quick tries.
        settings.retry.max_attempts = settings.retry.max_attempts.min(2);
        Ok(Self {
            core: HttpCore::new(NAME, settings, HeaderMap::new())?,
            server,
            endpoint: local.endpoint,
        })
    }

    pub fn server(&self) -> Option<&LocalServer> {
        self.server.as_ref()
    }

    pub fn base_url(&self) -> &str {
        &self.core.base_url
    }

    /// A failed call: a server that exited or stopped answering is `Unavailable`.
    fn gone(&self, e: LlmError) -> LlmError {
        let transport = match &e {
            LlmError::Connection { .. } => true,
            LlmError::RetriesExhausted { last, .. } => {
                matches!(**last, LlmError::Connection { .. })
            }
            _ => false,
        };
        if let Some(s) = &self.server {
            if let Some(status) = s.exited() {
                return unavailable(format!(
                    "the local model server (127.0.0.1:{}) exited ({status}) during the run; the end of its log {}:{}",
                    s.port,
                    s.log.display(),
                    log_tail(&s.log, 5)
                ));
            }
        }
        if transport {
            return unavailable(format!(
                "the local model server at {} does not answer: {e}",
                self.core.base_url
            ));
        }
        e
    }
}

/// The plain-text prompt for `/completion`: the system text, the user text, and nothing
/// else. A base model continues the document; the templates end by showing the reply format.
pub fn plain_prompt(req: &ChatRequest) -> String {
    let mut out = String::new();
    for m in &req.messages {
        if m.role == Role::Assistant {
            out.push_str("\n\nReply:\n");
        } else if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(m.content.trim_end());
    }
    out.push_str("\n\n");
    out
}

fn sampling_fields(req: &ChatRequest, body: &mut Map<String, Value>) {
    if let Some(t) = req.params.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.params.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(g) = &req.grammar {
        if g.format == GrammarFormat::Gbnf {
            body.insert("grammar".into(), json!(&*g.text));
        }
    }
}

/// `/completion`'s body: prompt, limits, sampling, grammar.
pub(crate) fn completion_body(req: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("prompt".into(), json!(plain_prompt(req)));
    body.insert(
        "n_predict".into(),
        json!(req.params.max_tokens.map_or(-1, i64::from)),
    );
    body.insert("cache_prompt".into(), json!(true));
    sampling_fields(req, &mut body);
    Value::Object(body)
}

#[derive(Deserialize)]
struct CompletionReply {
    content: Option<String>,
    stop_type: Option<String>,
    tokens_evaluated: Option<u64>,
    tokens_predicted: Option<u64>,
    timings: Option<Timings>,
}

/// llama.cpp's timings of one request, logged for the speed figures.
#[derive(Deserialize, Debug, Default, Clone, Copy)]
pub struct Timings {
    pub prompt_n: Option<f64>,
    pub prompt_per_second: Option<f64>,
    pub predicted_n: Option<f64>,
    pub predicted_per_second: Option<f64>,
}

fn parse_completion(body: &[u8]) -> Result<(Choice, TokenUsage, Timings), LlmError> {
    let malformed = |reason: String| LlmError::Malformed {
        provider: NAME.into(),
        reason,
        excerpt: excerpt(&String::from_utf8_lossy(body), 200),
    };
    let r: CompletionReply = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not a /completion JSON body ({e})")))?;
    let text = r
        .content
        .ok_or_else(|| malformed("no `content` field".into()))?;
    let finish_reason = match r.stop_type.as_deref() {
        Some("limit") => FinishReason::Length,
        Some("eos") | Some("word") => FinishReason::Stop,
        Some(other) => FinishReason::Other(other.into()),
        None => FinishReason::Unknown,
    };
    Ok((
        Choice {
            text,
            finish_reason,
        },
        TokenUsage {
            input_tokens: r.tokens_evaluated.unwrap_or(0),
            output_tokens: r.tokens_predicted.unwrap_or(0),
        },
        r.timings.unwrap_or_default(),
    ))
}

#[async_trait]
impl ChatProvider for LocalProvider {
    fn name(&self) -> &str {
        NAME
    }

    /// `n` samples are `n` requests, sent concurrently up to `concurrency` (the server has
    /// one slot, so they queue there) and collected in order.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let wanted = request.params.n.max(1) as usize;
        let this = self;
        let one = move |_i: usize| async move {
            match self.endpoint {
                LocalEndpoint::Completion => {
                    let body = completion_body(request);
                    let ((choice, usage, t), attempts) = this
                        .core
                        .post("/completion", &body, &request.model, parse_completion)
                        .await?;
                    tracing::debug!(step = %request.step, prompt_n = ?t.prompt_n, prompt_per_second = ?t.prompt_per_second,
                        predicted_n = ?t.predicted_n, predicted_per_second = ?t.predicted_per_second, "local completion");
                    Ok::<_, LlmError>((vec![choice], usage, attempts))
                }
                LocalEndpoint::Chat => {
                    let mut body = super::openai::request_body(request, 1);
                    if let (Some(obj), Some(g)) = (body.as_object_mut(), &request.grammar) {
                        obj.insert("grammar".into(), json!(&*g.text));
                    }
                    let (parsed, attempts) = this
                        .core
                        .post(
                            "/v1/chat/completions",
                            &body,
                            &request.model,
                            super::openai::parse_body,
                        )
                        .await?;
                    let (choices, usage) = parsed.into_parts();
                    Ok((choices, usage, attempts))
                }
            }
        };
        let results = futures_util::future::join_all((0..wanted).map(one)).await;
        let mut out = ChatResponse {
            choices: Vec::with_capacity(wanted),
            usage: TokenUsage::default(),
            attempts: 0,
            model: None,
        };
        for r in results {
            let (choices, usage, attempts) = r.map_err(|e| self.gone(e))?;
            out.choices.extend(choices.into_iter().take(1));
            out.usage += usage;
            out.attempts += attempts;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::types::{GrammarConstraint, Message, SamplingParams};

    fn req() -> ChatRequest {
        ChatRequest {
            step: "s".into(),
            model: "gemma".into(),
            messages: vec![Message::system("You design."), Message::user("Propose.\n")],
            params: SamplingParams {
                temperature: Some(0.7),
                max_tokens: Some(50),
                ..Default::default()
            },
            grammar: Some(GrammarConstraint {
                format: GrammarFormat::Gbnf,
                text: "root ::= \"x\"".into(),
            }),
        }
    }

    #[test]
    fn completion_body_has_prompt_limit_and_grammar() {
        let b = completion_body(&req());
        assert_eq!(b["prompt"], json!("You design.\n\nPropose.\n\n"));
        assert_eq!(b["n_predict"], json!(50));
        assert_eq!(b["grammar"], json!("root ::= \"x\""));
        assert_eq!(b["temperature"], json!(0.7));
    }

    #[test]
    fn completion_reply_parses() {
        let (c, u, t) = parse_completion(
            br#"{"content":"PLAN: x","stop_type":"limit","tokens_evaluated":12,"tokens_predicted":3,"timings":{"prompt_per_second":250.0}}"#,
        )
        .unwrap();
        assert_eq!(c.text, "PLAN: x");
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert_eq!(u.input_tokens, 12);
        assert_eq!(t.prompt_per_second, Some(250.0));
        assert!(matches!(
            parse_completion(b"{}"),
            Err(LlmError::Malformed { .. })
        ));
    }

    #[test]
    fn model_checks_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.gguf");
        let e = check_model(&missing, None).unwrap_err().to_string();
        assert!(
            e.contains("none.gguf") && e.contains("setup.sh --llm"),
            "{e}"
        );
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, b"not a model").unwrap();
        let e = check_model(&bad, None).unwrap_err().to_string();
        assert!(e.contains("not a GGUF file"), "{e}");
        let wrong = dir.path().join("wrong.gguf");
        std::fs::write(&wrong, b"GGUF and some bytes").unwrap();
        check_model(&wrong, None).unwrap();
        let e = check_model(&wrong, Some(DEFAULT_MODEL_SHA256))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is corrupt") && e.contains(DEFAULT_MODEL_SHA256),
            "{e}"
        );
    }

    #[test]
    fn missing_server_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalConfig {
            server: Some(dir.path().join("no-llama-server")),
            ..Default::default()
        };
        let e = LocalServer::start(&local, dir.path(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llama-server not found") && e.contains("setup.sh --llm"),
            "{e}"
        );
    }
}
