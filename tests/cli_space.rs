//! The space commands as a user runs them: list, show, sample, validate, mutate, crossover,
//! and their errors and exit codes.

use assert_cmd::Command;
use std::io::Write;

fn archsmith() -> Command {
    Command::cargo_bin("archsmith").unwrap()
}

fn stdout(args: &[&str], stdin: &str) -> (i32, String, String) {
    let out = archsmith().args(args).write_stdin(stdin).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn space_list_and_show() {
    let (code, out, _) = stdout(&["space", "list"], "");
    assert_eq!(code, 0);
    for name in ["einspace", "nb201", "mlp"] {
        assert!(out.contains(name), "{out}");
    }
    let (code, out, _) = stdout(&["space", "show", "einspace"], "");
    assert_eq!(code, 0);
    assert!(out.contains("computation  [0.320]"), "{out}");
    assert!(
        out.contains("im2col(kernel, stride, padding) [unary operation]"),
        "{out}"
    );
    assert!(out.contains("col2im"), "{out}");
    let (code, out, _) = stdout(&["space", "show", "nb201", "--source"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("# NAS-Bench-201"));
}

#[test]
fn samples_are_deterministic_and_validate() {
    let args = [
        "sample", "--space", "einspace", "--input", "3x32x32", "-n", "20", "--seed", "4",
    ];
    let (code, a, _) = stdout(&args, "");
    assert_eq!(code, 0);
    let (_, b, _) = stdout(&args, "");
    assert_eq!(a, b);
    assert_eq!(a.lines().count(), 20);
    let (_, c, _) = stdout(&["sample", "-n", "20", "--seed", "5"], "");
    assert_ne!(a, c);
    let (code, report, _) = stdout(&["validate", "--input", "3x32x32", "-"], &a);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report.matches("] ok ").count(), 20);
}

#[test]
fn validate_reports_each_candidate_and_exits_1_on_any_invalid() {
    let input = "route(im2col(3,1,1), linear(64), col2im)\nseq(linear(64), route(identity, identity, col2im))\n";
    let (code, out, _) = stdout(&["validate", "--classes", "10"], input);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[1] ok  params 1792 (+650 head)"), "{out}");
    assert!(out.contains("output 64x32x32 (im)"), "{out}");
    assert!(out.contains("[2] invalid (1 error), line 2"), "{out}");
    assert!(
        out.contains("col2im at seq.1.route.2: got 3x32x64, a tensor in im mode"),
        "{out}"
    );

    let (code, out, _) = stdout(&["validate", "--json"], input);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["valid"], true);
    assert_eq!(lines[0]["analysis"]["params"], 1792);
    assert_eq!(lines[1]["valid"], false);
    assert_eq!(lines[1]["errors"][0]["stage"], "shape");
    assert_eq!(lines[1]["errors"][0]["path"], "seq.1.route.2");
    assert_eq!(lines[1]["errors"][0]["line"], 2);
}

#[test]
fn validate_reads_seed_files_with_macros() {
    for seed in [
        "resnet18_no_maxpool",
        "wideresnet16_4",
        "transformer",
        "mlp_mixer",
        "resnet34_no_maxpool",
        "resnet18_cifar",
        "vit",
    ] {
        let path = format!("spaces/einspace/seeds/{seed}.arch");
        let (code, out, err) = stdout(&["validate", &path], "");
        assert_eq!(code, 0, "{seed}: {out}{err}");
        assert_eq!(out.matches("] ok ").count(), 1);
    }
}

#[test]
fn bad_input_gets_a_clear_message_and_exit_2() {
    let (code, _, err) = stdout(&["validate", "no/such/file.arch"], "");
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read candidates from no/such/file.arch"),
        "{err}"
    );

    let (code, _, err) = stdout(&["sample", "--space", "nospace"], "");
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown space `nospace`") && err.contains("einspace"),
        "{err}"
    );

    let (code, _, err) = stdout(&["sample", "--input", "3x0x3"], "");
    assert_eq!(code, 2);
    assert!(err.contains("bad input shape `3x0x3`"), "{err}");

    let (code, _, err) = stdout(&["validate", "-"], "# only a comment\n");
    assert_eq!(code, 2);
    assert!(err.contains("no candidates found"), "{err}");

    let out = archsmith()
        .args(["validate", "-"])
        .write_stdin(vec![0xff, 0xfe, b'x'])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}

