//! Synthetic tasks, generated deterministically from a seed and small enough for a CPU, each
//! built so that the architecture matters:
//!
//! - `Textures`: a striped or checked patch of random colour at a random place on a noisy
//!   image; the label is the pattern. Orientation is a local feature that must be found
//!   anywhere, so convolutions do well and a plain MLP on the pixels does poorly.
//! - `GlyphSum`: three channels each hold one of four digit-like glyphs at a jittered place;
//!   the label is the sum of the three glyph values (in the spirit of Unseen NAS's AddNIST):
//!   it composes recognition with arithmetic across channels.
//! - `SeqMatch`: a sequence of one-hot symbols; the label says whether the symbol at position
//!   0 occurs often in the rest. A distractor symbol is always frequent, so counting alone
//!   does not help: positions must exchange information (attention, token mixing) before the
//!   head averages them.
//! - `Teacher`: vectors labelled by a random two-layer tanh network.

use super::data::{Data, Split};
use crate::space::Shape;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A synthetic task family with its size parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Synth {
    /// 4 classes, 3 x size x size images.
    Textures { size: u64 },
    /// 10 classes, 3 x 16 x 16 images.
    GlyphSum,
    /// 2 classes, sequences of `len` positions x 8 symbols.
    SeqMatch { len: u64 },
    /// 4 classes, vectors of `dim` features.
    Teacher { dim: u64 },
}

impl Synth {
    pub fn input(self) -> Shape {
        match self {
            Synth::Textures { size } => Shape::im(3, size, size),
            Synth::GlyphSum => Shape::im(3, 16, 16),
            Synth::SeqMatch { len } => Shape::col(len, SYMBOLS),
            Synth::Teacher { dim } => Shape::vec(dim),
        }
    }

    pub fn classes(self) -> u64 {
        match self {
            Synth::Textures { .. } | Synth::Teacher { .. } => 4,
            Synth::GlyphSum => 10,
            Synth::SeqMatch { .. } => 2,
        }
    }

    /// Generates `n` examples (flat values, labels) from `rng`.
    fn generate(self, n: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<i64>) {
        let per = self.input().numel() as usize;
        let mut x = Vec::with_capacity(n * per);
        let mut y = Vec::with_capacity(n);
        // The teacher's weights come first in the stream, so every split shares them.
        let teacher = match self {
            Synth::Teacher { dim } => Some(Teacher::new(dim as usize, rng)),
            _ => None,
        };
        for i in 0..n {
            let (ex, label) = match self {
                Synth::Textures { size } => texture(size as usize, (i % 4) as i64, rng),
                Synth::GlyphSum => glyph_sum(rng),
                Synth::SeqMatch { len } => seq_match(len as usize, (i % 2) as i64, rng),
                Synth::Teacher { .. } => match &teacher {
                    Some(t) => t.example(rng),
                    None => unreachable!(),
                },
            };
            x.extend(ex);
            y.push(label);
        }
        (x, y)
    }

    /// The dataset: `sizes` = (train, valid, test) examples, all drawn from `seed`.
    pub fn data(self, name: &str, sizes: (usize, usize, usize), seed: u64) -> Data {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = self.input();
        let (x, y) = self.generate(sizes.0 + sizes.1 + sizes.2, &mut rng);
        let per = input.numel() as usize;
        let mut split = |from: usize, n: usize| {
            let mut order: Vec<usize> = (from..from + n).collect();
            order.shuffle(&mut rng);
            let xs: Vec<f32> = order
                .iter()
                .flat_map(|&i| x[i * per..(i + 1) * per].iter().copied())
                .collect();
            let ys: Vec<i64> = order.iter().map(|&i| y[i]).collect();
            Split::from_vecs(&xs, &ys, input)
        };
        let train = split(0, sizes.0);
        let valid = split(sizes.0, sizes.1);
        let test = split(sizes.0 + sizes.1, sizes.2);
        Data {
            name: name.to_string(),
            input,
            classes: self.classes(),
            train,
            valid,
            test,
        }
    }
}

fn texture(size: usize, label: i64, rng: &mut ChaCha8Rng) -> (Vec<f32>, i64) {
    let mut img: Vec<f32> = (0..3 * size * size)
        .map(|_| rng.gen_range(0.0..0.35))
        .collect();
    // A patch of 3/8 of the side, a multiple of 4 so every pattern has whole periods.
    let p = ((size * 3 / 8) / 4 * 4).max(4);
    let (r0, c0) = (rng.gen_range(0..=size - p), rng.gen_range(0..=size - p));
    let colour: [f32; 3] = [
        rng.gen_range(0.4..1.0),
        rng.gen_range(0.4..1.0),
        rng.gen_range(0.4..1.0),
    ];
    let (pr, pc) = (rng.gen_range(0..4), rng.gen_range(0..4));
    for r in 0..p {
        for c in 0..p {
            let (a, b) = (r + pr, c + pc);
            let on = match label {
                0 => a % 4 < 2,                // horizontal stripes
                1 => b % 4 < 2,                // vertical stripes
                2 => (a / 2 + b / 2) % 2 == 0, // checks
                _ => (a + b) % 4 < 2,          // diagonal stripes
            };
            for (ch, &col) in colour.iter().enumerate() {
                let v = &mut img[ch * size * size + (r0 + r) * size + c0 + c];
                *v = if on { col } else { 0.05 };
            }
        }
    }
    (img, label)
}

