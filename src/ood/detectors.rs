//! Post-hoc detectors on the penultimate features (the input of the last linear layer): what each
//! fits comes from the ID training pass only (features, logits, labels), never from a test or OOD
//! set. All are computed on the host from one readback of features and logits per batch; fits and
//! distances in f64 except KNN's similarity matrix (f32, as the reference implementations).
//!
//! Definitions (higher = more ID), as in the papers and README's "Detectors":
//! - Mahalanobis (Lee et al. 2018, penultimate layer, no input preprocessing): class means of the
//!   training features, one shared covariance of the class-centred features, its pseudo-inverse;
//!   score = -min_c (f - mu_c)^T Sigma^+ (f - mu_c).
//! - KNN (Sun et al. 2022): L2-normalised features; score = -(distance to the k-th nearest
//!   normalised training feature).
//! - ViM (Wang et al. 2022): origin u = -pinv(W) b; principal subspace (D largest eigenvalues) of
//!   the covariance of the training features centred at u; residual = norm of (f - u) off that
//!   subspace; alpha = mean training max-logit / mean training residual;
//!   score = logsumexp(logits) - alpha * residual.
//! - ReAct (Sun et al. 2021): features clipped at the p-th percentile of every training
//!   activation, then Energy.
//! - ASH-S (Djurisic et al. 2023): per sample, keep the largest d - round(d p / 100) activations,
//!   zero the rest, scale the kept ones by exp(s1 / s2) (sums before and after), then Energy.
//! - DICE (Sun & Li 2022): keep the last-layer weights whose contribution (mean training feature x
//!   weight) is above its p-th percentile, zero the rest, then Energy.

use super::Score;
use crate::error::{Error, Result};
use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The detectors' settings: `[detectors]` in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// ODIN costs one backward pass per evaluated sample (about 3x an evaluation): opt-in.
    pub odin: bool,
    pub odin_temperature: f64,
    /// The input step, in [0, 1] pixel units as in the paper (divided by each channel's std on
    /// the normalised input).
    pub odin_epsilon: f64,
    /// KNN's k.
    pub knn_k: usize,
    /// ViM's principal dimension D (default: half the feature dimension).
    pub vim_dim: Option<usize>,
    /// ReAct clips at this percentile of the training activations.
    pub react_percentile: f64,
    /// ASH-S prunes this percentile of each sample's activations.
    pub ash_percentile: f64,
    /// DICE keeps the weights whose contribution is above this percentile.
    pub dice_percentile: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            odin: false,
            odin_temperature: 1000.0,
            odin_epsilon: 0.0014,
            knn_k: 50,
            vim_dim: None,
            react_percentile: 90.0,
            ash_percentile: 90.0,
            dice_percentile: 90.0,
        }
    }
}

impl DetectorConfig {
    /// Every bad field at once.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        if !(self.odin_temperature.is_finite() && self.odin_temperature > 0.0) {
            bad.push(format!("detectors.odin_temperature must be > 0 (got {})", self.odin_temperature));
        }
        if !(self.odin_epsilon.is_finite() && self.odin_epsilon >= 0.0) {
            bad.push(format!("detectors.odin_epsilon must be >= 0 (got {})", self.odin_epsilon));
        }
        if self.knn_k == 0 {
            bad.push("detectors.knn_k must be at least 1".into());
        }
        if self.vim_dim == Some(0) {
            bad.push("detectors.vim_dim must be at least 1".into());
        }
        for (name, p) in [("react_percentile", self.react_percentile), ("ash_percentile", self.ash_percentile), ("dice_percentile", self.dice_percentile)] {
            if !(p.is_finite() && (0.0..100.0).contains(&p)) {
                bad.push(format!("detectors.{name} must be in [0, 100) (got {p})"));
            }
        }
        crate::config::check(bad)
    }
}

/// The classifier's last linear layer on the host: logits = W f + b.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub classes: usize,
    pub dim: usize,
    /// `[classes, dim]`, row-major (PyTorch's layout).
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Head {
    fn logits_f64<F: Copy + Into<f64>>(&self, weight: &[f64], features: &[F]) -> Vec<f64> {
        let mut out = Vec::with_capacity(features.len() / self.dim * self.classes);
        for f in features.chunks_exact(self.dim) {
            for (w, b) in weight.chunks_exact(self.dim).zip(&self.bias) {
                out.push(w.iter().zip(f).map(|(w, &x)| w * x.into()).sum::<f64>() + f64::from(*b));
            }
        }
        out
    }

    fn weight_f64(&self) -> Vec<f64> {
        self.weight.iter().map(|&w| f64::from(w)).collect()
    }
}

