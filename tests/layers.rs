//! The library's layers import one way. Data flows space -> search -> run -> exec -> train
//! (the loop asks a strategy, hands jobs to an executor, which trains), so a module may use
//! the modules of a lower layer and never one above it; and only the training crate
//! (`crates/torch`) links libtorch, so that the driver starts at once and survives a crash
//! inside it. Read from the sources' `crate::` paths, `use` lines and inline paths alike.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first: each may use those before it.
const LAYERS: &[&str] = &[
    "text", "space", "train", "llm", "search", "exec", "run", "report", "bench",
];

fn rank(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == m)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs, main.rs and the CLI,
/// which sit above every layer).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let m = first.trim_end_matches(".rs").to_string();
    rank(&m).map(|_| m)
}

/// Every `crate::NAME` a source mentions outside comments, with `use crate::{a, b}` groups
/// counted too.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                for part in group.split(['}', ',']) {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let Some(m) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for used in crate_paths(&text) {
            if let (Some(u), Some(own)) = (rank(&used), rank(&m)) {
                if u > own {
                    wrong.push(format!(
                        "{} ({m}) uses crate::{used}, a layer above it",
                        f.strip_prefix(root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(files.len() > 50, "found only {} sources", files.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    let text = "use crate::{space::Node, run::Journal};\nlet x = crate::exec::local::f(); // crate::bench\n";
    let found = crate_paths(text);
    assert!(found.contains("space") && found.contains("run") && found.contains("exec"));
    assert!(!found.contains("bench"), "comments are not code");
}

#[test]
fn only_the_training_crate_links_libtorch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap();
    for name in ["tch", "torch-sys"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(name)),
            "the driver's crate depends on {name}"
        );
    }
    let torch = std::fs::read_to_string(root.join("crates/torch/Cargo.toml")).unwrap();
    assert!(torch.lines().any(|l| l.starts_with("tch = ")));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("tch::"),
            "{} uses tch, which only crates/torch may",
            f.display()
        );
    }
}
