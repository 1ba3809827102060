//! A small Gaussian process for the model-based strategy: an RBF kernel on standardised
//! feature vectors, a Cholesky solve, and expected improvement. Plain Rust, no BLAS: the
//! training set is capped (see [`MAX_POINTS`]), so the cubic solve stays in milliseconds.

/// Points a surrogate is fitted on at most; the best and the most recent are kept.
pub const MAX_POINTS: usize = 128;

/// Lengthscales tried, as factors of the square root of the (standardised) dimensions.
pub const LENGTHSCALES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// Noise variances tried, relative to the standardised targets' unit variance: from nearly
/// interpolating to a tenth of the variance as noise (the scores of a benchmark's top are
/// often within its noise).
pub const NOISES: [f64; 3] = [1e-3, 1e-2, 1e-1];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GpError {
    #[error("no training points")]
    Empty,
    #[error("feature vectors differ in length ({0} and {1})")]
    Ragged(usize, usize),
    #[error("the kernel matrix is not positive definite even with jitter")]
    NotPositiveDefinite,
}

/// Per-dimension standardisation, dropping dimensions that never vary.
#[derive(Clone, Debug)]
pub struct Scaler {
    keep: Vec<usize>,
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Scaler {
    pub fn fit(xs: &[Vec<f64>]) -> Scaler {
        let d = xs.first().map_or(0, Vec::len);
        let n = xs.len().max(1) as f64;
        let (mut keep, mut mean, mut std) = (vec![], vec![], vec![]);
        for j in 0..d {
            let m = xs.iter().map(|x| x[j]).sum::<f64>() / n;
            let v = xs.iter().map(|x| (x[j] - m).powi(2)).sum::<f64>() / n;
            if v > 1e-12 {
                keep.push(j);
                mean.push(m);
                std.push(v.sqrt());
            }
        }
        Scaler { keep, mean, std }
    }

    pub fn transform(&self, x: &[f64]) -> Vec<f64> {
        self.keep
            .iter()
            .enumerate()
            .map(|(k, &j)| (x.get(j).copied().unwrap_or(0.0) - self.mean[k]) / self.std[k])
            .collect()
    }

    pub fn dims(&self) -> usize {
        self.keep.len()
    }
}

/// Lower-triangular Cholesky factor of a symmetric positive-definite matrix (row-major n x n).
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s = a[i * n + j] - dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves L y = b (forward substitution).
fn forward(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s = b[i] - dot(&l[i * n..i * n + i], &y[..i]);
        y[i] = s / l[i * n + i];
    }
    y
}

