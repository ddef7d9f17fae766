//! Forward-only passes: one readback of logits (and penultimate features) per batch, then
//! per-sample loss, accuracy and the OOD scores are computed on the host. [`score_sets`] is the one
//! place a model is scored on the evaluation sets: the per-epoch evaluation, `eval` and the mask
//! explorer all go through it.

use crate::data::{Dataset, ImageShape, Normalization};
use crate::error::{Error, Result};
use crate::model::Net;
use crate::ood::{DetectorConfig, Detectors, Embedded, Score};
use burn::prelude::*;
use burn::tensor::activation;
use std::collections::BTreeMap;

/// Every score of every sample of one set.
pub type ScoreMap = BTreeMap<Score, Vec<f32>>;

/// The evaluation sets, normalised once.
#[derive(Debug, Clone)]
pub struct Sets {
    pub train: PreparedSet,
    pub test: PreparedSet,
    /// The ID validation split: the ID side of validation (None: no split, the training set
    /// stands in).
    pub id_val: Option<PreparedSet>,
    pub val: PreparedSet,
    pub ood: Vec<PreparedSet>,
}

/// What every forward pass needs besides the model and the samples.
#[derive(Debug, Clone)]
pub struct EvalContext {
    pub classes: usize,
    pub device: Device,
    pub batch: usize,
    /// Per-channel std of the input normalisation: a step of e in [0, 1] pixel units is e / std
    /// on the normalised input (ODIN's epsilon).
    pub channel_std: Vec<f32>,
}

/// Progress of a pass: (set name, samples done, samples in the set); Err stops the pass.
pub type SetProgress<'a> = &'a mut dyn FnMut(&str, usize, usize) -> Result<()>;

/// A set ready to slice into batches. It keeps the images as u8 and normalises each batch as it
/// is cut (the same formula as [`Normalization::apply`], so the same f32 values): a whole-set f32
/// copy would cost 4 bytes a pixel, 188 MB for Fashion-MNIST's 60,000 training images.
#[derive(Debug, Clone)]
pub struct PreparedSet {
    pub name: String,
    pub shape: ImageShape,
    inputs: Inputs,
    pub labels: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Inputs {
    /// u8 images, normalised per batch with the ID training set's per-channel mean and std.
    Pixels { pixels: Vec<u8>, norm: Normalization },
    /// Inputs already normalised (tests, reference inputs).
    Normalised(Vec<f32>),
}

impl PreparedSet {
    pub fn new(ds: &Dataset, norm: &Normalization) -> PreparedSet {
        let inputs = Inputs::Pixels { pixels: ds.pixels.clone(), norm: norm.clone() };
        PreparedSet { name: ds.name.clone(), shape: ds.shape, inputs, labels: ds.labels.clone() }
    }

