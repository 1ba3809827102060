//! The report and the comparison, computed from run folders written here with the run
//! module's own types (journal events, model records): snapshots of their data, the HTML's
//! self-containment, the CSV, and a rendering in headless Chromium where one is installed
//! (the screenshot is kept under target/report-artifacts/).

use archsmith::llm::{
    CanonicalRequest, Choice, ExchangeRecord, FinishReason, LlmRecord, Message, RecordedResponse,
    SamplingParams, TokenUsage,
};
use archsmith::report::{compare, data, html};
use archsmith::run::journal::{
    EpochEvent, Event, Journal, ProposalEvent, RunFinished, RunStarted, RunStatus, TrainFinished,
    TrainStarted, ValidationEvent, Verdict,
};
use archsmith::run::Settings;
use archsmith::search::Origin;
use archsmith::train::{Failure, FailureReason};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One candidate of a fixture run: origin, text, parents, plan, prediction, and its outcome
/// (`None` for an invalid proposal; `Some(None)` for a failed training).
struct Cand {
    round: u64,
    origin: Origin,
    text: &'static str,
    hash: &'static str,
    parents: &'static [&'static str],
    plan: Option<&'static str>,
    predicted: Option<f64>,
    verdict: Verdict,
    /// Scores by epoch; empty for a failed training.
    curve: Vec<f64>,
    params: u64,
    flops: u64,
}

fn write_run(dir: &Path, strategy: &str, seed: u64, cands: &[Cand], calls: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let settings = Settings::load(None).unwrap();
    std::fs::write(dir.join("config.toml"), settings.to_toml()).unwrap();
    let mut j = Journal::create(&dir.join("journal.jsonl")).unwrap();
    j.append(&Event::RunStarted(RunStarted {
        run_id: dir.file_name().unwrap().to_string_lossy().into(),
        version: "0.1.0".into(),
        strategy: strategy.into(),
        space: "einspace".into(),
        task: "textures".into(),
        seed,
        session: 1,
        mode: "new".into(),
        message: String::new(),
        unix_time: 0,
    }))
    .unwrap();
    let mut eval = 0;
    let mut elapsed = 0.0;
    for (id, c) in cands.iter().enumerate() {
        let id = id as u64;
        j.append(&Event::Proposal(ProposalEvent {
            id,
            round: c.round,
            origin: c.origin,
            text: c.text.into(),
            hash: (c.verdict != Verdict::Invalid).then(|| c.hash.to_string()),
            parents: c.parents.iter().map(|p| p.to_string()).collect(),
            plan: c.plan.map(str::to_string),
            llm_step: matches!(c.origin, Origin::Model | Origin::Repair)
                .then(|| format!("propose.{}", c.round)),
            predicted: c.predicted,
        }))
        .unwrap();
        j.append(&Event::Validation(ValidationEvent {
            id,
            verdict: c.verdict,
            message: (c.verdict == Verdict::Invalid)
                .then(|| "col2im needs a col tensor (LxD)".to_string()),
            params: (c.verdict != Verdict::Invalid).then_some(c.params),
            flops: (c.verdict != Verdict::Invalid).then_some(c.flops),
        }))
        .unwrap();
        if c.verdict != Verdict::Valid {
            continue;
        }
        j.append(&Event::TrainStarted(TrainStarted {
            eval,
            proposal: id,
            hash: c.hash.into(),
            candidate: c.text.into(),
            epochs: 2,
            seed,
            worker: None,
        }))
        .unwrap();
        for (e, s) in c.curve.iter().enumerate() {
            j.append(&Event::Epoch(EpochEvent {
                eval,
                epoch: e + 1,
                train_loss: 1.0 - s,
                valid_loss: 1.1 - s,
                valid_score: *s,
                seconds: 1.5,
            }))
            .unwrap();
        }
        elapsed += 3.0 + eval as f64;
        let failed = c.curve.is_empty();
        j.append(&Event::TrainFinished(TrainFinished {
            eval,
            proposal: id,
            hash: c.hash.into(),
            candidate: c.text.into(),
            score: c.curve.last().copied(),
            failure: failed.then(|| Failure {
                reason: FailureReason::NonFinite,
                message: "the loss became NaN at step 3".into(),
            }),
            params: c.params,
            flops: c.flops,
            epochs: c.curve.len(),
            stopped_early: false,
            wall_seconds: 3.0,
            overhead_seconds: None,
            elapsed_seconds: elapsed,
            lookup: None,
        }))
        .unwrap();
        eval += 1;
    }
    j.append(&Event::RunFinished(RunFinished {
        status: RunStatus::Completed,
        reason: "evaluation budget spent".into(),
        evaluations: eval,
        best_hash: None,
        best_score: None,
        elapsed_seconds: elapsed + 1.0,
        tokens: 0,
        usd: 0.0,
    }))
    .unwrap();
    if calls > 0 {
        let mut lines = String::new();
        for k in 0..calls {
            let r = LlmRecord::Exchange(ExchangeRecord {
                step: format!("propose.{k}"),
                request_hash: format!("sha256:{k:064x}"),
                provider: "openai".into(),
                request: CanonicalRequest {
                    model: "gpt-4o-mini".into(),
                    messages: vec![Message::system("propose")],
                    params: SamplingParams {
                        temperature: Some(0.7),
                        top_p: None,
                        max_tokens: Some(2000),
                        n: 1,
                    },
                },
                response: Some(RecordedResponse {
                    choices: vec![Choice {
                        text: "PLAN: wider".into(),
                        finish_reason: FinishReason::Stop,
                    }],
                    model: None,
                }),
                error: None,
                usage: TokenUsage {
                    input_tokens: 1000 + 100 * k,
                    output_tokens: 200,
                },
                cost_usd: Some(0.0003 * (k + 1) as f64),
                latency_ms: 1200,
                attempts: 1,
                constrained: None,
            });
            lines += &serde_json::to_string(&r).unwrap();
            lines.push('\n');
        }
        std::fs::write(dir.join("llm.jsonl"), lines).unwrap();
    }
}

