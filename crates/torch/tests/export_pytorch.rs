//! The exported PyTorch module computes what archsmith computes: for every seed of every
//! space and a handful of sampled einspace candidates, the network is compiled (with
//! BatchNorm statistics moved off their initial values), saved, exported from the saved
//! weights, and run in Python on the same input in eval mode; the logits must agree.
//!
//! Needs a Python with torch and safetensors: $ARCHSMITH_PYTHON, $VIRTUAL_ENV/bin/python, the
//! set-up script's venv (~/.cache/archsmith/venv) or python3. Without one the test says so
//! and passes.

use archsmith::space::{CheckOptions, Head, Limits, Node, Shape, Space};
use archsmith_torch::compile::{compile_with, CompileOptions};
use archsmith_torch::export::{Exportable, Format};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

const CLASSES: u64 = 10;

fn python_with_torch() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("ARCHSMITH_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(v) = std::env::var("VIRTUAL_ENV") {
        candidates.push(Path::new(&v).join("bin/python"));
    }
    if let Ok(h) = std::env::var("HOME") {
        candidates.push(Path::new(&h).join(".cache/archsmith/venv/bin/python"));
    }
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import torch, safetensors"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// One export: the network is compiled (fused, or literally when `copts.fuse` is off), its BatchNorm
/// statistics moved, its weights saved; the export loads them into the fused network and
/// writes the module (with `nn.Conv2d` and `F.scaled_dot_product_attention` for the fused
/// patterns), whose logits must be the saved network's.
fn case(dir: &Path, name: &str, space: &str, node: &Node, input: Shape, seed: u64) -> PathBuf {
    let copts = CompileOptions {
        fuse: true,
        head: Head::Positions,
    };
    case_with(dir, name, space, node, input, seed, copts)
}

fn case_with(
    dir: &Path,
    name: &str,
    space: &str,
    node: &Node,
    input: Shape,
    seed: u64,
    copts: CompileOptions,
) -> PathBuf {
    let head = copts.head;
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let fresh = Exportable {
        node: node.clone(),
        space: space.into(),
        input,
        classes: CLASSES,
        head,
        weights: None,
        seed,
        record: None,
    };
    let (vs, net) = if !copts.fuse {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = compile_with(&vs.root(), node, input, CLASSES, seed, copts).unwrap();
        (vs, net)
    } else {
        fresh.build().unwrap()
    };
    let mut dims = vec![2i64];
    dims.extend(input.dims().iter().map(|&d| d as i64));
    tch::manual_seed(seed as i64 + 1);
    // Train-mode passes move the BatchNorm running statistics, so that the buffers matter.
    tch::no_grad(|| {
        for _ in 0..3 {
            let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
            let _ = net.forward(&x, true).unwrap();
        }
    });
    let weights = out.join("trained.ot");
    vs.save(&weights).unwrap();
    let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| net.forward(&x, false)).unwrap();
    Tensor::write_safetensors(&[("x", &x), ("y", &y)], out.join("io.safetensors")).unwrap();
    let trained = Exportable {
        weights: Some(weights),
        ..fresh
    };
    trained.write(Format::Pytorch, &out).unwrap();
    out
}