    /// A set of inputs that are already normalised, `[n, C, H, W]` back to back.
    pub fn from_normalised(name: &str, shape: ImageShape, x: Vec<f32>, labels: Vec<u32>) -> PreparedSet {
        PreparedSet { name: name.to_string(), shape, inputs: Inputs::Normalised(x), labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The normalised inputs of the samples `range`, appended to `out`.
    fn extend_inputs(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        let d = self.shape.len();
        match &self.inputs {
            Inputs::Normalised(x) => out.extend_from_slice(&x[range.start * d..range.end * d]),
            Inputs::Pixels { pixels, norm } => norm.extend(self.shape, &pixels[range.start * d..range.end * d], out),
        }
    }

    /// The normalised inputs of the samples `range`.
    pub fn inputs(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        let mut out = Vec::with_capacity(range.len() * self.shape.len());
        self.extend_inputs(range, &mut out);
        out
    }

    /// Input tensor of the samples `range`.
    pub fn batch(&self, range: std::ops::Range<usize>, device: &Device) -> Tensor<4> {
        self.images(self.inputs(range), device)
    }

    /// The samples at `indices`, in that order, as a set of their own.
    pub fn subset(&self, indices: &[usize]) -> PreparedSet {
        let d = self.shape.len();
        let inputs = match &self.inputs {
            Inputs::Normalised(x) => Inputs::Normalised(indices.iter().flat_map(|&i| x[i * d..(i + 1) * d].iter().copied()).collect()),
            Inputs::Pixels { pixels, norm } => {
                Inputs::Pixels { pixels: indices.iter().flat_map(|&i| pixels[i * d..(i + 1) * d].iter().copied()).collect(), norm: norm.clone() }
            }
        };
        PreparedSet { name: self.name.clone(), shape: self.shape, inputs, labels: indices.iter().map(|&i| self.labels[i]).collect() }
    }

    /// `[n, C, H, W]` tensor of `data`: n normalised images of this set's shape, back to back.
    pub fn images(&self, data: Vec<f32>, device: &Device) -> Tensor<4> {
        let ImageShape { channels, height, width } = self.shape;
        let n = data.len() / self.shape.len();
        Tensor::from_data(TensorData::new(data, [n, channels, height, width]), device)
    }

    /// Input and label tensors of the samples at `indices` (a shuffled batch).
    pub fn gather(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>, Vec<u32>) {
        let d = self.shape.len();
        let mut data = Vec::with_capacity(indices.len() * d);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            self.extend_inputs(i..i + 1, &mut data);
            labels.push(self.labels[i]);
        }
        let x = self.images(data, device);
        let y = Tensor::from_data(
            TensorData::new(labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(), [indices.len()]),
            device,
        );
        (x, y, labels)
    }
}

/// Reads a float tensor back to the host.
pub fn to_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>().map_err(|e| Error::Device(format!("cannot read results back from the device: {e:?}")))
}

/// Logits of every sample of `set`, row-major `[n, classes]`. `progress(done)` after each batch.
pub fn logits(model: &Net, set: &PreparedSet, batch: usize, device: &Device, progress: &mut dyn FnMut(usize) -> Result<()>) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < set.len() {
        let end = (start + batch).min(set.len());
        let logits = model.logits(set.batch(start..end, device));
        out.extend(to_vec(logits)?);
        start = end;
        progress(end)?;
    }
    Ok(out)
}

/// Logits and penultimate features of every sample of `set`. `progress(done)` after each batch.
pub fn embed(model: &Net, set: &PreparedSet, batch: usize, device: &Device, progress: &mut dyn FnMut(usize) -> Result<()>) -> Result<Embedded> {
    let mut out = Embedded::default();
    let mut start = 0;
    while start < set.len() {
        let end = (start + batch).min(set.len());
        let o = model.forward(set.batch(start..end, device));
        out.logits.extend(to_vec(o.logits)?);
        out.features.extend(to_vec(o.features)?);
        start = end;
        progress(end)?;
    }
    Ok(out)
}

