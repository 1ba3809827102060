//! `archsmith prompt render`: each step's messages, user template folders, and the errors a
//! user can cause (a missing template variable, a malformed history, nothing to repair).

use assert_cmd::Command;

const FIXTURES: &str = "tests/fixtures/cli/prompt";

fn archsmith() -> Command {
    let mut cmd = Command::cargo_bin("archsmith").expect("binary");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn render(args: &[&str]) -> Out {
    let out = archsmith()
        .args(["prompt", "render"])
        .args(args)
        .output()
        .expect("runs");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(args: &[&str]) -> String {
    let o = render(args);
    assert!(o.ok, "{args:?} failed: {}", o.stderr);
    o.stdout
}

fn fails(args: &[&str]) -> String {
    let o = render(args);
    assert!(!o.ok, "{args:?} succeeded:\n{}", o.stdout);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stdout.is_empty(), "nothing half-rendered: {}", o.stdout);
    o.stderr
}

/// Paths of this checkout and of temporary folders, which differ by machine.
fn portable(text: &str, temp: Option<&std::path::Path>) -> String {
    let mut t = text.replace(env!("CARGO_MANIFEST_DIR"), "[ROOT]");
    if let Some(dir) = temp {
        t = t.replace(&dir.display().to_string(), "[TEMP]");
    }
    t
}

/// The messages of a rendered step, by role, in order.
fn messages(stdout: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in stdout.split_inclusive('\n') {
        let head = line.trim_end();
        if let Some(role) = head
            .strip_prefix("=== ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            out.push((role.to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
        }
    }
    out
}

fn roles(stdout: &str) -> Vec<String> {
    messages(stdout).into_iter().map(|(r, _)| r).collect()
}

#[test]
fn system_step_is_the_system_message_only() {
    let out = ok(&["system"]);
    assert_eq!(roles(&out), ["system"]);
    assert!(out.contains("the space \"einspace\""), "{out}");
    let mlp = ok(&["system", "--space", "mlp"]);
    assert!(mlp.contains("the space \"mlp\""), "{mlp}");
}

#[test]
fn propose_snapshot() {
    let out = ok(&[
        "propose",
        "--history",
        &format!("{FIXTURES}/history.jsonl"),
        "-k",
        "3",
    ]);
    assert_eq!(roles(&out), ["system", "user"]);
    insta::assert_snapshot!(portable(&out, None));
}

#[test]
fn propose_options_reach_the_prompt() {
    let out = ok(&[
        "propose",
        "--space",
        "mlp",
        "--input",
        "784",
        "--task",
        "Classify MNIST digits.",
        "--target",
        "0.95",
        "-k",
        "1",
    ]);
    let user = &messages(&out)[1].1;
    assert!(
        user.starts_with("## Task\nClassify MNIST digits.\n"),
        "{user}"
    );
    assert!(user.contains("## Search space: mlp"), "{user}");
    assert!(user.contains("above 0.9500"), "{user}");
    assert!(user.contains("Then one candidate"), "{user}");
    assert!(
        user.contains("Nothing yet: this is the first round."),
        "{user}"
    );

    // The default task follows the input shape.
    let out = ok(&["propose", "--space", "mlp", "--input", "784"]);
    assert!(
        out.contains("Classify synthetic inputs of shape 784 into 10 classes."),
        "{out}"
    );
}

#[test]
fn history_budget_keeps_the_best_rows() {
    let o = render(&[
        "propose",
        "--history",
        &format!("{FIXTURES}/history.jsonl"),
        "--history-budget",
        "220",
    ]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("4 candidates have been evaluated; the best 1 are shown"),
        "{}",
        o.stdout
    );
    assert!(o
        .stdout
        .contains("| 1 | `route(im2col(3,1,1), linear(64), col2im)` | 0.6200 |"));
    assert!(!o.stdout.contains("| 2 |"), "{}", o.stdout);
    assert!(
        o.stderr
            .contains("history: 1 of 4 rows fit in 220 characters"),
        "{}",
        o.stderr
    );
}

#[test]
fn repair_snapshot() {
    let out = ok(&[
        "repair",
        "--candidate",
        &format!("@{FIXTURES}/invalid.arch"),
    ]);
    assert_eq!(roles(&out), ["system", "user"]);
    insta::assert_snapshot!(portable(&out, None));
}

#[test]
fn repair_shows_the_validators_message() {
    let out = ok(&["repair", "--candidate", "seq(linear(17), leakyrelu)"]);
    let user = &messages(&out)[1].1;
    assert!(user.contains("    seq(linear(17), leakyrelu)\n"), "{user}");
    assert!(
        user.contains("The validator reported:\n\n- linear(17) at seq.0: is not allowed here; `module` allows"),
        "{user}"
    );

    // A candidate that does not parse is repaired like any other, with the syntax error.
    let out = ok(&["repair", "--candidate", "seq(linear(64) leakyrelu)"]);
    assert!(
        out.contains("- `leakyrelu` at 1:16: expected `,` or `)` in the arguments of `seq`"),
        "{out}"
    );

    // The input shape is part of validity: valid for 3x32x32, not for a vector.
    let conv = "route(im2col(3,1,1), linear(64), col2im)";
    let out = ok(&["repair", "--candidate", conv, "--input", "784"]);
    assert!(out.contains("im2col"), "{out}");
    assert!(out.contains("The validator reported:\n\n- "), "{out}");
}

#[test]
fn repair_of_a_valid_candidate_has_nothing_to_do() {
    let err = fails(&[
        "repair",
        "--candidate",
        "route( im2col(3,1,1), linear(64),col2im )",
    ]);
    assert!(
        err.contains("the candidate is valid in space einspace for input 3x32x32, so there is nothing to repair"),
        "{err}"
    );
    assert!(
        err.contains("route(im2col(3,1,1), linear(64), col2im)"),
        "canonical form: {err}"
    );
    let err = fails(&["repair"]);
    assert!(err.contains("--candidate"), "{err}");
}

#[test]
fn predict_lists_canonical_candidates() {
    let out = ok(&[
        "predict",
        "--history",
        &format!("{FIXTURES}/history.jsonl"),
        "--candidate",
        "seq(linear(64),leakyrelu)",
        "--candidate",
        "route(im2col(4,4,0), seq(linear(128), leakyrelu), col2im)",
    ]);
    assert_eq!(roles(&out), ["system", "user"]);
    let user = &messages(&out)[1].1;
    assert!(user.contains("1. `seq(linear(64), leakyrelu)`\n2. `route(im2col(4,4,0), seq(linear(128), leakyrelu), col2im)`\n"), "{user}");
    assert!(
        user.contains("PREDICTION 1: <number>\nPREDICTION 2: <number>"),
        "{user}"
    );
    assert!(user.contains("4 candidates were measured"), "{user}");

    let err = fails(&[
        "predict",
        "--candidate",
        "seq(linear(64), leakyrelu)",
        "--candidate",
        "seq(linear(17), leakyrelu)",
    ]);
    assert!(
        err.contains("candidate 2 is invalid in space einspace for input 3x32x32"),
        "{err}"
    );
    assert!(err.contains("- linear(17) at seq.0"), "{err}");
    let err = fails(&["predict"]);
    assert!(err.contains("--candidate"), "{err}");
}

#[test]
fn a_prompt_folder_overrides_file_by_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("system.j2"),
        "Custom system for {{ space_name }}; {{ metric }}.",
    )
    .expect("write");
    let o = render(&["propose", "--prompts", &dir.path().display().to_string()]);
    assert!(o.ok, "{}", o.stderr);
    let msgs = messages(&o.stdout);
    assert_eq!(
        msgs[0],
        (
            "system".to_string(),
            "Custom system for einspace; validation accuracy.\n".to_string()
        )
    );
    assert!(
        msgs[1].1.contains("## Reply format"),
        "propose.j2 stays embedded"
    );
    assert_eq!(
        portable(&o.stderr, Some(dir.path())),
        "system.j2: using [TEMP]/system.j2\n"
    );
}