/// Features and logits of one pass over a set, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embedded {
    pub logits: Vec<f32>,
    pub features: Vec<f32>,
}

impl Embedded {
    pub fn rows(&self, dim: usize) -> usize {
        self.features.len() / dim.max(1)
    }
}

/// Every detector fitted on one model's ID training pass. A detector that cannot be fitted keeps
/// its reason; the others still score.
#[derive(Debug, Clone)]
pub struct Detectors {
    head: Head,
    mahalanobis: std::result::Result<Mahalanobis, String>,
    knn: std::result::Result<Knn, String>,
    vim: std::result::Result<Vim, String>,
    react: std::result::Result<f32, String>,
    ash_percentile: f64,
    dice: std::result::Result<Vec<f64>, String>,
}

impl Detectors {
    /// Fits every detector on the training pass `train` (its labels `labels`) of the model whose
    /// last layer is `head`.
    pub fn fit(head: Head, train: &Embedded, labels: &[u32], cfg: &DetectorConfig) -> Result<Detectors> {
        let d = head.dim;
        if d == 0 || train.features.len() % d != 0 || train.rows(d) != labels.len() || train.logits.len() != labels.len() * head.classes {
            return Err(Error::Mismatch(format!(
                "detector fit: {} feature values, {} logits and {} labels do not fit a {}-d, {}-class head",
                train.features.len(),
                train.logits.len(),
                labels.len(),
                d,
                head.classes
            )));
        }
        let finite = train.features.iter().all(|v| v.is_finite());
        fn guarded<T>(finite: bool, r: std::result::Result<T, String>) -> std::result::Result<T, String> {
            if finite { r } else { Err("the training features are not all finite".to_string()) }
        }
        Ok(Detectors {
            mahalanobis: guarded(finite, Mahalanobis::fit(&train.features, labels, d, head.classes)),
            knn: guarded(finite, Knn::fit(&train.features, d, cfg.knn_k)),
            vim: guarded(finite, Vim::fit(&head, train, cfg.vim_dim.unwrap_or(d / 2))),
            react: guarded(finite, percentile_of(&train.features, cfg.react_percentile).ok_or_else(|| "no training activations".to_string())),
            ash_percentile: cfg.ash_percentile,
            dice: guarded(finite, dice_weight(&head, &train.features, cfg.dice_percentile)),
            head,
        })
    }

    /// The detectors that could not be fitted, with the reason, as messages naming them.
    pub fn problems(&self) -> Vec<String> {
        self.problems_where(&|_| true)
    }

    /// [`Self::problems`] of the scores `wanted`.
    pub fn problems_where(&self, wanted: &dyn Fn(Score) -> bool) -> Vec<String> {
        let failed = [
            (Score::Mahalanobis, self.mahalanobis.as_ref().err()),
            (Score::Knn, self.knn.as_ref().err()),
            (Score::Vim, self.vim.as_ref().err()),
            (Score::React, self.react.as_ref().err()),
            (Score::Dice, self.dice.as_ref().err()),
        ];
        failed.into_iter().filter(|(s, _)| wanted(*s)).filter_map(|(s, e)| e.map(|e| format!("{} cannot be fitted: {e}", s.name()))).collect()
    }

    /// Every logit and feature score of one pass (ODIN aside: it needs the model).
    pub fn scores(&self, pass: &Embedded) -> BTreeMap<Score, Vec<f32>> {
        self.scores_where(pass, &|_| true)
    }