/// Four running sums instead of one, so that the compiler may keep several products in
/// flight (a strict left-to-right sum of floats cannot be reordered): the surrogate's
/// inner loops, run for every candidate of every pool.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Solves L^T x = y (back substitution).
fn backward(l: &[f64], n: usize, y: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            let d = x[k] - y[k];
            acc[k] += d * d;
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// A fitted GP: zero-mean prior on standardised targets, RBF kernel with unit signal variance.
#[derive(Clone, Debug)]
pub struct Gp {
    scaler: Scaler,
    xs: Vec<Vec<f64>>,
    l: Vec<f64>,
    alpha: Vec<f64>,
    y_mean: f64,
    y_std: f64,
    pub lengthscale: f64,
    pub noise: f64,
}

impl Gp {
    /// Fits a GP, choosing the lengthscale (a factor of sqrt(dimensions)) and the noise from
    /// [`LENGTHSCALES`] x [`NOISES`] by marginal likelihood.
    pub fn fit(xs: &[Vec<f64>], ys: &[f64]) -> Result<Gp, GpError> {
        if xs.is_empty() || xs.len() != ys.len() {
            return Err(GpError::Empty);
        }
        let d0 = xs[0].len();
        if let Some(x) = xs.iter().find(|x| x.len() != d0) {
            return Err(GpError::Ragged(d0, x.len()));
        }
        let scaler = Scaler::fit(xs);
        let zs: Vec<Vec<f64>> = xs.iter().map(|x| scaler.transform(x)).collect();
        let n = ys.len() as f64;
        let y_mean = ys.iter().sum::<f64>() / n;
        let y_std = (ys.iter().map(|y| (y - y_mean).powi(2)).sum::<f64>() / n)
            .sqrt()
            .max(1e-9);
        let yn: Vec<f64> = ys.iter().map(|y| (y - y_mean) / y_std).collect();
        let base = (scaler.dims().max(1) as f64).sqrt();
        // Squared distances once for the whole grid.
        let m = zs.len();
        let mut d2 = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..i {
                let v = sq_dist(&zs[i], &zs[j]);
                d2[i * m + j] = v;
                d2[j * m + i] = v;
            }
        }
        let mut best: Option<(f64, Gp)> = None;
        for factor in LENGTHSCALES {
            for noise in NOISES {
                let ls = base * factor;
                let Some((gp, ll)) = Self::fit_with(&scaler, &zs, &d2, &yn, ls, noise) else {
                    continue;
                };
                if best.as_ref().is_none_or(|(b, _)| ll > *b) {
                    best = Some((
                        ll,
                        Gp {
                            y_mean,
                            y_std,
                            ..gp
                        },
                    ));
                }
            }
        }
        best.map(|(_, g)| g).ok_or(GpError::NotPositiveDefinite)
    }

    fn fit_with(
        scaler: &Scaler,
        zs: &[Vec<f64>],
        d2: &[f64],
        yn: &[f64],
        lengthscale: f64,
        noise: f64,
    ) -> Option<(Gp, f64)> {
        let n = zs.len();
        let k: Vec<f64> = d2
            .iter()
            .map(|d| (-d / (2.0 * lengthscale * lengthscale)).exp())
            .collect();
        let mut jitter = noise;
        let l = loop {
            let mut kk = k.clone();
            for i in 0..n {
                kk[i * n + i] += jitter;
            }
            if let Some(l) = cholesky(&kk, n) {
                break l;
            }
            jitter *= 10.0;
            if jitter > 1.0 {
                return None;
            }
        };
        let alpha = backward(&l, n, &forward(&l, n, yn));
        // log p(y) = -y^T alpha / 2 - sum log L_ii - n/2 log 2 pi
        let fit: f64 = yn.iter().zip(&alpha).map(|(y, a)| y * a).sum();
        let logdet: f64 = (0..n).map(|i| l[i * n + i].ln()).sum();
        let ll = -0.5 * fit - logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        Some((
            Gp {
                scaler: scaler.clone(),
                xs: zs.to_vec(),
                l,
                alpha,
                y_mean: 0.0,
                y_std: 1.0,
                lengthscale,
                noise: jitter,
            },
            ll,
        ))
    }

    /// Posterior mean and standard deviation at `x`, in the targets' units.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let z = self.scaler.transform(x);
        let n = self.xs.len();
        let ks: Vec<f64> = self
            .xs
            .iter()
            .map(|xi| (-sq_dist(xi, &z) / (2.0 * self.lengthscale * self.lengthscale)).exp())
            .collect();
        let mean: f64 = ks.iter().zip(&self.alpha).map(|(k, a)| k * a).sum();
        let v = forward(&self.l, n, &ks);
        let var = (1.0 - v.iter().map(|x| x * x).sum::<f64>()).max(1e-12);
        (self.y_mean + self.y_std * mean, self.y_std * var.sqrt())
    }
}

/// Standard normal density and distribution function.
fn phi(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn big_phi(z: f64) -> f64 {
    0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

/// Expected improvement over `best` (maximising) of a Gaussian prediction.
pub fn expected_improvement(mean: f64, std: f64, best: f64, xi: f64) -> f64 {
    if std <= 1e-12 {
        return (mean - best - xi).max(0.0);
    }
    let z = (mean - best - xi) / std;
    (mean - best - xi) * big_phi(z) + std * phi(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_reconstructs() {
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((s - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn gp_interpolates_and_is_uncertain_far_away() {
        let xs: Vec<Vec<f64>> = (0..12).map(|i| vec![i as f64 / 2.0, 1.0]).collect();
        let ys: Vec<f64> = xs.iter().map(|x| x[0].sin()).collect();
        let gp = Gp::fit(&xs, &ys).unwrap();
        for (x, y) in xs.iter().zip(&ys) {
            let (m, s) = gp.predict(x);
            assert!((m - y).abs() < 0.1, "mean {m} vs {y}");
            assert!(s < 0.2);
        }
        let (m_mid, _) = gp.predict(&[1.25, 1.0]);
        assert!((m_mid - 1.25f64.sin()).abs() < 0.15);
        let (_, s_far) = gp.predict(&[40.0, 1.0]);
        assert!(s_far > 0.5, "std far away {s_far}");
    }

    #[test]
    fn expected_improvement_prefers_high_mean_and_uncertainty() {
        let a = expected_improvement(1.0, 0.1, 0.9, 0.0);
        let b = expected_improvement(0.8, 0.1, 0.9, 0.0);
        let c = expected_improvement(0.8, 0.5, 0.9, 0.0);
        assert!(a > b && c > b);
        assert!(expected_improvement(0.5, 0.0, 0.9, 0.0) == 0.0);
        assert!((libm::erf(1.0) - 0.842_700_79).abs() < 1e-6);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(Gp::fit(&[], &[]).unwrap_err(), GpError::Empty);
        assert_eq!(
            Gp::fit(&[vec![1.0], vec![1.0, 2.0]], &[0.0, 1.0]).unwrap_err(),
            GpError::Ragged(1, 2)
        );
        // Constant features: the GP still fits (it predicts the mean).
        let gp = Gp::fit(&[vec![1.0], vec![1.0]], &[0.2, 0.4]).unwrap();
        assert!((gp.predict(&[1.0]).0 - 0.3).abs() < 0.05);
    }
}
