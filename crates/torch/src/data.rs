//! Datasets as tensors: the plain splits that `archsmith::train::data` loads or generates,
//! moved into libtorch once and normalised with the training split's statistics.

use archsmith::space::Shape;
use archsmith::train::{data as raw, DataError, Task};
use tch::{Device, Kind, Tensor};

/// One split: `x` float32 [N, ...input], `y` int64 [N].
#[derive(Debug)]
pub struct Split {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split {
    /// A split from flat values; `input` is the shape of one example.
    pub fn from_vecs(x: &[f32], y: &[i64], input: Shape) -> Split {
        let mut dims = vec![y.len() as i64];
        dims.extend(input.dims().iter().map(|&d| d as i64));
        Split {
            x: Tensor::from_slice(x).view(dims.as_slice()),
            y: Tensor::from_slice(y),
        }
    }

    pub fn len(&self) -> usize {
        self.y.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_device(&self, d: Device) -> Split {
        Split {
            x: self.x.to_device(d),
            y: self.y.to_device(d),
        }
    }
}

/// A dataset ready for training: examples of shape `input`, labels in `0..classes`.
#[derive(Debug)]
pub struct Data {
    pub name: String,
    pub input: Shape,
    pub classes: u64,
    pub train: Split,
    pub valid: Split,
    pub test: Split,
}

impl Data {
    /// The plain data as tensors, as it is (not normalised).
    pub fn from_raw(d: &raw::Data) -> Data {
        let split = |s: &raw::Split| Split::from_vecs(&s.x, &s.y, d.input);
        Data {
            name: d.name.clone(),
            input: d.input,
            classes: d.classes,
            train: split(&d.train),
            valid: split(&d.valid),
            test: split(&d.test),
        }
    }

    /// Normalises every split with the per-channel mean and standard deviation of the training
    /// split (channels: dimension 1 of images, the last dimension of sequences and vectors).
    pub fn normalise(&mut self) {
        let r = self.train.x.dim() as i64;
        let (dims, view): (Vec<i64>, Vec<i64>) = match self.input.rank() {
            3 => (vec![0, 2, 3], vec![1, -1, 1, 1]),
            _ => ((0..r - 1).collect(), {
                let mut v = vec![1; r as usize];
                v[r as usize - 1] = -1;
                v
            }),
        };
        let x = &self.train.x;
        let mean = x.mean_dim(dims.as_slice(), true, Kind::Float);
        let std = x
            .std_dim(dims.as_slice(), false, true)
            .clamp_min(1e-6)
            .view(view.as_slice());
        let mean = mean.view(view.as_slice());
        for s in [&mut self.train, &mut self.valid, &mut self.test] {
            s.x = (&s.x - &mean) / &std;
        }
    }

    /// The same data with every example flattened to a vector (for MLP spaces on images).
    pub fn flattened(&self) -> Data {
        let n = self.input.numel();
        let f = |s: &Split| Split {
            x: s.x.reshape([-1, n as i64]),
            y: s.y.shallow_clone(),
        };
        Data {
            name: format!("{} (flattened)", self.name),
            input: Shape::vec(n),
            classes: self.classes,
            train: f(&self.train),
            valid: f(&self.valid),
            test: f(&self.test),
        }
    }
}

/// Loads (or generates) a task's data as tensors, normalised with the training split's
/// statistics.
pub fn load(task: &Task) -> Result<Data, DataError> {
    let mut d = Data::from_raw(&task.load_raw()?);
    d.normalise();
    Ok(d)
}

/// [`load`] as a method of [`Task`], for `task.load()` at call sites that train.
pub trait TaskData {
    fn load(&self) -> Result<Data, DataError>;
}

impl TaskData for Task {
    fn load(&self) -> Result<Data, DataError> {
        load(self)
    }
}