/// ODIN (Liang et al. 2018) of every sample of `set`: one step of `epsilon` in [0, 1] pixel units
/// against the gradient of the tempered cross-entropy of the predicted class (on the normalised
/// input that is `epsilon / std` per channel, as the paper's code divides it), then the tempered
/// MSP. Stored as `T (log MSP_T + log C)`: the same order as MSP_T (so the same
/// metrics), but at T = 1000 MSP_T is 1/C plus a few parts in 1e4, which f32 would flatten.
pub fn odin(model: &Net, set: &PreparedSet, ctx: &EvalContext, temperature: f64, epsilon: f64, progress: &mut dyn FnMut(usize) -> Result<()>) -> Result<Vec<f32>> {
    let ad = ctx.device.clone().autodiff();
    // Moved, not retrained: parameters stay without gradients and BatchNorm in eval mode.
    let grad_model = model.clone().to_device(&ad);
    let d = set.shape.len();
    let mut out = Vec::with_capacity(set.len());
    let mut start = 0;
    while start < set.len() {
        let end = (start + ctx.batch).min(set.len());
        let n = end - start;
        let x = set.batch(start..end, &ad).require_grad();
        let logits = grad_model.logits(x.clone());
        let predicted = logits.clone().detach().argmax(1);
        let loss = activation::log_softmax(logits.div_scalar(temperature), 1).gather(1, predicted).neg().sum();
        let grads = loss.backward();
        let grad = x.grad(&grads).ok_or_else(|| Error::Device("ODIN: the input got no gradient".into()))?;
        let grad = grad.reshape([n, d]);
        let grad = to_vec(grad)?;
        // x - eps * sign(grad), sign(0) = +1 as in the paper's code.
        let plane = set.shape.height * set.shape.width;
        let step = |k: usize| (epsilon / f64::from(ctx.channel_std.get((k % d) / plane.max(1)).copied().unwrap_or(1.0))) as f32;
        let stepped: Vec<f32> = set.inputs(start..end).iter().zip(&grad).enumerate().map(|(k, (&v, &g))| v - step(k) * if g >= 0.0 { 1.0 } else { -1.0 }).collect();
        let logits = to_vec(model.logits(set.images(stepped, &ctx.device)))?;
        out.extend(logits.chunks_exact(ctx.classes).map(|row| tempered_log_msp(row, temperature) as f32));
        start = end;
        progress(end)?;
    }
    Ok(out)
}

/// `T (log softmax_T(row)_max + log C)`, in f64.
fn tempered_log_msp(row: &[f32], temperature: f64) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| (f64::from(l - max) / temperature).exp()).sum();
    temperature * ((row.len() as f64).ln() - sum.ln())
}

/// Every score's metrics: one ID set's scores against one OOD set's. A score that either side
/// lacks (a detector that could not be fitted, ODIN off) is left out.
pub fn score_metrics(id: &ScoreMap, ood: &ScoreMap) -> Result<crate::run::ScoreMetrics> {
    id.iter().filter_map(|(s, id)| ood.get(s).map(|ood| Ok((*s, crate::ood::metrics::compute(id, ood)?)))).collect()
}

/// What scoring a model on the evaluation sets gives.
pub struct SetScores {
    pub test: LabelledPass,
    pub test_scores: ScoreMap,
    /// The ID side of validation (the split, or the training set without one).
    pub id_val_scores: ScoreMap,
    pub val_scores: ScoreMap,
    pub ood_scores: Vec<ScoreMap>,
    /// Detectors that could not be fitted, each message naming one.
    pub problems: Vec<String>,
}

/// Every score's metrics on the evaluation sets.
#[derive(Debug, Clone, PartialEq)]
pub struct SetMetrics {
    /// The ID side of validation against the validation OOD set (what selection may look at).
    pub val: crate::run::ScoreMetrics,
    /// The ID test set against each test OOD set, by name (reported only).
    pub ood: BTreeMap<String, crate::run::ScoreMetrics>,
    /// Plain mean over the test OOD sets.
    pub ood_mean: crate::run::ScoreMetrics,
}

impl SetScores {
    /// The metrics of these scores of `sets` (the sets they were computed on).
    pub fn metrics(&self, sets: &Sets) -> Result<SetMetrics> {
        let val = score_metrics(&self.id_val_scores, &self.val_scores)?;
        let mut ood = BTreeMap::new();
        for (set, scores) in sets.ood.iter().zip(&self.ood_scores) {
            ood.insert(set.name.clone(), score_metrics(&self.test_scores, scores)?);
        }
        let ood_mean = crate::run::mean_over_sets(&ood);
        Ok(SetMetrics { val, ood, ood_mean })
    }
}

/// Scores `model` on the ID test set, the ID side of validation, the validation OOD set and every
/// test OOD set with every detector, fitted on `train`: the model's own pass over `sets.train`
/// (ID training data only, never a test or OOD set).
pub fn score_sets(model: &Net, sets: &Sets, ctx: &EvalContext, train: &Embedded, cfg: &DetectorConfig, progress: SetProgress) -> Result<SetScores> {
    let detectors = Detectors::fit(model.head()?, train, &sets.train.labels, cfg)?;
    let passes = SetPasses::embed(model, sets, ctx, progress)?;
    passes.score(model, sets, ctx, train, &detectors, cfg, &|_| true, progress)
}

