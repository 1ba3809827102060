//! Datasets as plain vectors: three splits of examples, loaded once. Loaders for the Unseen NAS
//! NumPy layout, MNIST-style IDX files (raw or gzipped) and the CIFAR binary batches; every
//! failure names the file and what is wrong with it. The training crate (`archsmith-torch`)
//! turns a [`Data`] into tensors.

use super::npy;
use crate::space::Shape;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One split: `x` float32 [N, ...input] flattened in row-major order, `y` int64 [N].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub x: Vec<f32>,
    pub y: Vec<i64>,
}

impl Split {
    /// A split from flat values; `input` is the shape of one example.
    pub fn from_vecs(x: &[f32], y: &[i64], input: Shape) -> Split {
        debug_assert_eq!(x.len() as u64, y.len() as u64 * input.numel());
        Split {
            x: x.to_vec(),
            y: y.to_vec(),
        }
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Examples `start .. start + len`; `per` is the number of values of one example.
    fn narrow(&self, start: usize, len: usize, per: usize) -> Split {
        Split {
            x: self.x[start * per..(start + len) * per].to_vec(),
            y: self.y[start..start + len].to_vec(),
        }
    }
}

/// A dataset ready for training: examples of shape `input`, labels in `0..classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    pub name: String,
    pub input: Shape,
    pub classes: u64,
    pub train: Split,
    pub valid: Split,
    pub test: Split,
}

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found{hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: truncated: {why}")]
    Truncated { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Mismatch { path: PathBuf, why: String },
    #[error("{path}: label {label} at index {index} is out of range 0..{classes}")]
    LabelRange {
        path: PathBuf,
        label: i64,
        index: usize,
        classes: u64,
    },
}

fn read(path: &Path, hint: &str) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: hint.to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                why: format!("not a valid gzip stream ({e})"),
            })?;
        return Ok(out);
    }
    Ok(bytes)
}

fn check_labels(path: &Path, y: &[i64], classes: u64) -> Result<(), DataError> {
    match y
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as u64 >= classes)
    {
        Some((index, &label)) => Err(DataError::LabelRange {
            path: path.to_path_buf(),
            label,
            index,
            classes,
        }),
        None => Ok(()),
    }
}

impl Data {
    /// Splits the last tenth of a training set off as the validation split.
    fn hold_out(name: String, input: Shape, classes: u64, all: Split, test: Split) -> Data {
        let n = all.len();
        let v = (n / 10).max(1).min(n.saturating_sub(1));
        let per = input.numel() as usize;
        Data {
            name,
            input,
            classes,
            train: all.narrow(0, n - v, per),
            valid: all.narrow(n - v, v, per),
            test,
        }
    }
}

/// Loads an Unseen NAS folder: `{train,valid,test}_{x,y}.npy`, x float [N, C, H, W] (or any
/// rank 2 to 4), y integer [N]. Classes are `max label + 1` unless given.
pub fn load_npy_dir(dir: &Path, classes: Option<u64>) -> Result<Data, DataError> {
    let mut splits = Vec::new();
    let mut input: Option<(Shape, PathBuf)> = None;
    let mut max_label = -1i64;
    let mut ys = Vec::new();
    for split in ["train", "valid", "test"] {
        let xp = dir.join(format!("{split}_x.npy"));
        let yp = dir.join(format!("{split}_y.npy"));
        let hint = format!(
            " (an Unseen NAS folder holds train_x.npy, train_y.npy, valid_x.npy, valid_y.npy, test_x.npy, test_y.npy; looked in {})",
            dir.display()
        );
        let parse = |p: &Path| {
            npy::parse(&read(p, &hint)?).map_err(|e| match e {
                npy::NpyError::Truncated(why) => DataError::Truncated {
                    path: p.to_path_buf(),
                    why,
                },
                other => DataError::Format {
                    path: p.to_path_buf(),
                    why: other.to_string(),
                },
            })
        };
        let xa = parse(&xp)?;
        let ya = parse(&yp)?;
        if matches!(xa.dtype, npy::Dtype::I32 | npy::Dtype::I64) {
            return Err(DataError::Format {
                path: xp,
                why: "x must be float32, float64 or uint8 images".into(),
            });
        }
        if matches!(ya.dtype, npy::Dtype::F32 | npy::Dtype::F64) {
            return Err(DataError::Format {
                path: yp,
                why: "y must hold integer labels (int64 or int32), not floats".into(),
            });
        }
        if xa.shape.len() < 2 || xa.shape.len() > 4 {
            return Err(DataError::Format {
                path: xp,
                why: format!(
                    "x has shape {:?}; expected [N, C, H, W], [N, S, D] or [N, D]",
                    xa.shape
                ),
            });
        }
        if ya.shape.len() != 1 || ya.shape[0] != xa.shape[0] {
            return Err(DataError::Mismatch {
                path: yp,
                why: format!(
                    "y has shape {:?} but {} holds {} examples",
                    ya.shape,
                    xp.display(),
                    xa.shape[0]
                ),
            });
        }
        let dims: Vec<u64> = xa.shape[1..].iter().map(|&d| d as u64).collect();
        let shape = Shape::new(&dims).ok_or_else(|| DataError::Format {
            path: xp.clone(),
            why: format!("x has an empty dimension in {:?}", xa.shape),
        })?;
        match &input {
            Some((s, first)) if *s != shape => {
                return Err(DataError::Mismatch {
                    path: xp,
                    why: format!("examples are {shape}, but {} holds {s}", first.display()),
                })
            }
            None => input = Some((shape, xp.clone())),
            _ => {}
        }
        let y = ya.to_i64();
        if let Some((i, &l)) = y.iter().enumerate().find(|(_, &l)| l < 0) {
            return Err(DataError::LabelRange {
                path: yp,
                label: l,
                index: i,
                classes: classes.unwrap_or(0),
            });
        }
        max_label = max_label.max(y.iter().copied().max().unwrap_or(-1));
        splits.push((xa.to_f32(), y.clone(), shape));
        ys.push((yp, y));
    }
    let classes = classes.unwrap_or((max_label + 1).max(1) as u64);
    for (p, y) in &ys {
        check_labels(p, y, classes)?;
    }
    let mut it = splits
        .into_iter()
        .map(|(x, y, s)| Split::from_vecs(&x, &y, s));
    let (Some(train), Some(valid), Some(test)) = (it.next(), it.next(), it.next()) else {
        unreachable!("three splits were read")
    };
    Ok(Data {
        name: format!("npy:{}", dir.display()),
        input: input.map(|(s, _)| s).unwrap_or(Shape::vec(1)),
        classes,
        train,
        valid,
        test,
    })
}