    /// The scores `wanted` of one pass (each computed as in [`Self::scores`]).
    pub fn scores_where(&self, pass: &Embedded, wanted: &dyn Fn(Score) -> bool) -> BTreeMap<Score, Vec<f32>> {
        let classes = self.head.classes;
        let mut out: BTreeMap<Score, Vec<f32>> = Score::LOGIT.iter().filter(|&&s| wanted(s)).map(|&s| (s, super::scores::score_rows(s, &pass.logits, classes))).collect();
        let f = &pass.features;
        if let (true, Ok(m)) = (wanted(Score::Mahalanobis), &self.mahalanobis) {
            out.insert(Score::Mahalanobis, m.scores(f));
        }
        if let (true, Ok(k)) = (wanted(Score::Knn), &self.knn) {
            out.insert(Score::Knn, k.scores(f));
        }
        if let (true, Ok(v)) = (wanted(Score::Vim), &self.vim) {
            out.insert(Score::Vim, v.scores(f, &pass.logits, classes));
        }
        let w = self.head.weight_f64();
        if let (true, Ok(c)) = (wanted(Score::React), &self.react) {
            let clipped: Vec<f32> = f.iter().map(|&x| x.min(*c)).collect();
            out.insert(Score::React, energies(&self.head.logits_f64(&w, &clipped), classes));
        }
        if wanted(Score::Ash) {
            let shaped = ash_s(f, self.head.dim, self.ash_percentile);
            out.insert(Score::Ash, energies(&self.head.logits_f64(&w, &shaped), classes));
        }
        if let (true, Ok(dw)) = (wanted(Score::Dice), &self.dice) {
            out.insert(Score::Dice, energies(&self.head.logits_f64(dw, f), classes));
        }
        out
    }
}

/// logsumexp of each row, in f64, stored as f32 (see [`stored_energy`]).
fn energies(logits: &[f64], classes: usize) -> Vec<f32> {
    logits.chunks_exact(classes).map(|row| stored_energy(logsumexp(row))).collect()
}

/// Beyond this magnitude an energy is stored log-compressed.
pub const ENERGY_COMPRESS_ABOVE: f64 = 1e6;

/// An f64 energy as f32 without overflow: unchanged up to [`ENERGY_COMPRESS_ABOVE`] in magnitude
/// (every energy of a sane model), beyond it `sign(e) T (1 + ln(|e| / T))`. That is strictly
/// increasing and continuous, so every rank-based metric (AUROC, FPR95, AUPR) is unchanged, and
/// ASH-S's `exp(s1 / s2)` scale, which passes f32's range once s1 / s2 > 88.7 (ash_percentile 99),
/// keeps a finite, ordered score. Only an infinite f64 energy stays infinite (then the score is
/// left out of that evaluation as a named problem).
fn stored_energy(e: f64) -> f32 {
    const T: f64 = ENERGY_COMPRESS_ABOVE;
    if e.abs() <= T || !e.is_finite() {
        e as f32
    } else {
        (e.signum() * T * (1.0 + (e.abs() / T).ln())) as f32
    }
}

fn logsumexp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + row.iter().map(|&l| (l - max).exp()).sum::<f64>().ln()
}

/// numpy's default (linear) percentile of `values`, `p` in [0, 100]; None when empty.
pub fn percentile_of(values: &[f32], p: f64) -> Option<f32> {
    super::quantile(values.iter().map(|&x| f64::from(x)).collect(), p / 100.0).map(|v| v as f32)
}

/// Moore-Penrose inverse of a symmetric matrix: eigenvalues with |lambda| <= d * eps * max|lambda|
/// are treated as zero (numpy's `pinv(hermitian=True)` with that `rcond`). None when every one is.
fn pinv_symmetric(m: DMatrix<f64>) -> Option<DMatrix<f64>> {
    let d = m.nrows();
    let eig = SymmetricEigen::new(m);
    let top = eig.eigenvalues.iter().fold(0f64, |a, &l| a.max(l.abs()));
    let cutoff = d as f64 * f64::EPSILON * top;
    let inv = eig.eigenvalues.map(|l| if l.abs() > cutoff { 1.0 / l } else { 0.0 });
    if top == 0.0 || inv.iter().all(|&l| l == 0.0) {
        return None;
    }
    Some(&eig.eigenvectors * DMatrix::from_diagonal(&inv) * eig.eigenvectors.transpose())
}

/// `features` (n x d, f32) as an f64 matrix.
fn matrix(features: &[f32], d: usize) -> DMatrix<f64> {
    DMatrix::from_row_iterator(features.len() / d, d, features.iter().map(|&x| f64::from(x)))
}

#[derive(Debug, Clone)]
struct Mahalanobis {
    /// Class means, `[classes, d]`.
    means: DMatrix<f64>,
    precision: DMatrix<f64>,
    /// mu_c^T P mu_c per class.
    mean_norms: Vec<f64>,
}