#[test]
fn exported_modules_match_the_compiled_network() {
    // The exports run everywhere (every tch variable must map onto a state_dict key); only the
    // comparison needs Python.
    let tmp = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for (space, input) in [
        ("einspace", Shape::im(3, 32, 32)),
        ("nb201", Shape::im(3, 32, 32)),
        ("mlp", Shape::vec(784)),
    ] {
        let s = Space::load(space).unwrap();
        for seed in &s.seeds {
            let name = format!("{space}-{}", seed.name);
            folders.push(case(tmp.path(), &name, space, &seed.node, input, 1));
        }
        if space == "einspace" {
            // Weights trained unfused load into the fused network and its fused module.
            for name in ["resnet18_no_maxpool", "transformer"] {
                let node = &s.seed(name).unwrap().node;
                let dir = format!("unfused-{name}");
                folders.push(case_with(
                    tmp.path(),
                    &dir,
                    space,
                    node,
                    input,
                    2,
                    CompileOptions {
                        fuse: false,
                        head: Head::Positions,
                    },
                ));
            }
            // einspace's head (a sequence averaged over its features) on its sequence seeds.
            for name in ["transformer", "mlp_mixer"] {
                let node = &s.seed(name).unwrap().node;
                let dir = format!("einspace-head-{name}");
                folders.push(case_with(
                    tmp.path(),
                    &dir,
                    space,
                    node,
                    input,
                    3,
                    CompileOptions {
                        fuse: true,
                        head: Head::Einspace,
                    },
                ));
            }
        }
    }
    let s = Space::load("einspace").unwrap();
    let sampler = s.sampler();
    let opts = CheckOptions {
        limits: Limits {
            max_params: 500_000,
            max_flops: 30_000_000,
            max_activation_bytes: 4 << 20,
        },
        classes: Some(CLASSES),
        infos: false,
        head: Head::Positions,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for i in 0..8 {
        let (node, _) = s
            .sample_with(&sampler, Shape::im(3, 32, 32), &opts, &mut rng)
            .unwrap();
        folders.push(case(
            tmp.path(),
            &format!("sample{i}"),
            "einspace",
            &node,
            Shape::im(3, 32, 32),
            i,
        ));
    }
    // The fused patterns are written as PyTorch's own modules and kernels.
    let source =
        |name: &str| std::fs::read_to_string(tmp.path().join(name).join("model.py")).unwrap();
    let resnet = source("einspace-resnet18_no_maxpool");
    assert!(
        resnet.contains("= nn.Conv2d(64, 64, 3, stride=2, padding=1)"),
        "{resnet}"
    );
    assert!(!resnet.contains("def im2col"));
    // einspace's head maps the 64 positions of the transformer's sequence to the classes.
    let head = source("einspace-head-transformer");
    assert!(head.contains("self.head = nn.Linear(64, 10)"), "{head}");
    assert!(source("einspace-transformer").contains("self.head = nn.Linear(512, 10)"));
    // Four layers of four heads: one multi-head attention call a layer, as the compiler fuses it.
    let transformer = source("unfused-transformer");
    assert_eq!(
        transformer
            .matches("F.scaled_dot_product_attention(")
            .count(),
        4,
        "{transformer}"
    );
    let Some(python) = python_with_torch() else {
        println!(
            "skipped the Python check: no Python with torch and safetensors (set ARCHSMITH_PYTHON)"
        );
        return;
    };
    check_in_python(&python, tmp.path(), &folders);
}

/// Runs tests/export/check.py over the case folders; every one must match.
fn check_in_python(python: &Path, tmp: &Path, folders: &[PathBuf]) {
    let manifest = tmp.join("cases.txt");
    let text: Vec<String> = folders.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(&manifest, text.join("\n")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export/check.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&manifest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "exported modules differ from archsmith ({}):\n{stdout}\n{}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for f in folders {
        assert!(
            stdout.contains(&format!("ok   {}", f.display())),
            "{} not checked",
            f.display()
        );
    }
}

/// A real run's best, exported from its folder with `archsmith export`: the module carries
/// the trained weights (best.ot), and computes what the compiled network with them computes.
#[test]
fn a_runs_best_exports_with_its_trained_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // The driver binary of the workspace's other package, next to this test's folder.
    let deps = std::env::current_exe().unwrap();
    let bin = deps.parent().unwrap().parent().unwrap().join("archsmith");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (cargo build, or cargo test at its root)",
        bin.display()
    );
    let out = Command::new(&bin)
        .args([
            "run",
            "--space",
            "mlp",
            "--task",
            "teacher",
            "--strategy",
            "random",
            "--evals",
            "2",
            "--epochs",
            "1",
            "--name",
            "t",
        ])
        .arg("--out")
        .arg(&runs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(dir.join("best.ot").is_file(), "the run kept no weights");
    let case = tmp.path().join("best");
    for format in ["pytorch", "json", "weights"] {
        let out = Command::new(&bin)
            .arg("export")
            .arg(&dir)
            .args(["--format", format, "--out"])
            .arg(&case)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("candidate.json")).unwrap())
            .unwrap();
    assert_eq!(json["is_best"], true);
    assert_eq!(json["has_weights"], true);
    assert_eq!(json["task"]["name"], "teacher");
    assert_eq!(
        std::fs::read(case.join("weights.ot")).unwrap(),
        std::fs::read(dir.join("best.ot")).unwrap()
    );
    // The same run through report, show --format json and compare.
    let out = Command::new(&bin).arg("report").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(page.contains("Score against parameters") && !page.contains("<script"));
    let out = Command::new(&bin)
        .arg("show")
        .arg(&dir)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["run"]["evaluations"], 2);
    let csv = tmp.path().join("runs.csv");
    let out = Command::new(&bin)
        .arg("compare")
        .arg(&runs)
        .arg("--out")
        .arg(tmp.path().join("compare.html"))
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains(",random,mlp,teacher,0,2,"), "{csv}");
    // The expected logits: the compiled network with the run's trained weights.
    let item = archsmith_torch::export::from_run(&dir, None).unwrap();
    assert!(item.weights.is_some());
    let (_vs, net) = item.build().unwrap();
    let mut dims = vec![3i64];
    dims.extend(item.input.dims().iter().map(|&d| d as i64));
    let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| net.forward(&x, false)).unwrap();
    Tensor::write_safetensors(&[("x", &x), ("y", &y)], case.join("io.safetensors")).unwrap();
    let Some(python) = python_with_torch() else {
        println!("skipped the Python check: no Python with torch and safetensors");
        return;
    };
    check_in_python(&python, tmp.path(), &[case]);
}