/// One model's passes over the evaluation sets (logits and features), before any score: every
/// score of [`score_sets`] comes from these, so they can be scored in parts (the score on screen
/// first) without a second pass.
pub struct SetPasses {
    pub test: Embedded,
    /// The ID validation split's pass (None: no split, the training pass stands in).
    pub id_val: Option<Embedded>,
    pub val: Embedded,
    pub ood: Vec<Embedded>,
}

impl SetPasses {
    pub fn embed(model: &Net, sets: &Sets, ctx: &EvalContext, progress: SetProgress) -> Result<SetPasses> {
        let mut embed_set = |set: &PreparedSet| embed(model, set, ctx.batch, &ctx.device, &mut |done| progress(&set.name, done, set.len()));
        Ok(SetPasses {
            test: embed_set(&sets.test)?,
            id_val: sets.id_val.as_ref().map(&mut embed_set).transpose()?,
            val: embed_set(&sets.val)?,
            ood: sets.ood.iter().map(&mut embed_set).collect::<Result<_>>()?,
        })
    }

    /// The scores `wanted` of every set, from these passes (`train` stands in for the ID side of
    /// validation when there is no split). A score that is not finite somewhere is left out, as in
    /// [`drop_non_finite`].
    #[allow(clippy::too_many_arguments)]
    pub fn score(&self, model: &Net, sets: &Sets, ctx: &EvalContext, train: &Embedded, detectors: &Detectors, cfg: &DetectorConfig, wanted: &dyn Fn(Score) -> bool, progress: SetProgress) -> Result<SetScores> {
        // ODIN, when on and wanted, makes its own passes (a gradient step per sample).
        let score = |set: &PreparedSet, pass: &Embedded, progress: SetProgress| -> Result<ScoreMap> {
            let mut scores = detectors.scores_where(pass, wanted);
            if cfg.odin && wanted(Score::Odin) {
                let odin_name = format!("{} (ODIN)", set.name);
                scores.insert(Score::Odin, odin(model, set, ctx, cfg.odin_temperature, cfg.odin_epsilon, &mut |done| progress(&odin_name, done, set.len()))?);
            }
            Ok(scores)
        };
        let test = LabelledPass::from_logits(&self.test.logits, ctx.classes, &sets.test.labels)?;
        let mut test_scores = score(&sets.test, &self.test, progress)?;
        let mut id_val_scores = match (&sets.id_val, &self.id_val) {
            (Some(split), Some(pass)) => score(split, pass, progress)?,
            _ => score(&sets.train, train, progress)?,
        };
        let mut val_scores = score(&sets.val, &self.val, progress)?;
        let mut ood_scores = Vec::with_capacity(sets.ood.len());
        for (set, pass) in sets.ood.iter().zip(&self.ood) {
            ood_scores.push(score(set, pass, progress)?);
        }
        let mut problems = detectors.problems_where(wanted);
        let mut named: Vec<(&str, &mut ScoreMap)> = vec![(&sets.test.name, &mut test_scores), ("the ID side of validation", &mut id_val_scores), (&sets.val.name, &mut val_scores)];
        named.extend(sets.ood.iter().map(|s| s.name.as_str()).zip(ood_scores.iter_mut()));
        problems.extend(drop_non_finite(&mut named));
        Ok(SetScores { test, test_scores, id_val_scores, val_scores, ood_scores, problems })
    }
}