impl Mahalanobis {
    fn fit(features: &[f32], labels: &[u32], d: usize, classes: usize) -> std::result::Result<Mahalanobis, String> {
        let x = matrix(features, d);
        let mut means = DMatrix::<f64>::zeros(classes, d);
        let mut counts = vec![0usize; classes];
        for (i, &y) in labels.iter().enumerate() {
            let y = y as usize;
            counts[y] += 1;
            let mut row = means.row_mut(y);
            row += x.row(i);
        }
        if let Some(c) = counts.iter().position(|&n| n == 0) {
            return Err(format!("class {c} has no training samples"));
        }
        for (c, &n) in counts.iter().enumerate() {
            means.row_mut(c).scale_mut(1.0 / n as f64);
        }
        let mut centred = x;
        for (i, &y) in labels.iter().enumerate() {
            let mut row = centred.row_mut(i);
            row -= means.row(y as usize);
        }
        let cov = centred.tr_mul(&centred) / labels.len() as f64;
        let precision = pinv_symmetric(cov).ok_or_else(|| "the training features have no variance within the classes".to_string())?;
        let mean_norms = (0..classes).map(|c| (means.row(c) * &precision).dot(&means.row(c))).collect();
        Ok(Mahalanobis { means, precision, mean_norms })
    }

    /// -min_c (f - mu_c)^T P (f - mu_c) = -min_c (f^T P f - 2 mu_c^T P f + mu_c^T P mu_c).
    fn scores(&self, features: &[f32]) -> Vec<f32> {
        let d = self.precision.nrows();
        let x = matrix(features, d);
        let g = &x * &self.precision;
        let cross = &g * self.means.transpose();
        (0..x.nrows())
            .map(|i| {
                let ff = g.row(i).dot(&x.row(i));
                let nearest = (0..self.means.nrows()).map(|c| ff - 2.0 * cross[(i, c)] + self.mean_norms[c]).fold(f64::INFINITY, f64::min);
                -nearest as f32
            })
            .collect()
    }
}

/// L2 normalisation as the KNN paper's code: x / (|x| + 1e-10).
fn normalized(features: &[f32], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(features.len());
    for row in features.chunks_exact(d) {
        let norm = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt() + 1e-10;
        out.extend(row.iter().map(|&v| (f64::from(v) / norm) as f32));
    }
    out
}

#[derive(Debug, Clone)]
struct Knn {
    /// Normalised training features, `[n, d]`.
    bank: Vec<f32>,
    d: usize,
    k: usize,
}

/// Queries per block of the similarity matrix: a block's `[rows, n]` similarities (9 MB for 256 x
/// 9,000) stay per thread, and rayon spreads the blocks over the cores.
const KNN_BLOCK: usize = 256;

impl Knn {
    fn fit(features: &[f32], d: usize, k: usize) -> std::result::Result<Knn, String> {
        let n = features.len() / d;
        if n < k {
            return Err(format!("k = {k} but there are only {n} training samples"));
        }
        Ok(Knn { bank: normalized(features, d), d, k })
    }