const CONV: &str = "seq(route(im2col(3,1,1), linear(16), col2im), norm, leakyrelu)";
const WIDE: &str = "seq(route(im2col(3,1,1), linear(32), col2im), norm, leakyrelu)";
const DEEP: &str = "seq(route(im2col(3,1,1), linear(32), col2im), norm, leakyrelu, route(im2col(3,1,1), linear(32), col2im), norm, leakyrelu)";
const MLP: &str = "route(im2col(4,4,0), seq(linear(64), leakyrelu), identity)";

fn llm_run(dir: &Path) {
    use Verdict::*;
    let c = |round, origin, text, hash, parents, plan, predicted, verdict, curve, params| Cand {
        round,
        origin,
        text,
        hash,
        parents,
        plan,
        predicted,
        verdict,
        curve,
        params,
        flops: params * 2048,
    };
    let cands = [
        c(
            0,
            Origin::Seed,
            CONV,
            "c0nv000000000001",
            &[],
            None,
            None,
            Valid,
            vec![0.41, 0.52],
            620,
        ),
        c(
            0,
            Origin::Model,
            MLP,
            "m1p0000000000002",
            &[],
            Some("try a patch MLP as a cheap baseline"),
            Some(0.45),
            Valid,
            vec![0.30, 0.38],
            3300,
        ),
        c(
            0,
            Origin::Model,
            "route(col2im, linear(8), im2col(3,1,1))",
            "",
            &[],
            Some("invert the route"),
            Some(0.6),
            Invalid,
            vec![],
            0,
        ),
        c(
            1,
            Origin::Repair,
            WIDE,
            "w1de000000000003",
            &["c0nv000000000001"],
            Some("widen the convolution to 32 filters"),
            Some(0.6),
            Valid,
            vec![0.50, 0.63],
            1200,
        ),
        c(
            1,
            Origin::Model,
            CONV,
            "c0nv000000000001",
            &[],
            Some("repeat the seed"),
            Some(0.5),
            Duplicate,
            vec![],
            620,
        ),
        c(
            2,
            Origin::Model,
            DEEP,
            "d33p000000000004",
            &["w1de000000000003"],
            Some("stack a second convolution"),
            Some(0.7),
            Valid,
            vec![0.55, 0.71],
            10500,
        ),
        c(
            2,
            Origin::Mutation,
            "seq(route(im2col(3,1,1), linear(64), col2im), softmax)",
            "f41l000000000005",
            &["c0nv000000000001"],
            None,
            None,
            Valid,
            vec![],
            2000,
        ),
    ];
    write_run(dir, "llm", 0, &cands, 3);
}

fn random_run(dir: &Path, seed: u64, scores: [f64; 3]) {
    use Verdict::*;
    let texts = [CONV, MLP, WIDE];
    let hashes = ["c0nv000000000001", "m1p0000000000002", "w1de000000000003"];
    let cands: Vec<Cand> = (0..3)
        .map(|i| Cand {
            round: i as u64,
            origin: Origin::Sample,
            text: texts[i],
            hash: hashes[i],
            parents: &[],
            plan: None,
            predicted: None,
            verdict: Valid,
            curve: vec![scores[i] / 2.0, scores[i]],
            params: [620, 3300, 1200][i],
            flops: [620, 3300, 1200][i] * 2048,
        })
        .collect();
    write_run(dir, "random", seed, &cands, 0);
}