/// A score that is not finite on some sample (an overflow, NaN features of a diverged model)
/// cannot be ranked: it is left out of every set of this evaluation, as a detector that cannot be
/// fitted is, with a message naming it and where it failed. The other scores still report.
pub fn drop_non_finite(sets: &mut [(&str, &mut ScoreMap)]) -> Vec<String> {
    let mut bad: BTreeMap<Score, Vec<String>> = BTreeMap::new();
    for (name, map) in sets.iter() {
        for (score, values) in map.iter() {
            let n = values.iter().filter(|v| !v.is_finite()).count();
            if n > 0 {
                bad.entry(*score).or_default().push(format!("{n} of {} samples of {name}", values.len()));
            }
        }
    }
    for (_, map) in sets.iter_mut() {
        map.retain(|s, _| !bad.contains_key(s));
    }
    bad.into_iter().map(|(s, w)| format!("{} gave non-finite scores ({}): left out of this evaluation", s.name(), w.join(", "))).collect()
}

/// Cross-entropy of one row of logits against `label`, in f64 for stable sums.
pub fn cross_entropy(row: &[f32], label: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = f64::from(max) + row.iter().map(|&l| f64::from(l - max).exp()).sum::<f64>().ln();
    lse - f64::from(row[label])
}

pub fn argmax(row: &[f32]) -> usize {
    // First maximum, as torch.argmax and burn's argmax.
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// What one pass over a labelled set gives.
#[derive(Debug, Clone, Default)]
pub struct LabelledPass {
    pub per_sample_loss: Vec<f32>,
    pub predictions: Vec<u32>,
    pub mean_loss: f64,
    pub accuracy: f64,
}

impl LabelledPass {
    pub fn from_logits(logits: &[f32], classes: usize, labels: &[u32]) -> Result<LabelledPass> {
        let mut per_sample_loss = Vec::with_capacity(labels.len());
        let mut predictions = Vec::with_capacity(labels.len());
        let (mut sum, mut correct) = (0f64, 0usize);
        for (row, &y) in logits.chunks_exact(classes).zip(labels) {
            if y as usize >= classes {
                return Err(Error::Mismatch(format!("label {y} but the model has {classes} classes")));
            }
            let l = cross_entropy(row, y as usize);
            sum += l;
            per_sample_loss.push(l as f32);
            let p = argmax(row) as u32;
            correct += usize::from(p == y);
            predictions.push(p);
        }
        let n = labels.len().max(1) as f64;
        Ok(LabelledPass { per_sample_loss, predictions, mean_loss: sum / n, accuracy: correct as f64 / n })
    }

    pub fn correct(&self, labels: &[u32]) -> Vec<bool> {
        self.predictions.iter().zip(labels).map(|(p, y)| p == y).collect()
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_closed_form() {
        let row = [0.0f32, 0.0];
        assert!((cross_entropy(&row, 0) - 2f64.ln()).abs() < 1e-12);
        assert!(cross_entropy(&[10.0, -10.0], 0) < 1e-8);
    }

    #[test]
    fn a_non_finite_score_is_left_out_everywhere_and_named() {
        let map = |ash: Vec<f32>| ScoreMap::from([(Score::Energy, vec![1.0, 2.0]), (Score::Ash, ash)]);
        let (mut a, mut b) = (map(vec![1.0, f32::INFINITY]), map(vec![0.5, 0.25]));
        let problems = drop_non_finite(&mut [("mnist", &mut a), ("textures", &mut b)]);
        assert_eq!(problems, vec!["ASH-S gave non-finite scores (1 of 2 samples of mnist): left out of this evaluation".to_string()]);
        for m in [&a, &b] {
            assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![Score::Energy], "dropped from every set, the others kept");
        }
        assert!(drop_non_finite(&mut [("x", &mut map(vec![1.0, 2.0]))]).is_empty());
    }

    #[test]
    fn labelled_pass_counts() {
        let logits = [2.0f32, 1.0, 0.0, 3.0];
        let pass = LabelledPass::from_logits(&logits, 2, &[0, 0]).unwrap();
        assert_eq!(pass.predictions, vec![0, 1]);
        assert_eq!(pass.accuracy, 0.5);
        assert!(LabelledPass::from_logits(&logits, 2, &[0, 7]).is_err());
    }
}