    /// -(distance to the k-th nearest training feature), both normalised: |q - b|^2 = 2 - 2 q.b
    /// for unit vectors, so the k-th nearest is the k-th largest similarity.
    fn scores(&self, features: &[f32]) -> Vec<f32> {
        let q = normalized(features, self.d);
        let n = self.bank.len() / self.d;
        q.par_chunks(KNN_BLOCK * self.d)
            .flat_map_iter(|block| {
                let rows = block.len() / self.d;
                let mut sim = vec![0f32; rows * n];
                matmul_transposed(rows, n, self.d, block, &self.bank, &mut sim);
                sim.chunks_exact_mut(n)
                    .map(|row| {
                        let (_, &mut kth, _) = row.select_nth_unstable_by(self.k - 1, |a, b| b.total_cmp(a));
                        -(2.0 - 2.0 * f64::from(kth)).max(0.0).sqrt() as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// `dst[m, n] = a[m, k] * b[n, k]^T`, all row-major, single-threaded (callers split the rows).
fn matmul_transposed(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], dst: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= n * k && dst.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assert keeps every index inside the slices: a is read with row stride k, b
    // transposed (row stride 1, column stride k), dst written with row stride n; dst does not
    // alias a or b (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[derive(Debug, Clone)]
struct Vim {
    origin: Vec<f64>,
    /// Basis of the residual space, `[d, d - D]`.
    residual_basis: DMatrix<f64>,
    alpha: f64,
}

impl Vim {
    fn fit(head: &Head, train: &Embedded, dim: usize) -> std::result::Result<Vim, String> {
        let d = head.dim;
        if dim >= d {
            return Err(format!("its principal dimension D = {dim} must be below the feature dimension {d}"));
        }
        let w = DMatrix::from_row_slice(head.classes, d, &head.weight_f64());
        let b = nalgebra::DVector::from_iterator(head.classes, head.bias.iter().map(|&v| f64::from(v)));
        let tol = head.classes.max(d) as f64 * f64::EPSILON * w.norm();
        let pinv = w.pseudo_inverse(tol).map_err(|e| format!("the last layer has no pseudo-inverse ({e})"))?;
        let origin: Vec<f64> = (-(pinv * b)).iter().copied().collect();
        let centred = centred_at(&train.features, d, &origin);
        let cov = centred.tr_mul(&centred) / centred.nrows() as f64;
        let eig = SymmetricEigen::new(cov);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
        let residual_basis = DMatrix::from_columns(&order[dim..].iter().map(|&i| eig.eigenvectors.column(i)).collect::<Vec<_>>());
        let residual = residual_norms(&centred, &residual_basis);
        let mean_residual = residual.iter().sum::<f64>() / residual.len() as f64;
        let rows = train.logits.len() / head.classes;
        let mean_max_logit = train.logits.chunks_exact(head.classes).map(|r| f64::from(r.iter().copied().fold(f32::NEG_INFINITY, f32::max))).sum::<f64>() / rows as f64;
        if !(mean_residual > 0.0) {
            return Err(format!("the training features have no residual off their {dim} principal dimensions"));
        }
        Ok(Vim { origin, residual_basis, alpha: mean_max_logit / mean_residual })
    }

    fn scores(&self, features: &[f32], logits: &[f32], classes: usize) -> Vec<f32> {
        let centred = centred_at(features, self.origin.len(), &self.origin);
        let residual = residual_norms(&centred, &self.residual_basis);
        logits
            .chunks_exact(classes)
            .zip(residual)
            .map(|(row, r)| (logsumexp(&row.iter().map(|&l| f64::from(l)).collect::<Vec<_>>()) - self.alpha * r) as f32)
            .collect()
    }
}

fn centred_at(features: &[f32], d: usize, origin: &[f64]) -> DMatrix<f64> {
    DMatrix::from_row_iterator(features.len() / d, d, features.chunks_exact(d).flat_map(|r| r.iter().zip(origin).map(|(&x, &u)| f64::from(x) - u)))
}

fn residual_norms(centred: &DMatrix<f64>, basis: &DMatrix<f64>) -> Vec<f64> {
    let projected = centred * basis;
    projected.row_iter().map(|r| r.norm()).collect()
}

/// ASH-S of every row: keep the `d - round(d p / 100)` largest activations (ties: the first),
/// zero the rest, scale the kept ones by exp(s1 / s2). A row with nothing left stays zero. In
/// f64: the scale passes f32's range at s1 / s2 > 88.7, f64's only past 709.
fn ash_s(features: &[f32], d: usize, percentile: f64) -> Vec<f64> {
    // numpy's round (half to even), as the paper's code computes k.
    let keep = d - ((d as f64 * percentile / 100.0).round_ties_even() as usize).min(d);
    let mut out = vec![0f64; features.len()];
    let mut order: Vec<usize> = Vec::with_capacity(d);
    for (row, dst) in features.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        order.clear();
        order.extend(0..d);
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]).then(i.cmp(&j)));
        let s1: f64 = row.iter().map(|&v| f64::from(v)).sum();
        let s2: f64 = order[..keep].iter().map(|&i| f64::from(row[i])).sum();
        if s2 == 0.0 {
            continue;
        }
        let scale = (s1 / s2).exp();
        for &i in &order[..keep] {
            dst[i] = f64::from(row[i]) * scale;
        }
    }
    out
}

/// DICE's sparsified last-layer weight, `[classes, d]`: weights whose contribution (mean training
/// feature times weight) is above the `percentile`-th percentile of all contributions, the rest 0.
fn dice_weight(head: &Head, features: &[f32], percentile: f64) -> std::result::Result<Vec<f64>, String> {
    let d = head.dim;
    let n = features.len() / d;
    if n == 0 {
        return Err("no training samples".into());
    }
    let mut mean = vec![0f64; d];
    for row in features.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let contrib: Vec<f64> = head.weight.chunks_exact(d).flat_map(|w| w.iter().zip(&mean).map(|(&w, &m)| f64::from(w) * m)).collect();
    let threshold = super::quantile(contrib.clone(), percentile / 100.0).ok_or_else(|| format!("the percentile {percentile} is outside [0, 100]"))?;
    Ok(head.weight.iter().zip(&contrib).map(|(&w, &c)| if c > threshold { f64::from(w) } else { 0.0 }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(classes: usize, dim: usize, seed: u64) -> Head {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        };
        Head { classes, dim, weight: (0..classes * dim).map(|_| next()).collect(), bias: (0..classes).map(|_| next()).collect() }
    }

    #[test]
    fn percentile_is_numpys_linear_one() {
        // np.percentile([1, 2, 3, 4], 90) = 3.7; [5] -> 5.
        assert!((percentile_of(&[4.0, 1.0, 3.0, 2.0], 90.0).unwrap() - 3.7).abs() < 1e-6);
        assert_eq!(percentile_of(&[5.0], 90.0), Some(5.0));
        assert_eq!(percentile_of(&[], 90.0), None);
    }

    #[test]
    fn mahalanobis_of_a_diagonal_covariance() {
        // Two classes in 2-d: class 0 at (+-1, 0) around (0, 0), class 1 at (10 +- 1, 0)... and
        // (0, +-2) spreads, so the pooled covariance is diag(1/2, 2).
        let f = [1.0, 0.0, -1.0, 0.0, 0.0, 2.0, 0.0, -2.0, 11.0, 0.0, 9.0, 0.0, 10.0, 2.0, 10.0, -2.0];
        let labels = [0, 0, 0, 0, 1, 1, 1, 1];
        let m = Mahalanobis::fit(&f, &labels, 2, 2).unwrap();
        // Query (1, 1): distance to class 0 = 1^2 / 0.5 + 1^2 / 2 = 2.5.
        let s = m.scores(&[1.0, 1.0]);
        assert!((s[0] + 2.5).abs() < 1e-6, "{s:?}");
        // A class with no samples cannot be fitted, and says which.
        let e = Mahalanobis::fit(&f, &[0; 8], 2, 2).unwrap_err();
        assert!(e.contains("class 1"), "{e}");
    }

    #[test]
    fn knn_takes_the_kth_nearest_normalised_feature() {
        // Bank: unit vectors at angles 0, 90, 180 degrees; query at 0 degrees (scaled by 3).
        let bank = [1.0, 0.0, 0.0, 2.0, -5.0, 0.0];
        let knn = Knn::fit(&bank, 2, 2).unwrap();
        // 2nd nearest is (0, 1): distance sqrt(2).
        let s = knn.scores(&[3.0, 0.0]);
        assert!((s[0] + 2f32.sqrt()).abs() < 1e-6, "{s:?}");
        let e = Knn::fit(&bank, 2, 4).unwrap_err();
        assert!(e.contains("k = 4") && e.contains("only 3"), "{e}");
    }

    #[test]
    fn ash_at_percentile_99_stays_finite_and_ordered() {
        // d = 200, keep 2: a flat row gives s1 / s2 = 100, exp(100) = 2.7e43, past f32's range.
        let d = 200;
        let head = Head { classes: 2, dim: d, weight: [vec![0.01f32; d], vec![0.0; d]].concat(), bias: vec![0.0, 0.0] };
        let flat = vec![1.0f32; d];
        let mut peaked = vec![0.01f32; d];
        peaked[0] = 1.0;
        let features = [flat.clone(), peaked, { let mut f = flat.clone(); f[1] = 0.5; f }].concat();
        let w = head.weight_f64();
        let shaped = ash_s(&features, d, 99.0);
        let scores = energies(&head.logits_f64(&w, &shaped), 2);
        assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
        // s1 / s2: 100 (flat), about 2.96 (peaked), 99.75 (flat with one half): the order holds.
        assert!(scores[0] > scores[2] && scores[2] > scores[1], "{scores:?}");
        assert!((f64::from(scores[1]) - logsumexp(&head.logits_f64(&w, &shaped[d..2 * d]))).abs() < 1e-4, "a sane energy is stored as it is");
        assert!(stored_energy(f64::INFINITY).is_infinite());
    }

    #[test]
    fn ash_keeps_the_top_activations_scaled() {
        // d = 10, 90th percentile: keep 1 of 10. Row sum 10, kept 4: scale e^(10/4).
        let row = [1.0f32, 4.0, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0, 0.5, 0.5];
        let out = ash_s(&row, 10, 90.0);
        let want = 4.0 * (10.0f64 / 4.0).exp();
        assert!((f64::from(out[1]) - want).abs() < 1e-3, "{out:?}");
        assert_eq!(out.iter().filter(|&&v| v != 0.0).count(), 1);
        // An all-zero row stays zero instead of NaN.
        assert!(ash_s(&[0.0; 10], 10, 90.0).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn dice_keeps_the_largest_contributions() {
        let h = Head { classes: 2, dim: 5, weight: vec![1.0, -1.0, 2.0, 0.5, 3.0, 0.1, 0.2, 0.3, 0.4, 0.5], bias: vec![0.0, 0.0] };
        let features = [1.0f32, 1.0, 1.0, 1.0, 1.0];
        // Contributions = weights (mean feature 1); the 90th percentile of 10 values lies between
        // the two largest (2 and 3): only the weight 3 survives.
        let w = dice_weight(&h, &features, 90.0).unwrap();
        assert_eq!(w.iter().filter(|&&v| v != 0.0).count(), 1);
        assert_eq!(w[4], 3.0);
    }

    #[test]
    fn vim_residual_is_off_the_principal_subspace() {
        // Features spread along x only (around the origin u = 0: zero bias, W = identity), then a
        // query off that axis: residual = its y component.
        let h = Head { classes: 2, dim: 2, weight: vec![1.0, 0.0, 0.0, 1.0], bias: vec![0.0, 0.0] };
        let features: Vec<f32> = [-2.0f32, -1.0, 1.0, 2.0].iter().flat_map(|&x| [x, 0.1 * x.signum()]).collect();
        let logits = features.clone();
        let vim = Vim::fit(&h, &Embedded { logits, features }, 1).unwrap();
        let s = vim.scores(&[0.0, 3.0], &[0.0, 3.0], 2);
        let lse = (1.0f64 + 3f64.exp()).ln();
        // The residual direction is y up to the tilt of 0.1; alpha from the training set.
        let residual = (f64::from(s[0]) - lse) / -vim.alpha;
        assert!((residual - 3.0).abs() < 0.1, "{residual}");
        assert!(Vim::fit(&h, &Embedded { logits: vec![0.0; 4], features: vec![0.0; 4] }, 2).unwrap_err().contains("D = 2"));
    }

    #[test]
    fn a_failed_fit_names_the_detector_and_the_rest_still_score() {
        let h = head(3, 4, 1);
        // 5 training samples: KNN (k = 50) cannot be fitted; class 2 is missing for Mahalanobis.
        let features: Vec<f32> = (0..20).map(|i| (i % 7) as f32 * 0.3).collect();
        let labels = [0, 1, 0, 1, 0];
        let logits = h.logits_f64(&h.weight_f64(), &features).iter().map(|&v| v as f32).collect();
        let det = Detectors::fit(h, &Embedded { logits, features: features.clone() }, &labels, &DetectorConfig::default()).unwrap();
        let problems = det.problems().join("\n");
        assert!(problems.contains("KNN cannot be fitted: k = 50 but there are only 5"), "{problems}");
        assert!(problems.contains("Mahalanobis cannot be fitted: class 2"), "{problems}");
        let pass = Embedded { logits: vec![0.5; 6], features: features[..8].to_vec() };
        let scores = det.scores(&pass);
        assert!(!scores.contains_key(&Score::Knn) && !scores.contains_key(&Score::Mahalanobis));
        for s in [Score::Energy, Score::Vim, Score::React, Score::Ash, Score::Dice] {
            assert_eq!(scores[&s].len(), 2, "{s:?}");
            assert!(scores[&s].iter().all(|v| v.is_finite()), "{s:?}");
        }
    }
}