#[test]
fn report_data_of_a_model_driven_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llm-s0");
    llm_run(&dir);
    let r = data::load(&dir).unwrap();
    assert_eq!(r.run.best_hash.as_deref(), Some("d33p000000000004"));
    assert_eq!(
        r.front_params,
        vec!["c0nv000000000001", "w1de000000000003", "d33p000000000004"]
    );
    let lineage: Vec<&str> = r.lineage.iter().map(|a| a.hash.as_str()).collect();
    assert_eq!(
        lineage,
        vec!["d33p000000000004", "w1de000000000003", "c0nv000000000001"]
    );
    insta::assert_snapshot!(serde_json::to_string_pretty(&r).unwrap());
}

#[test]
fn comparison_of_strategies_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    llm_run(&tmp.path().join("llm-s0"));
    random_run(&tmp.path().join("random-s0"), 0, [0.40, 0.30, 0.50]);
    random_run(&tmp.path().join("random-s1"), 1, [0.20, 0.35, 0.45]);
    let dirs = compare::expand(&[tmp.path().to_path_buf()]);
    assert_eq!(dirs.len(), 3);
    let c = compare::load(&dirs).unwrap();
    let llm = c.runs.iter().find(|r| r.strategy == "llm").unwrap();
    // Mean random = mean of the six random candidates = 0.3666...; best 0.71.
    let mean_random = (0.40 + 0.30 + 0.50 + 0.20 + 0.35 + 0.45) / 6.0;
    assert!((llm.mean_random.unwrap() - mean_random).abs() < 1e-12);
    assert!((llm.relative_improvement.unwrap() - (0.71 - mean_random) / mean_random).abs() < 1e-12);
    assert_eq!(llm.baseline, "random-runs");
    let random = c.groups.iter().find(|g| g.strategy == "random").unwrap();
    assert_eq!(random.runs, 2);
    // Best so far after 1, 2, 3 evaluations: (0.40, 0.40, 0.50) and (0.20, 0.35, 0.45).
    let mean: Vec<f64> = random.mean.iter().map(|m| m.unwrap()).collect();
    let want = [0.30, 0.375, 0.475];
    for (m, w) in mean.iter().zip(want) {
        assert!((m - w).abs() < 1e-12, "{mean:?}");
    }
    assert!((random.stderr[0].unwrap() - 0.1).abs() < 1e-12);
    // Without the random runs, the llm run falls back to its own grammar samples: it has none.
    let alone = compare::load(&dirs[..1]).unwrap();
    assert_eq!(alone.runs[0].baseline, "none");
    let csv = compare::csv(&c).replace(&tmp.path().display().to_string(), "[TMP]");
    insta::assert_snapshot!("compare_csv", csv);
    insta::assert_snapshot!(
        "compare_groups",
        serde_json::to_string_pretty(&c.groups).unwrap()
    );
    let page = compare::render(&c);
    assert_self_contained(&page);
}

/// No external requests: no http(s) in src or href, no @import, no url(), no scripts.
fn assert_self_contained(page: &str) {
    let lower = page.to_lowercase();
    for bad in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "href='http",
        "@import",
        "url(",
        "<script",
        "<link",
        "<iframe",
    ] {
        assert!(!lower.contains(bad), "the page holds `{bad}`");
    }
    // Any attribute pointing off the page at all.
    assert!(!lower.contains("src="), "the page loads a resource");
    assert!(!lower.contains("href="), "the page links a resource");
}

fn chromium() -> Option<PathBuf> {
    let mut c: Vec<PathBuf> = std::env::var("ARCHSMITH_CHROMIUM")
        .ok()
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        c.push(PathBuf::from(p));
    }
    c.into_iter().find(|p| p.is_file())
}

#[test]
fn the_html_report_is_self_contained_and_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llm-s0");
    llm_run(&dir);
    let r = data::load(&dir).unwrap();
    let page = html::render(&r);
    assert_self_contained(&page);
    for title in [
        "Best score so far",
        "Best score against wall time",
        "Score against parameters",
        "Score against FLOPs",
        "Validation score by epoch",
        "Proposals per step",
        "Predicted against achieved",
        "Tokens over model calls",
        "Cost over model calls",
        "Lineage of the best candidate",
        "Top candidates",
    ] {
        assert!(page.contains(title), "the report lacks `{title}`");
    }
    assert!(page.contains("widen the convolution to 32 filters"));
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let html_path = artifacts.join("report.html");
    std::fs::write(&html_path, &page).unwrap();
    let Some(chrome) = chromium() else {
        println!(
            "skipped the rendering check: no Chromium (install it with scripts/setup.sh --chromium, or set ARCHSMITH_CHROMIUM)"
        );
        return;
    };
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tmp.path().join("chromium-profile");
    let out = Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,2000")
        .arg(format!("file://{}", html_path.display()))
        .output()
        .expect("run chromium");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot from {} ({size} bytes): {}",
        chrome.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("screenshot: {}", shot.display());
}
