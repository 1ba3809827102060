//! NAS-Bench-Graph against the real thing, where it is installed: archsmith's key agrees with
//! the package's own `Arch(link, ops).valid_hash()` on every cell, every key of every converted
//! table is a cell of the space and every cell is in the table, and random search on a real
//! table agrees with the exact expectation. Each test says why when it skips.

use archsmith::space::gnn::{self, Gnn};
use archsmith::space::{CheckOptions, Space};
use archsmith::train::lookup::{tables_dir, Dataset, Table, DATASETS};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

/// The set-up's Python, when it can import `nas_bench_graph`.
fn python_with_package() -> Option<PathBuf> {
    let venv = std::env::var_os("ARCHSMITH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/archsmith/venv"))
        })?;
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import nas_bench_graph"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(py)
}

const DUMP: &str = r#"
import itertools
from nas_bench_graph.architecture import Arch, gnn_list
out = []
for a in range(2):
    for b in range(3):
        for c in range(4):
            link = [0, a, b, c]
            for ops in itertools.product(gnn_list, repeat=4):
                if all(o == "skip" for o in ops):
                    continue
                k = Arch(link, list(ops)).valid_hash()
                out.append(f"{a}{b}{c} {' '.join(ops)} {k}")
print("\n".join(out))
"#;

#[test]
fn the_key_is_the_packages_on_every_cell() {
    let Some(py) = python_with_package() else {
        eprintln!("SKIPPED: nas_bench_graph is not installed in the set-up's venv (run scripts/setup-nbgraph.sh)");
        return;
    };
    let out = Command::new(py).args(["-c", DUMP]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let l: Vec<u8> = parts[0].bytes().map(|b| b - b'0').collect();
        let link = [0, l[0], l[1], l[2]];
        let ops: [Gnn; 4] = std::array::from_fn(|i| Gnn::by_name(parts[1 + i]).unwrap());
        let want: u64 = parts[5].parse().unwrap();
        assert_eq!(gnn::key(link, ops), Some(want), "{line}");
        n += 1;
    }
    // 24 link lists x 9^4 op lists, less the all-skip cell of each.
    assert_eq!(n, 24 * (6561 - 1));
}

fn installed() -> bool {
    let ok = DATASETS
        .iter()
        .all(|d| tables_dir().join(format!("{}.csv", d.name)).is_file());
    if !ok {
        eprintln!(
            "SKIPPED: the NAS-Bench-Graph tables are not in {} (run scripts/setup-nbgraph.sh)",
            tables_dir().display()
        );
    }
    ok
}

#[test]
fn every_table_key_is_a_cell_of_its_space_and_back() {
    if !installed() {
        return;
    }
    for d in DATASETS {
        let table = Table::shared(d.name).unwrap();
        let ops: &[Gnn] = if d.name == "proteins" {
            &Gnn::PROTEINS
        } else {
            &Gnn::ALL
        };
        let choices: [Vec<(Gnn, u8)>; 4] = std::array::from_fn(|i| {
            ops.iter()
                .flat_map(|&g| (0..=i as u8).map(move |l| (g, l)))
                .collect()
        });
        let cells = gnn::distinct_cells(choices);
        let keys: HashSet<u64> = cells
            .iter()
            .map(|(l, o)| gnn::key(*l, *o).unwrap())
            .collect();
        let table_keys: HashSet<u64> = table.entries.keys().copied().collect();
        assert_eq!(keys, table_keys, "{}", d.name);
        // And the space's sampler reaches them as candidates that look up.
        let space = Space::load(d.space).unwrap();
        let opts = CheckOptions::default();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        for _ in 0..200 {
            let (node, _) = space
                .sample(Dataset::by_name(d.name).unwrap().input(), &opts, &mut rng)
                .unwrap();
            assert!(table.get(&node).is_some(), "{}: {node}", d.name);
        }
    }
}

#[test]
fn random_search_on_a_real_table_agrees_with_the_exact_expectation() {
    if !installed() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = archsmith::bench::BenchSpec {
        datasets: vec!["cora".into()],
        strategies: vec![archsmith::run::StrategyKind::Random],
        seeds: 60,
        first_seed: 100,
        evaluations: 40,
        threads: 2,
        out: tmp.path().to_path_buf(),
        base: archsmith::run::Settings::load(None).unwrap(),
    };
    let (b, _) = archsmith::bench::run(&spec, &|_| None, &|_, _| {}).unwrap();
    let exact = &b.tables[0].random_exact;
    let r = &b.rows[0];
    let z = (r.best_valid - exact.best_valid) / r.best_valid_se;
    assert!(
        z.abs() < 3.0,
        "simulated {} +- {}, exact {} (z = {z})",
        r.best_valid,
        r.best_valid_se,
        exact.best_valid
    );
    let zt = (r.test - exact.test_of_best) / r.test_se;
    assert!(
        zt.abs() < 3.0,
        "test {} +- {}, exact {} (z = {zt})",
        r.test,
        r.test_se,
        exact.test_of_best
    );
}
