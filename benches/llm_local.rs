//! The local model's proposals, measured (not a timed test): for einspace and one program
//! space (`activation`), `N` propose calls of `k` candidates each with `constrain = "none"` and
//! with `constrain = "grammar"`, every candidate checked (syntax, grammar membership, shapes,
//! limits) as the `llm` strategy checks it; and the seconds per call with llama.cpp's own
//! prompt and generation speeds.
//!
//! Needs the local model (`scripts/setup.sh --llm`). Run with
//! `cargo bench --bench llm_local` (knobs: ARCHSMITH_BENCH_CALLS, default 50 calls of k = 4,
//! i.e. 200 candidates per cell; ARCHSMITH_BENCH_CHAT_CALLS, default 10, for the chat endpoint,
//! measured only to choose between the endpoints; ARCHSMITH_BENCH_SPACES, default `einspace,activation`;
//! ARCHSMITH_BENCH_CELLS, default `grammar,none,chat`, to measure only some of the three cells). It
//! starts its own llama-server on a free port and prints a Markdown table; the raw figures go
//! to `target/llm_local_bench.json`.

use archsmith::llm::local::{install_home, installed, LocalServer};
use archsmith::llm::prompt::{Prompts, ProposeContext, SystemContext};
use archsmith::llm::space_prompt::{check_reply, grammar_text, Verdict};
use archsmith::llm::{
    Constrain, LlmClient, LlmConfig, LocalConfig, LocalEndpoint, Message, ProviderKind,
};
use archsmith::run::{Experiment, Settings};
use archsmith::space::{export_cfg, CfgFormat, CfgOptions, ReplyShape};
use std::time::Instant;

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn experiment(space: &str) -> Experiment {
    let task = if space == "einspace" {
        "textures"
    } else {
        "teacher"
    };
    let text = format!(
        "seed = 1\n[space]\nname = \"{space}\"\n[task]\nname = \"{task}\"\n[strategy]\nkind = \"random\"\n"
    );
    Experiment::resolve(
        Settings::from_toml(&text, "bench").expect("settings"),
        "bench",
    )
    .expect("experiment")
}

#[derive(serde::Serialize, Default)]
struct Cell {
    space: String,
    constrain: String,
    endpoint: String,
    calls: usize,
    candidates: usize,
    valid: usize,
    distinct_valid: usize,
    unusable_replies: usize,
    seconds: f64,
    prompt_tokens: u64,
    output_tokens: u64,
}

