//! Symbolic tensor shapes: the dimensions after the batch dimension, and the mode they imply.
//!
//! Shapes are small `Copy` values so that the sampler and validator never allocate for them;
//! that is most of what makes validation take microseconds instead of a dummy forward pass.

use std::fmt;
use std::str::FromStr;

/// The largest rank (dimensions after batch) any operation produces.
pub const MAX_RANK: usize = 3;
/// The largest dimension a tensor may have.
pub const MAX_DIM: u64 = 1 << 24;
/// The most elements one example's tensor may have (far past any limit, but it keeps every
/// count in range of u64).
pub const MAX_NUMEL: u64 = 1 << 40;

/// The dimensions of a tensor after the batch dimension: `[D]`, `[S, D]` or `[C, H, W]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    rank: u8,
    dims: [u64; MAX_RANK],
}

/// How a tensor is laid out, as einspace names it (plus plain vectors for MLP spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `[B, D]`: a feature vector.
    Vec,
    /// `[B, S, D]`: a sequence of positions (einspace's "col" mode).
    Col,
    /// `[B, C, H, W]`: an image (einspace's "im" mode).
    Im,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vec => "vec",
            Mode::Col => "col",
            Mode::Im => "im",
        }
    }
}

impl Shape {
    /// A shape from its dimensions; `None` for rank 0, above [`MAX_RANK`], or a zero dimension.
    pub fn new(dims: &[u64]) -> Option<Shape> {
        if dims.is_empty() || dims.len() > MAX_RANK || dims.contains(&0) {
            return None;
        }
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Some(Shape {
            rank: dims.len() as u8,
            dims: d,
        })
    }

    pub fn vec(d: u64) -> Shape {
        Shape {
            rank: 1,
            dims: [d, 0, 0],
        }
    }

    pub fn col(s: u64, d: u64) -> Shape {
        Shape {
            rank: 2,
            dims: [s, d, 0],
        }
    }

    pub fn im(c: u64, h: u64, w: u64) -> Shape {
        Shape {
            rank: 3,
            dims: [c, h, w],
        }
    }

    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.rank as usize]
    }

    pub fn mode(&self) -> Mode {
        match self.rank {
            1 => Mode::Vec,
            2 => Mode::Col,
            _ => Mode::Im,
        }
    }

    /// The last dimension: what `linear` acts on.
    pub fn last(&self) -> u64 {
        self.dims[self.rank as usize - 1]
    }

    /// Dimension `i` counted from 1 after batch, as einspace's `group(k, dim)` and `cat(dim, k)`
    /// count them.
    pub fn dim(&self, i: usize) -> Option<u64> {
        (1..=self.rank()).contains(&i).then(|| self.dims[i - 1])
    }

    pub fn with_dim(mut self, i: usize, v: u64) -> Shape {
        self.dims[i - 1] = v;
        self
    }

    pub fn with_last(self, v: u64) -> Shape {
        let r = self.rank();
        self.with_dim(r, v)
    }

    /// Number of elements for one example (saturating: shapes past [`MAX_NUMEL`] are refused
    /// by the checker, but arithmetic on them must not overflow first).
    pub fn numel(&self) -> u64 {
        self.dims().iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Whether the shape is past what any rule accepts: a dimension over [`MAX_DIM`] or more
    /// than [`MAX_NUMEL`] elements per example.
    pub fn too_large(&self) -> bool {
        self.dims().iter().any(|&d| d > MAX_DIM) || self.numel() > MAX_NUMEL
    }

    /// Positions the last dimension is applied at (`numel / last`).
    pub fn positions(&self) -> u64 {
        self.numel() / self.last()
    }

    /// The feature count the head sees after averaging over positions: channels for images,
    /// the last dimension otherwise.
    pub fn features(&self) -> u64 {
        match self.mode() {
            Mode::Im => self.dims[0],
            _ => self.last(),
        }
    }

    /// The width the network's head maps to the classes under `head`: an image's channels
    /// (averaged over its positions), a vector as it is, and a sequence's features
    /// ([`Head::Positions`]) or its positions ([`Head::Einspace`]).
    pub fn head_width(&self, head: Head) -> u64 {
        match (self.mode(), head) {
            (Mode::Col, Head::Einspace) => self.dims[0],
            _ => self.features(),
        }
    }

    /// The dimensions of a batch of this shape (the batch is dimension 0) that `head`
    /// averages over before its linear layer; see [`Shape::head_width`].
    pub fn head_pool(&self, head: Head) -> &'static [i64] {
        match (self.mode(), head) {
            (Mode::Im, _) => &[2, 3],
            (Mode::Col, Head::Positions) => &[1],
            (Mode::Col, Head::Einspace) => &[2],
            (Mode::Vec, _) => &[],
        }
    }
}

/// How the network's head reads a sequence (`col`, positions x features) before its one
/// linear layer to the classes. Images are averaged over their positions and vectors taken
/// as they are under both.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Averaged over positions, the features mapped to the classes (archsmith's default: a
    /// sequence model's usual pooling, and the one its seeds learn with on small data).
    #[default]
    Positions,
    /// einspace's `Network` head: averaged over features (`b s d -> b s`), the positions
    /// mapped to the classes. Gives einspace's parameter counts for its transformer and
    /// MLP-Mixer seeds.
    Einspace,
}

impl Head {
    pub fn name(self) -> &'static str {
        match self {
            Head::Positions => "positions",
            Head::Einspace => "einspace",
        }
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                f.write_str("x")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} ({})", self.mode().name())
    }
}

impl serde::Serialize for Shape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.dims().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<u64> = Vec::deserialize(d)?;
        Shape::new(&v).ok_or_else(|| serde::de::Error::custom("a shape has 1 to 3 non-zero dims"))
    }
}

/// Why a shape given on the command line or in a config could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad input shape `{text}`: {why} (write it like 3x32x32, 64x128 or 784)")]
pub struct ShapeParseError {
    pub text: String,
    pub why: String,
}

impl FromStr for Shape {
    type Err = ShapeParseError;

    fn from_str(s: &str) -> Result<Shape, ShapeParseError> {
        let err = |why: &str| ShapeParseError {
            text: s.to_string(),
            why: why.to_string(),
        };
        let mut dims = Vec::new();
        for part in s.trim().split(['x', 'X', ',']) {
            let part = part.trim();
            let d: u64 = part
                .parse()
                .map_err(|_| err(&format!("`{part}` is not a whole number")))?;
            if d == 0 {
                return Err(err("dimensions must be positive"));
            }
            if d > MAX_DIM {
                return Err(err(&format!("dimension {d} is larger than {MAX_DIM}")));
            }
            dims.push(d);
        }
        let shape = Shape::new(&dims)
            .ok_or_else(|| err("a shape has 1, 2 or 3 dimensions after the batch"))?;
        if shape.too_large() {
            return Err(err(&format!("more than {MAX_NUMEL} elements")));
        }
        Ok(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: Shape = "3x32x32".parse().unwrap();
        assert_eq!(s, Shape::im(3, 32, 32));
        assert_eq!(s.to_string(), "3x32x32");
        assert_eq!(s.mode(), Mode::Im);
        assert_eq!("64,10".parse::<Shape>().unwrap(), Shape::col(64, 10));
        assert!("3x0x3".parse::<Shape>().is_err());
        assert!("1x2x3x4".parse::<Shape>().is_err());
        assert!("axb"
            .parse::<Shape>()
            .unwrap_err()
            .to_string()
            .contains("`a`"));
    }
}