/// Finds `name` or `name.gz` in `dir`.
fn find_gz(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if !raw.exists() && gz.exists() {
        gz
    } else {
        raw
    }
}

fn idx(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bytes = read(
        path,
        " (MNIST-style IDX files, raw or .gz: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
    )?;
    let bad = |why: String| DataError::Format {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported",
            bytes[2]
        )));
    }
    let nd = bytes[3] as usize;
    if nd != want_dims {
        return Err(bad(format!(
            "IDX file has {nd} dimensions; expected {want_dims}"
        )));
    }
    let head = 4 + 4 * nd;
    if bytes.len() < head {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            why: "the header is cut off".into(),
        });
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - head < n {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            why: format!(
                "dimensions {dims:?} need {n} bytes of data, the file has {}",
                bytes.len() - head
            ),
        });
    }
    Ok((dims, bytes[head..head + n].to_vec()))
}

fn idx_split(dir: &Path, prefix: &str, classes: u64) -> Result<(Split, Shape), DataError> {
    let ip = find_gz(dir, &format!("{prefix}-images-idx3-ubyte"));
    let lp = find_gz(dir, &format!("{prefix}-labels-idx1-ubyte"));
    let (dims, pixels) = idx(&ip, 3)?;
    let (ldims, labels) = idx(&lp, 1)?;
    if ldims[0] != dims[0] {
        return Err(DataError::Mismatch {
            path: lp,
            why: format!(
                "{} labels but {} holds {} images",
                ldims[0],
                ip.display(),
                dims[0]
            ),
        });
    }
    let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    check_labels(&lp, &y, classes)?;
    let shape = Shape::im(1, dims[1] as u64, dims[2] as u64);
    let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Ok((Split::from_vecs(&x, &y, shape), shape))
}

/// Loads MNIST or Fashion-MNIST IDX files (raw or gzipped) from `dir`; the last tenth of
/// the training set is the validation split.
pub fn load_idx(dir: &Path, name: &str) -> Result<Data, DataError> {
    let (all, shape) = idx_split(dir, "train", 10)?;
    let (test, tshape) = idx_split(dir, "t10k", 10)?;
    if tshape != shape {
        return Err(DataError::Mismatch {
            path: find_gz(dir, "t10k-images-idx3-ubyte"),
            why: format!("test images are {tshape}, training images {shape}"),
        });
    }
    Ok(Data::hold_out(
        format!("{name}:{}", dir.display()),
        shape,
        10,
        all,
        test,
    ))
}

fn cifar_file(
    path: &Path,
    label_bytes: usize,
    classes: u64,
) -> Result<(Vec<f32>, Vec<i64>), DataError> {
    let bytes = read(
        path,
        " (CIFAR binary version: data_batch_1.bin .. data_batch_5.bin and test_batch.bin for CIFAR-10, train.bin and test.bin for CIFAR-100)",
    )?;
    let rec = label_bytes + 3072;
    if bytes.is_empty() || bytes.len() % rec != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            why: format!(
                "{} bytes is not a whole number of {rec}-byte records",
                bytes.len()
            ),
        });
    }
    let n = bytes.len() / rec;
    let mut x = Vec::with_capacity(n * 3072);
    let mut y = Vec::with_capacity(n);
    for r in bytes.chunks_exact(rec) {
        // CIFAR-100 records hold the coarse label first, then the fine label.
        y.push(r[label_bytes - 1] as i64);
        x.extend(r[label_bytes..].iter().map(|&p| p as f32 / 255.0));
    }
    check_labels(path, &y, classes)?;
    Ok((x, y))
}

/// Loads CIFAR-10 (`classes` 10) or CIFAR-100 (`classes` 100, fine labels) binary batches
/// from `dir` (or its `cifar-10-batches-bin` / `cifar-100-binary` subfolder).
pub fn load_cifar(dir: &Path, classes: u64) -> Result<Data, DataError> {
    let (sub, train_files, test_file, label_bytes): (&str, Vec<String>, &str, usize) =
        if classes == 100 {
            ("cifar-100-binary", vec!["train.bin".into()], "test.bin", 2)
        } else {
            (
                "cifar-10-batches-bin",
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
                "test_batch.bin",
                1,
            )
        };
    let dir = if dir.join(sub).is_dir() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for f in &train_files {
        let (bx, by) = cifar_file(&dir.join(f), label_bytes, classes)?;
        x.extend(bx);
        y.extend(by);
    }
    let shape = Shape::im(3, 32, 32);
    let all = Split::from_vecs(&x, &y, shape);
    let (tx, ty) = cifar_file(&dir.join(test_file), label_bytes, classes)?;
    let test = Split::from_vecs(&tx, &ty, shape);
    Ok(Data::hold_out(
        format!("cifar{classes}:{}", dir.display()),
        shape,
        classes,
        all,
        test,
    ))
}
