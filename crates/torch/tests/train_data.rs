//! Loaders on small files written here in each format, good and corrupt: every failure names
//! the file and the problem.

use archsmith::space::Shape;
use archsmith::train::data::{self as raw, DataError};
use archsmith::train::npy;
use archsmith::train::Task;
use archsmith_torch::{Data, TaskData};
use std::io::Write;
use std::path::{Path, PathBuf};

// The loaders read plain vectors (archsmith's core); these tests look at them as the trainer
// does, as tensors.
fn load_npy_dir(dir: &Path, classes: Option<u64>) -> Result<Data, DataError> {
    raw::load_npy_dir(dir, classes).map(|d| Data::from_raw(&d))
}

fn load_idx(dir: &Path, name: &str) -> Result<Data, DataError> {
    raw::load_idx(dir, name).map(|d| Data::from_raw(&d))
}

fn load_cifar(dir: &Path, classes: u64) -> Result<Data, DataError> {
    raw::load_cifar(dir, classes).map(|d| Data::from_raw(&d))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("archsmith-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_npy_split(dir: &Path, split: &str, n: usize, labels: &[i64]) {
    let x: Vec<f32> = (0..n * 2 * 4 * 4).map(|i| (i % 7) as f32).collect();
    npy::write_f32(&dir.join(format!("{split}_x.npy")), &[n, 2, 4, 4], &x).unwrap();
    npy::write_i64(&dir.join(format!("{split}_y.npy")), &[labels.len()], labels).unwrap();
}

fn npy_dir(name: &str) -> PathBuf {
    let d = tmp(name);
    write_npy_split(&d, "train", 6, &[0, 1, 2, 0, 1, 2]);
    write_npy_split(&d, "valid", 3, &[0, 1, 2]);
    write_npy_split(&d, "test", 3, &[2, 1, 0]);
    d
}

#[test]
fn npy_folder_loads() {
    let d = npy_dir("ok");
    let data = load_npy_dir(&d, None).unwrap();
    assert_eq!(data.input, Shape::im(2, 4, 4));
    assert_eq!(data.classes, 3);
    assert_eq!(data.train.len(), 6);
    assert_eq!(data.test.x.size(), vec![3, 2, 4, 4]);
    // float64 images and int32 labels are read too
    let bytes: Vec<u8> = (0..3 * 32).flat_map(|i| (i as f64).to_le_bytes()).collect();
    std::fs::write(
        d.join("test_x.npy"),
        npy::to_bytes(npy::Dtype::F64, &[3, 2, 4, 4], &bytes),
    )
    .unwrap();
    let labels: Vec<u8> = [0i32, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(
        d.join("test_y.npy"),
        npy::to_bytes(npy::Dtype::I32, &[3], &labels),
    )
    .unwrap();
    let data = load_npy_dir(&d, None).unwrap();
    assert_eq!(data.test.y.int64_value(&[2]), 2);
    // and through a task, normalised
    let t = Task::resolve(&format!("npy:{}", d.display())).unwrap();
    let data = t.load().unwrap();
    let m = data.train.x.mean(tch::Kind::Float).double_value(&[]);
    assert!(m.abs() < 1e-4, "normalised mean {m}");
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

#[test]
fn npy_folder_errors_name_the_file() {
    let d = npy_dir("missing");
    std::fs::remove_file(d.join("valid_y.npy")).unwrap();
    let e = err_text(load_npy_dir(&d, None).unwrap_err());
    assert!(e.contains("valid_y.npy") && e.contains("not found"), "{e}");

    let d = npy_dir("truncated");
    let p = d.join("train_x.npy");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 10]).unwrap();
    let e = load_npy_dir(&d, None).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("train_x.npy"), "{e}");

    let d = npy_dir("mismatch");
    write_npy_split(&d, "train", 6, &[0, 1, 2]);
    let e = load_npy_dir(&d, None).unwrap_err();
    assert!(matches!(e, DataError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("train_y.npy"), "{e}");

    let d = npy_dir("range");
    write_npy_split(&d, "test", 3, &[0, -1, 2]);
    let e = err_text(load_npy_dir(&d, None).unwrap_err());
    assert!(e.contains("test_y.npy") && e.contains("label -1"), "{e}");

    let d = npy_dir("classes");
    write_npy_split(&d, "valid", 3, &[0, 5, 2]);
    let e = err_text(load_npy_dir(&d, Some(3)).unwrap_err());
    assert!(
        e.contains("valid_y.npy") && e.contains("out of range 0..3"),
        "{e}"
    );

    let d = npy_dir("garbage");
    std::fs::write(d.join("test_x.npy"), b"not numpy at all").unwrap();
    let e = err_text(load_npy_dir(&d, None).unwrap_err());
    assert!(e.contains("test_x.npy") && e.contains("magic"), "{e}");

    let d = npy_dir("float-labels");
    npy::write_f32(&d.join("train_y.npy"), &[6], &[0.0; 6]).unwrap();
    let e = err_text(load_npy_dir(&d, None).unwrap_err());
    assert!(e.contains("train_y.npy") && e.contains("integer"), "{e}");
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn write(path: &Path, bytes: &[u8], gz: bool) {
    if gz {
        let f = std::fs::File::create(path.with_extension("gz_tmp")).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
        let name = format!("{}.gz", path.file_name().unwrap().to_string_lossy());
        std::fs::rename(path.with_extension("gz_tmp"), path.with_file_name(name)).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

fn mnist_dir(name: &str, gz: bool, bad_label: Option<u8>) -> PathBuf {
    let d = tmp(name);
    for (prefix, n) in [("train", 20u32), ("t10k", 5)] {
        let pixels: Vec<u8> = (0..n * 28 * 28).map(|i| (i % 251) as u8).collect();
        let mut labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        if let (Some(l), "t10k") = (bad_label, prefix) {
            labels[3] = l;
        }
        write(
            &d.join(format!("{prefix}-images-idx3-ubyte")),
            &idx_bytes(&[n, 28, 28], &pixels),
            gz,
        );
        write(
            &d.join(format!("{prefix}-labels-idx1-ubyte")),
            &idx_bytes(&[n], &labels),
            gz,
        );
    }
    d
}

#[test]
fn idx_files_load_raw_and_gzipped() {
    for gz in [false, true] {
        let d = mnist_dir(if gz { "idx-gz" } else { "idx-raw" }, gz, None);
        let data = load_idx(&d, "mnist").unwrap();
        assert_eq!(data.input, Shape::im(1, 28, 28));
        assert_eq!(data.train.len() + data.valid.len(), 20);
        assert_eq!(data.valid.len(), 2);
        assert_eq!(data.test.len(), 5);
        let v = data.train.x.double_value(&[0, 0, 0, 1]);
        assert!((v - 1.0 / 255.0).abs() < 1e-6);
    }
}

#[test]
fn idx_errors_name_the_file() {
    let d = mnist_dir("idx-range", false, Some(12));
    let e = err_text(load_idx(&d, "mnist").unwrap_err());
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("label 12 at index 3"),
        "{e}"
    );

    let d = mnist_dir("idx-trunc", false, None);
    let p = d.join("train-images-idx3-ubyte");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    let e = load_idx(&d, "mnist").unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");

    let d = mnist_dir("idx-count", false, None);
    write(
        &d.join("t10k-labels-idx1-ubyte"),
        &idx_bytes(&[4], &[1, 2, 3, 4]),
        false,
    );
    let e = err_text(load_idx(&d, "mnist").unwrap_err());
    assert!(e.contains("4 labels but") && e.contains("5 images"), "{e}");

    let d = mnist_dir("idx-badgz", true, None);
    std::fs::write(d.join("t10k-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    let e = err_text(load_idx(&d, "mnist").unwrap_err());
    assert!(
        e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"),
        "{e}"
    );

    let e = err_text(load_idx(Path::new("/nonexistent/mnist"), "mnist").unwrap_err());
    assert!(e.contains("/nonexistent/mnist/train-images-idx3-ubyte") && e.contains("not found"));
}

fn cifar_records(n: usize, label_bytes: usize, label: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        for _ in 0..label_bytes {
            b.push(label(i));
        }
        b.extend((0..3072).map(|j| ((i + j) % 256) as u8));
    }
    b
}

#[test]
fn cifar_batches_load_and_fail_clearly() {
    let d = tmp("cifar10");
    for i in 1..=5 {
        std::fs::write(
            d.join(format!("data_batch_{i}.bin")),
            cifar_records(4, 1, |j| (j % 10) as u8),
        )
        .unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), cifar_records(3, 1, |_| 9)).unwrap();
    let data = load_cifar(&d, 10).unwrap();
    assert_eq!(data.input, Shape::im(3, 32, 32));
    assert_eq!(data.train.len() + data.valid.len(), 20);
    assert_eq!(data.test.y.int64_value(&[0]), 9);

    let mut b = cifar_records(3, 1, |_| 1);
    b.truncate(b.len() - 1);
    std::fs::write(d.join("test_batch.bin"), b).unwrap();
    let e = err_text(load_cifar(&d, 10).unwrap_err());
    assert!(
        e.contains("test_batch.bin") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(d.join("data_batch_3.bin"), cifar_records(2, 1, |_| 10)).unwrap();
    let e = err_text(load_cifar(&d, 10).unwrap_err());
    assert!(
        e.contains("data_batch_3.bin") && e.contains("label 10"),
        "{e}"
    );

    let d = tmp("cifar100");
    let sub = d.join("cifar-100-binary");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("train.bin"),
        cifar_records(10, 2, |j| (j * 9) as u8),
    )
    .unwrap();
    std::fs::write(sub.join("test.bin"), cifar_records(2, 2, |_| 99)).unwrap();
    let data = load_cifar(&d, 100).unwrap();
    assert_eq!(data.classes, 100);
    assert_eq!(data.test.y.int64_value(&[1]), 99);
    std::fs::write(sub.join("test.bin"), cifar_records(2, 2, |_| 120)).unwrap();
    let e = err_text(load_cifar(&d, 100).unwrap_err());
    assert!(
        e.contains("test.bin") && e.contains("out of range 0..100"),
        "{e}"
    );
    std::fs::remove_file(sub.join("train.bin")).unwrap();
    let e = err_text(load_cifar(&d, 100).unwrap_err());
    assert!(e.contains("train.bin") && e.contains("not found"), "{e}");
}

#[test]
fn tasks_resolve_and_describe_themselves() {
    for name in archsmith::train::task::SYNTHETIC {
        let t = Task::resolve(name).unwrap();
        assert!(t.describe().contains("default recipe"));
    }
    let t = Task::resolve("cifar10:/data/c10").unwrap();
    assert_eq!(t.classes, Some(10));
    let e = Task::resolve("imagenet").unwrap_err().to_string();
    assert!(e.contains("unknown task") && e.contains("textures"), "{e}");
    assert!(Task::list().len() >= 4);
}
