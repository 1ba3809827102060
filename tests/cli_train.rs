//! `archsmith train` and `archsmith task` from the outside.

use assert_cmd::Command;

fn archsmith() -> Command {
    Command::cargo_bin("archsmith").unwrap()
}

#[test]
fn task_list_and_show() {
    let out = archsmith().args(["task", "list"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for t in ["textures", "glyph-sum", "seq-match", "teacher", "cifar10"] {
        assert!(text.contains(t), "{text}");
    }
    let out = archsmith()
        .args(["task", "show", "textures"])
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("3x32x32") && text.contains("\"optimizer\""),
        "{text}"
    );
    archsmith().args(["task", "show", "nope"]).assert().code(2);
}

#[test]
fn train_prints_a_json_result() {
    let out = archsmith()
        .args([
            "train",
            "--space",
            "mlp",
            "--task",
            "teacher",
            "--seed-arch",
            "mlp2",
            "--epochs",
            "1",
            "--max-steps",
            "5",
            "--device",
            "cpu",
            "--seed",
            "3",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["steps"], 5);
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["seed"], 3);
    assert!(v["score"].as_f64().unwrap() > 0.0);
    assert_eq!(v["curve"].as_array().unwrap().len(), 1);
    assert!(v["failure"].is_null());
}

#[test]
fn train_reads_stdin_and_rejects_invalid_candidates() {
    archsmith()
        .args([
            "train",
            "--space",
            "mlp",
            "--task",
            "teacher",
            "--max-steps",
            "2",
        ])
        .write_stdin("seq(linear(32), relu, linear(32), tanh)")
        .assert()
        .success();
    let out = archsmith()
        .args(["train", "--space", "einspace", "--task", "seq-match"])
        .write_stdin("route(im2col(3,1,1), linear(16), col2im)")
        .assert()
        .code(1);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("invalid") && err.contains("im2col"), "{err}");
}

#[test]
fn cuda_without_a_gpu_is_refused() {
    let gpus = archsmith().args(["worker", "--gpus"]).output().unwrap();
    assert!(gpus.status.success(), "{gpus:?}");
    if String::from_utf8_lossy(&gpus.stdout).trim() != "0" {
        eprintln!("skipped: CUDA is available");
        return;
    }
    let out = archsmith()
        .args([
            "train",
            "--space",
            "mlp",
            "--task",
            "teacher",
            "--seed-arch",
            "mlp2",
        ])
        .args(["--device", "cuda"])
        .assert()
        .code(2);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("CUDA is not available"), "{err}");
}

#[test]
fn train_program_exits_3_when_training_fails() {
    // Gradient ascent with lr / eps for a step: every learning rate diverges.
    let out = archsmith()
        .args([
            "train-program",
            "--space",
            "optimizer",
            "--task",
            "teacher",
            "--program",
            "-",
            "--lr",
            "0.1",
            "--sizes",
            "512,256,0",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ])
        .write_stdin("prog(state(m), assign(m, g), step(neg(mul(div(lr, eps), m))))\n")
        .assert()
        .code(3);
    // As `train` does, it still prints the result with the reason.
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(!v["failure"].is_null(), "{v}");
}