#[test]
fn a_missing_variable_names_template_and_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("propose.j2"),
        "Task: {{ task }}\nSpace: {{ spcae_name }}\n",
    )
    .expect("write");
    let err = fails(&["propose", "--prompts", &dir.path().display().to_string()]);
    assert!(
        err.contains("template propose.j2, line 2: undefined variable `spcae_name`"),
        "{err}"
    );

    std::fs::write(dir.path().join("repair.j2"), "{{ candidate }} {{ eror }}").expect("write");
    let err = fails(&[
        "repair",
        "--candidate",
        "seq(linear(17), leakyrelu)",
        "--prompts",
        &dir.path().display().to_string(),
    ]);
    assert!(
        err.contains("cannot render the repair prompt: template repair.j2, line 1: undefined variable `eror`"),
        "{err}"
    );

    let err = fails(&["system", "--prompts", "no/such/folder"]);
    assert!(
        err.contains("cannot load the prompt folder no/such/folder"),
        "{err}"
    );
}

#[test]
fn a_malformed_history_names_file_and_line() {
    let path = format!("{FIXTURES}/malformed_history.jsonl");
    let err = fails(&["propose", "--history", &path]);
    assert!(
        err.contains(&format!(
            "history file {path}, line 2: EOF while parsing an object"
        )),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.jsonl");
    std::fs::write(
        &typo,
        "{\"candidate\": \"seq(linear(64), leakyrelu)\", \"scroe\": 0.5, \"outcome\": \"ok\"}\n",
    )
    .expect("write");
    let err = fails(&[
        "predict",
        "--candidate",
        "seq(linear(64), leakyrelu)",
        "--history",
        &typo.display().to_string(),
    ]);
    assert_eq!(
        portable(&err, Some(dir.path())),
        "error: history file [TEMP]/typo.jsonl, line 1: unknown field `scroe`, expected one of `candidate`, `score`, `params`, `outcome` (column 51)\n"
    );

    let err = fails(&["propose", "--history", "no/such/history.jsonl"]);
    assert!(err.contains("no/such/history.jsonl"), "{err}");
}