/// Four 6x6 digit-like glyphs for the values 0 to 3.
const GLYPHS: [[&str; 6]; 4] = [
    [".####.", "#....#", "#....#", "#....#", "#....#", ".####."],
    ["..##..", ".###..", "..##..", "..##..", "..##..", ".####."],
    [".####.", "#....#", "...##.", "..#...", ".#....", "######"],
    ["#####.", ".....#", "..###.", ".....#", ".....#", "#####."],
];

fn glyph_sum(rng: &mut ChaCha8Rng) -> (Vec<f32>, i64) {
    let s = 16;
    let mut img: Vec<f32> = (0..3 * s * s).map(|_| rng.gen_range(0.0..0.3)).collect();
    let mut label = 0;
    for ch in 0..3 {
        let g = rng.gen_range(0..4usize);
        label += g as i64;
        let (r0, c0) = (rng.gen_range(0..=s - 6), rng.gen_range(0..=s - 6));
        for (r, row) in GLYPHS[g].iter().enumerate() {
            for (c, b) in row.bytes().enumerate() {
                if b == b'#' {
                    img[ch * s * s + (r0 + r) * s + c0 + c] = rng.gen_range(0.7..1.0);
                }
            }
        }
    }
    (img, label)
}

const SYMBOLS: u64 = 8;

fn seq_match(len: usize, label: i64, rng: &mut ChaCha8Rng) -> (Vec<f32>, i64) {
    let k = SYMBOLS as usize;
    let q = rng.gen_range(0..k);
    let d = (q + rng.gen_range(1..k)) % k;
    let hi = (len * 3 / 16).max(2);
    let often = |rng: &mut ChaCha8Rng| rng.gen_range(hi..=hi + hi / 2);
    let q_count = if label == 1 {
        often(rng)
    } else {
        rng.gen_range(0..=hi / 3)
    };
    let d_count = often(rng);
    let mut rest: Vec<usize> = Vec::with_capacity(len - 1);
    rest.extend(std::iter::repeat_n(q, q_count));
    rest.extend(std::iter::repeat_n(d, d_count));
    while rest.len() < len - 1 {
        let s = rng.gen_range(0..k);
        if s != q && s != d {
            rest.push(s);
        }
    }
    rest.truncate(len - 1);
    rest.shuffle(rng);
    let mut x = vec![0f32; len * k];
    x[q] = 1.0;
    for (i, &s) in rest.iter().enumerate() {
        x[(i + 1) * k + s] = 1.0;
    }
    (x, label)
}

struct Teacher {
    dim: usize,
    w1: Vec<f32>,
    w2: Vec<f32>,
}

const TEACHER_HIDDEN: usize = 32;

fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller.
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.gen();
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

impl Teacher {
    fn new(dim: usize, rng: &mut ChaCha8Rng) -> Teacher {
        let s1 = 2.0 / (dim as f32).sqrt();
        let s2 = 1.0 / (TEACHER_HIDDEN as f32).sqrt();
        Teacher {
            dim,
            w1: (0..TEACHER_HIDDEN * dim).map(|_| gauss(rng) * s1).collect(),
            w2: (0..4 * TEACHER_HIDDEN).map(|_| gauss(rng) * s2).collect(),
        }
    }

    fn example(&self, rng: &mut ChaCha8Rng) -> (Vec<f32>, i64) {
        let x: Vec<f32> = (0..self.dim).map(|_| gauss(rng)).collect();
        let h: Vec<f32> = self
            .w1
            .chunks(self.dim)
            .map(|w| w.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>().tanh())
            .collect();
        let label = self
            .w2
            .chunks(TEACHER_HIDDEN)
            .map(|w| w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>())
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (i, v)| if v > best.1 { (i, v) } else { best },
            )
            .0;
        (x, label as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_labels_fit() {
        for s in [
            Synth::Textures { size: 16 },
            Synth::GlyphSum,
            Synth::SeqMatch { len: 32 },
            Synth::Teacher { dim: 32 },
        ] {
            let a = s.data("t", (40, 10, 10), 7);
            let b = s.data("t", (40, 10, 10), 7);
            assert_eq!(a.train.x, b.train.x, "{s:?}");
            assert_eq!(a.train.len(), 40);
            let max = a.train.y.iter().copied().max().unwrap();
            assert!(max < s.classes() as i64 && a.train.y.iter().all(|&y| y >= 0));
            assert_eq!(a.test.len(), 10);
            assert_eq!(a.test.x.len() as u64, 10 * s.input().numel());
        }
    }
}