fn main() {
    let Some(_) = installed(&env) else {
        eprintln!("the local model is not installed (scripts/setup.sh --llm); nothing to measure");
        return;
    };
    let calls: usize = env("ARCHSMITH_BENCH_CALLS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // The chat endpoint is measured only to choose between the endpoints: fewer calls.
    let chat_calls: usize = env("ARCHSMITH_BENCH_CHAT_CALLS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let spaces = env("ARCHSMITH_BENCH_SPACES").unwrap_or_else(|| "einspace,activation".into());
    let wanted = env("ARCHSMITH_BENCH_CELLS").unwrap_or_else(|| "grammar,none,chat".into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let k = 4;
    let log_dir = install_home(&env)
        .unwrap_or_else(std::env::temp_dir)
        .join("run");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let server = LocalServer::start(&LocalConfig::default(), &log_dir, &env).expect("server");
    eprintln!("llama-server at {}", server.base_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The same model behind the chat endpoint, with the server's built-in Gemma chat
    // template (the file has none, and the default ChatML is not Gemma's), for the choice
    // between the two endpoints.
    let chat_dir = log_dir.join("chat");
    std::fs::create_dir_all(&chat_dir).expect("log dir");
    let chat_server = LocalServer::start(
        &LocalConfig {
            endpoint: LocalEndpoint::Chat,
            ..Default::default()
        },
        &chat_dir,
        &env,
    )
    .expect("chat server");
    let prompts = Prompts::embedded();
    let mut cells = Vec::new();
    let mut speeds = Vec::new();
    for space in spaces.split(',').map(str::trim) {
        let exp = experiment(space);
        let ctx = ProposeContext {
            task: format!("{}\n{}", exp.task.name, exp.task.description),
            space_name: exp.space.name().to_string(),
            grammar_text: grammar_text(&exp.space),
            metric: "validation accuracy".into(),
            maximize: true,
            history: vec![],
            target: None,
            k,
            history_budget_chars: 6000,
        };
        let system = prompts
            .system(&SystemContext {
                space_name: exp.space.name().to_string(),
                metric: "validation accuracy".into(),
                maximize: true,
            })
            .expect("system prompt");
        let user = prompts.propose(&ctx).expect("propose prompt").text;
        // llama.cpp's own timings of one uncached request: prompt and generation speed.
        let probe = archsmith::llm::ChatRequest {
            step: "probe".into(),
            model: "m".into(),
            messages: vec![Message::system(&system), Message::user(&user)],
            params: Default::default(),
            grammar: None,
        };
        let body = serde_json::json!({
            "prompt": archsmith::llm::local::plain_prompt(&probe),
            "n_predict": 128,
            "cache_prompt": false,
        });
        let t: serde_json::Value = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}/completion", server.base_url()))
                .json(&body)
                .send()
                .await
                .expect("probe")
                .json()
                .await
                .expect("probe json")
        });
        let timings = &t["timings"];
        speeds.push((
            space.to_string(),
            timings["prompt_n"].as_f64().unwrap_or(0.0),
            timings["prompt_per_second"].as_f64().unwrap_or(0.0),
            timings["predicted_per_second"].as_f64().unwrap_or(0.0),
        ));
        // The constrained cell first: it is the fastest (generation ends with the grammar), so
        // an interrupted measurement still has it.
        for (constrain, endpoint) in [
            (Constrain::Grammar, LocalEndpoint::Completion),
            (Constrain::None, LocalEndpoint::Completion),
            (Constrain::None, LocalEndpoint::Chat),
        ] {
            let name = match (constrain, endpoint) {
                (_, LocalEndpoint::Chat) => "chat",
                (Constrain::Grammar, _) => "grammar",
                _ => "none",
            };
            if !wanted.contains(&name) {
                continue;
            }
            let port = match endpoint {
                LocalEndpoint::Completion => server.port(),
                LocalEndpoint::Chat => chat_server.port(),
            };
            let mut cfg = LlmConfig::new(ProviderKind::Local, "gemma-3-270m");
            cfg.temperature = Some(0.8);
            cfg.max_tokens = Some(400);
            cfg.timeout_secs = 600.0;
            cfg.constrain = constrain;
            cfg.local = Some(LocalConfig {
                autostart: false,
                port: Some(port),
                endpoint,
                ..Default::default()
            });
            let client = LlmClient::from_config_with(&cfg, None, &env).expect("client");
            let grammar = (constrain == Constrain::Grammar).then(|| {
                let text = export_cfg(
                    &exp.space.grammar,
                    CfgFormat::Gbnf,
                    &CfgOptions {
                        depth: None,
                        reply: Some(ReplyShape::propose(k)),
                    },
                )
                .expect("grammar export");
                archsmith::llm::GrammarConstraint {
                    format: archsmith::llm::GrammarFormat::Gbnf,
                    text: text.into(),
                }
            });
            let mut cell = Cell {
                space: space.into(),
                constrain: format!("{constrain:?}").to_lowercase(),
                endpoint: format!("{endpoint:?}").to_lowercase(),
                ..Default::default()
            };
            let mut seen = std::collections::HashSet::new();
            let t0 = Instant::now();
            let calls = match endpoint {
                LocalEndpoint::Completion => calls,
                LocalEndpoint::Chat => chat_calls,
            };
            for i in 0..calls {
                let messages = vec![Message::system(&system), Message::user(&user)];
                let r = rt
                    .block_on(client.complete_constrained(
                        &format!("bench.{i}"),
                        messages,
                        grammar.clone(),
                    ))
                    .expect("model call");
                cell.calls += 1;
                cell.prompt_tokens += r.usage.input_tokens;
                cell.output_tokens += r.usage.output_tokens;
                let text = r.choices.first().map(|c| c.text.as_str()).unwrap_or("");
                match check_reply(&exp.space, text, exp.input, &exp.check) {
                    Ok(c) => {
                        // Candidates beyond k count as written; missing ones as invalid.
                        cell.candidates += c.candidates.len().max(k);
                        for c in c.candidates {
                            if let Verdict::Valid(v) = c.verdict {
                                cell.valid += 1;
                                if seen.insert(v.node.hash_hex()) {
                                    cell.distinct_valid += 1;
                                }
                            }
                        }
                    }
                    Err(_) => {
                        cell.unusable_replies += 1;
                        cell.candidates += k;
                    }
                }
                eprint!(
                    "\r{space} constrain={:?}: {}/{calls} calls, {} valid of {}",
                    constrain, cell.calls, cell.valid, cell.candidates
                );
            }
            eprintln!();
            cell.seconds = t0.elapsed().as_secs_f64();
            // Each cell as it ends, so that a long measurement cut short keeps what it has.
            eprintln!("{}", serde_json::to_string(&cell).unwrap_or_default());
            cells.push(cell);
        }
    }
    println!("| space | endpoint | constrain | calls | candidates | valid | distinct valid | unusable replies | s / call | prompt tok / call | generated tok / s (wall) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &cells {
        println!(
            "| {} | {} | {} | {} | {} | {} ({:.0}%) | {} | {} | {:.1} | {:.0} | {:.1} |",
            c.space,
            c.endpoint,
            c.constrain,
            c.calls,
            c.candidates,
            c.valid,
            100.0 * c.valid as f64 / c.candidates.max(1) as f64,
            c.distinct_valid,
            c.unusable_replies,
            c.seconds / c.calls.max(1) as f64,
            c.prompt_tokens as f64 / c.calls.max(1) as f64,
            c.output_tokens as f64 / c.seconds.max(1e-9),
        );
    }
    println!();
    println!("| space | prompt tokens | prompt tok / s | generated tok / s |");
    println!("|---|---|---|---|");
    for (space, n, p, g) in &speeds {
        println!("| {space} | {n:.0} | {p:.0} | {g:.1} |");
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/llm_local_bench.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&cells).unwrap_or_default(),
    );
    eprintln!("raw figures: {}", out.display());
    drop(chat_server);
    drop(server);
}