#[test]
fn a_broken_grammar_file_is_refused_with_its_position() {
    let dir = tempdir();
    let path = dir.join("bad.grammar");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(b"space bad\nroot net\nnet = seq(unit, unit)\nunit = conv(3)\n")
        .unwrap();
    let (code, _, err) = stdout(&["sample", "--space", path.to_str().unwrap()], "");
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.grammar:4:8: unknown operation or form `conv`"),
        "{err}"
    );
}

#[test]
fn a_user_space_folder_with_seeds_works() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("seeds")).unwrap();
    std::fs::write(
        dir.join("space.grammar"),
        "space tiny\nroot net\nnet = seq(unit, unit)\nunit = linear({8, 16}) | relu\n",
    )
    .unwrap();
    std::fs::write(dir.join("seeds/two.arch"), "seq(linear(8), relu)\n").unwrap();
    let d = dir.to_str().unwrap();
    let (code, out, err) = stdout(&["sample", "--space", d, "--input", "4", "-n", "3"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3);
    let (code, out, _) = stdout(&["space", "show", d], "");
    assert_eq!(code, 0);
    assert!(out.contains("seeds: two"), "{out}");
}

#[test]
fn mutate_and_crossover_print_valid_children() {
    let (code, out, err) = stdout(
        &[
            "mutate",
            "--seed",
            "2",
            "-n",
            "3",
            "spaces/einspace/seeds/resnet34_no_maxpool.arch",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3);
    let (code, report, _) = stdout(&["validate", "-"], &out);
    assert_eq!(code, 0, "{report}");

    let (code, _, err) = stdout(&["mutate", "-"], "seq(linear(64), col2im)\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("candidate 1 is invalid, so it cannot be a parent"),
        "{err}"
    );

    let (code, out, err) = stdout(
        &[
            "crossover",
            "@spaces/einspace/seeds/resnet18_no_maxpool.arch",
            "@spaces/einspace/seeds/wideresnet16_4.arch",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let (code, report, _) = stdout(&["validate", "-"], &out);
    assert_eq!(code, 0, "{report}");
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "archsmith-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn space_export_prints_a_grammar_for_constrained_decoding() {
    let (code, out, _) = stdout(&["space", "export", "nb201", "--candidate-only"], "");
    assert_eq!(code, 0);
    assert!(out.contains("\nroot ::= network-0\n"), "{out}");
    assert!(out.contains("\"nb201(\" edge"), "{out}");
    assert!(!out.contains("PLAN"), "{out}");
    let (code, out, _) = stdout(
        &[
            "space", "export", "einspace", "--format", "lark", "-k", "3", "--depth", "4",
        ],
        "",
    );
    assert_eq!(code, 0);
    assert!(out.contains("\nstart: plan_line candidate_line"), "{out}");
    assert!(out.contains("\"\\nPREDICTED: \" predicted_number"), "{out}");
    let (code, out, _) = stdout(&["space", "export", "mlp", "--no-predicted"], "");
    assert_eq!(code, 0);
    assert!(!out.contains("PREDICTED"), "{out}");
    let (code, _, err) = stdout(&["space", "export", "nb201", "--depth", "3"], "");
    assert_eq!(code, 2);
    assert!(
        err.contains("depth 3 is larger than space nb201's max_depth 2"),
        "{err}"
    );
    let (code, _, err) = stdout(&["space", "export", "nb201", "--format", "json"], "");
    assert_eq!(code, 2);
    assert!(err.contains("gbnf"), "{err}");
    let (code, _, err) = stdout(
        &["space", "export", "nb201", "--reply", "--candidate-only"],
        "",
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
}
