//! The mask explorer's engine. A [`MaskProbe`] holds one snapshot and what its unmasked model gives
//! (read from the run's records where it has them, else computed once, and only as far as asked);
//! for any ratio it answers with the masked model's gamma, atypical set, ID test accuracy and OOD
//! detection on every validation and test OOD set, next to the unmasked model's.
//!
//! Every answer comes twice: first a *preview* on fixed, seeded, class-stratified subsets (a
//! fraction of a second), then the answer on the complete sets. The preview's subsets are drawn
//! once per probe, so two previews differ only by their masks.

use super::answer::{AtypicalSample, AtypicalSet, Detection, MaskSweepPoint, PreviewSize};
use super::atypical::{self, FullPass};
use super::mask::MaskKind;
use crate::error::Result;
use crate::eval::{self, LabelledPass, PreparedSet, SetPasses};
use crate::model::Net;
use crate::ood::{DetectorConfig, Detectors, Embedded, Score};
pub use crate::eval::{EvalContext, Sets};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Progress of a pass: (samples done, samples in the pass); Err stops the pass.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize) -> Result<()>;

/// What the unmasked model gives on one collection of sets: the reference every mask is compared to.
#[derive(Debug, Clone)]
struct Reference {
    full: FullPass,
    detection: Detection,
}

/// Subsets of the evaluation sets for previews, with the training subset's original indices. One
/// per session, shared by every snapshot's probe: previews of two snapshots see the same samples,
/// and the copies are made once.
#[derive(Debug, Clone)]
pub struct PreviewSets {
    sets: Sets,
    train_index: Vec<usize>,
    size: PreviewSize,
}

impl PreviewSets {
    /// Seeded subsets of `sets` of the given sizes (class-stratified for the labelled ID sets).
    pub fn new(sets: &Sets, size: PreviewSize) -> PreviewSets {
        preview_sets(sets, size, PREVIEW_SEED)
    }
}

/// The preview subsets' seed: fixed, so that a run's previews always use the same samples.
const PREVIEW_SEED: u64 = 0x5eed;

/// One snapshot under the mask explorer.
pub struct MaskProbe {
    pub epoch: usize,
    model: Net,
    ctx: EvalContext,
    preview: std::sync::Arc<PreviewSets>,
    preview_reference: Option<Reference>,
    /// The unmasked model on the complete training set (what gamma needs).
    full: Option<FullPass>,
    /// The unmasked model's detection on the complete sets (what the comparison needs).
    full_detection: Option<Detection>,
    /// The detectors' settings (fitted anew on each masked model's training pass).
    detectors: DetectorConfig,
    /// The last [`MaskProbe::gamma_at`] model's training pass (logits and features), for the
    /// detection pass that follows: the detectors are fitted on it.
    masked_train: Option<Embedded>,
}

impl MaskProbe {
    /// A probe of `model` (the inference model of snapshot `epoch`), previewing on `preview`.
    /// Nothing is computed yet.
    pub fn new(model: Net, epoch: usize, ctx: EvalContext, detectors: DetectorConfig, preview: std::sync::Arc<PreviewSets>) -> MaskProbe {
        MaskProbe { epoch, model, ctx, preview, preview_reference: None, full: None, full_detection: None, detectors, masked_train: None }
    }

    /// The unmasked model's figures as the run recorded them for this epoch (see
    /// [`crate::train::Session::recorded_unmasked`]): the epoch's evaluation is the same
    /// computation, so nothing of it is computed again.
    pub fn with_recorded(mut self, full: FullPass, detection: Detection) -> MaskProbe {
        self.full = Some(full);
        self.full_detection = Some(detection);
        self
    }

    pub fn model(&self) -> &Net {
        &self.model
    }

    /// The model masked at `ratio` (layer-wise; see [`super::mask`]).
    pub fn masked(&mut self, ratio: f64, kind: MaskKind, seed: u64) -> Result<Net> {
        // A new mask: a pass kept from the previous one no longer applies.
        self.masked_train = None;
        atypical::masked_model(&self.model, ratio, kind, seed)
    }

    /// The unmasked model's detection on the complete sets: recorded, or computed once (with the
    /// training pass gamma needs, from the same forward pass).
    pub fn full_detection(&mut self, sets: &Sets, progress: Progress) -> Result<Detection> {
        if let Some(d) = &self.full_detection {
            return Ok(d.clone());
        }
        let r = reference(&self.model, self.epoch, sets, &self.ctx, &self.detectors, progress)?;
        self.full = Some(r.full);
        self.full_detection = Some(r.detection.clone());
        Ok(r.detection)
    }

    /// The unmasked model on the training set and its ID test accuracy (what gamma and the
    /// atypical set are measured against): recorded, or two passes (training and ID test sets),
    /// without the detection.
    pub fn full_pass(&mut self, sets: &Sets, progress: Progress) -> Result<FullPass> {
        if let Some(f) = &self.full {
            return Ok(f.clone());
        }
        let n = sets.train.len() + sets.test.len();
        let train_logits = eval::logits(&self.model, &sets.train, self.ctx.batch, &self.ctx.device, &mut |d| progress(d, n))?;
        let train = LabelledPass::from_logits(&train_logits, self.ctx.classes, &sets.train.labels)?;
        let test_logits = eval::logits(&self.model, &sets.test, self.ctx.batch, &self.ctx.device, &mut |d| progress(sets.train.len() + d, n))?;
        let test = LabelledPass::from_logits(&test_logits, self.ctx.classes, &sets.test.labels)?;
        let full = FullPass::from_pass(self.epoch, &train, &sets.train.labels, test.accuracy);
        self.full = Some(full.clone());
        Ok(full)
    }

    /// The preview answer for `masked`: gamma, atypical set, masked accuracy and detection on the
    /// preview subsets. Atypical sample indices are indices into the full training set.
    pub fn preview(&mut self, masked: &Net, ratio: f64, kind: MaskKind) -> Result<AtypicalSet> {
        let mut nothing = |_: usize, _: usize| -> Result<()> { Ok(()) };
        let mut no_early = |_: Detection| Ok(());
        if self.preview_reference.is_none() {
            let r = reference(&self.model, self.epoch, &self.preview.sets, &self.ctx, &self.detectors, &mut nothing)?;
            self.preview_reference = Some(r);
        }
        let reference = self.preview_reference.as_ref().expect("set above");
        let train = &self.preview.sets.train;
        let pass = eval::embed(masked, train, self.ctx.batch, &self.ctx.device, &mut |_| Ok(()))?;
        let mut set = atypical::analyze_logits(&pass.logits, &reference.full, ratio, kind, train, self.ctx.classes)?;
        remap_indices(&mut set.samples, &self.preview.train_index);
        let detection = detect(masked, &self.preview.sets, &self.ctx, &self.detectors, &pass, None, &mut nothing, &mut no_early)?;
        set.masked_test_acc = Some(detection.test_acc);
        set.masked_detection = Some(detection);
        set.full_detection = Some(reference.detection.clone());
        set.preview = Some(self.preview.size);
        Ok(set)
    }

    /// gamma and the atypical set of `masked` on the complete training set (one pass, plus the
    /// unmasked model's where the run has not recorded it). The unmasked detection comes along
    /// when known (recorded, or asked for before with [`Self::full_detection`]).
    pub fn gamma_at(&mut self, masked: &Net, ratio: f64, kind: MaskKind, sets: &Sets, progress: Progress) -> Result<AtypicalSet> {
        let full = self.full_pass(sets, progress)?;
        let pass = eval::embed(masked, &sets.train, self.ctx.batch, &self.ctx.device, &mut |d| progress(d, sets.train.len()))?;
        let mut set = atypical::analyze_logits(&pass.logits, &full, ratio, kind, &sets.train, self.ctx.classes)?;
        set.full_detection = self.full_detection.clone();
        self.masked_train = Some(pass);
        Ok(set)
    }

    /// The masked model's ID test accuracy and OOD detection on the complete sets, every detector
    /// fitted on the masked model's own training pass. Called right after [`Self::gamma_at`] with
    /// the same model, it reuses that pass.
    pub fn detection(&mut self, masked: &Net, sets: &Sets, progress: Progress) -> Result<Detection> {
        self.detection_in_order(masked, sets, None, progress, &mut |_| Ok(()))
    }

    /// [`Self::detection`], in order of need: with `first`, that score's figures on every set are
    /// handed to `on_first` as soon as the passes are done, before the other scores are computed
    /// (each score is computed once; the complete detection is returned).
    pub fn detection_in_order(&mut self, masked: &Net, sets: &Sets, first: Option<Score>, progress: Progress, on_first: &mut dyn FnMut(Detection) -> Result<()>) -> Result<Detection> {
        let train = match self.masked_train.take() {
            Some(pass) => pass,
            None => eval::embed(masked, &sets.train, self.ctx.batch, &self.ctx.device, &mut |d| progress(d, sets.train.len()))?,
        };
        detect(masked, sets, &self.ctx, &self.detectors, &train, first, progress, on_first)
    }

    /// gamma and the atypical set at `ratio` on the complete training set (what UM's gamma, the
    /// atypical list and the contact sheet need), without any detection.
    pub fn gamma(&mut self, ratio: f64, kind: MaskKind, seed: u64, sets: &Sets, progress: Progress) -> Result<AtypicalSet> {
        let masked = self.masked(ratio, kind, seed)?;
        self.gamma_at(&masked, ratio, kind, sets, progress)
    }

    /// The whole answer on the complete sets, next to the unmasked model's detection:
    /// [`Self::gamma_at`] then [`Self::detection`].
    pub fn answer(&mut self, ratio: f64, kind: MaskKind, seed: u64, sets: &Sets, progress: Progress) -> Result<AtypicalSet> {
        self.full_detection(sets, progress)?;
        let masked = self.masked(ratio, kind, seed)?;
        let mut set = self.gamma_at(&masked, ratio, kind, sets, progress)?;
        let detection = self.detection(&masked, sets, progress)?;
        set.masked_test_acc = Some(detection.test_acc);
        set.masked_detection = Some(detection);
        Ok(set)
    }
}

/// The unmasked model's training pass and detection on `sets`, from one forward pass each.
fn reference(model: &Net, epoch: usize, sets: &Sets, ctx: &EvalContext, detectors: &DetectorConfig, progress: Progress) -> Result<Reference> {
    let pass = eval::embed(model, &sets.train, ctx.batch, &ctx.device, &mut |d| progress(d, sets.train.len()))?;
    let train = LabelledPass::from_logits(&pass.logits, ctx.classes, &sets.train.labels)?;
    let mut nothing = |_: Detection| Ok(());
    let detection = detect(model, sets, ctx, detectors, &pass, None, progress, &mut nothing)?;
    Ok(Reference { full: FullPass::from_pass(epoch, &train, &sets.train.labels, detection.test_acc), detection })
}

/// ID test accuracy and every score's metrics on the validation and every test OOD set, scored
/// as the per-epoch evaluation scores them ([`eval::score_sets`]); `train` is the model's own
/// pass over the training set, which the detectors are fitted on. With `first`, that score's
/// detection goes to `on_first` before the other scores are computed.
#[allow(clippy::too_many_arguments)]
fn detect(model: &Net, sets: &Sets, ctx: &EvalContext, detectors: &DetectorConfig, train: &Embedded, first: Option<Score>, progress: Progress, on_first: &mut dyn FnMut(Detection) -> Result<()>) -> Result<Detection> {
    let fitted = Detectors::fit(model.head()?, train, &sets.train.labels, detectors)?;
    let mut set_progress = |_: &str, done: usize, total: usize| progress(done, total);
    let passes = SetPasses::embed(model, sets, ctx, &mut set_progress)?;
    let detection_of = |wanted: &dyn Fn(Score) -> bool, set_progress: eval::SetProgress| -> Result<Detection> {
        let scored = passes.score(model, sets, ctx, train, &fitted, detectors, wanted, set_progress)?;
        let m = scored.metrics(sets)?;
        Ok(Detection { test_acc: scored.test.accuracy, val_name: sets.val.name.clone(), val: m.val, ood: m.ood, ood_mean: m.ood_mean, problems: scored.problems, pending: Vec::new() })
    };
    let Some(first) = first else {
        return detection_of(&|_| true, &mut set_progress);
    };
    let mut early = detection_of(&|s| s == first, &mut set_progress)?;
    let others = Score::ALL.iter().copied().filter(|&s| s != first && (s != Score::Odin || detectors.odin));
    on_first(Detection { pending: others.collect(), ..early.clone() })?;
    let rest = detection_of(&|s| s != first, &mut set_progress)?;
    early.val.extend(rest.val);
    for (set, metrics) in rest.ood {
        early.ood.entry(set).or_default().extend(metrics);
    }
    early.ood_mean.extend(rest.ood_mean);
    early.problems.extend(rest.problems);
    Ok(early)
}

fn remap_indices(samples: &mut [AtypicalSample], original: &[usize]) {
    for s in samples {
        s.index = original[s.index];
    }
}

/// Seeded subsets: class-stratified for the labelled ID sets, uniform for the OOD sets.
fn preview_sets(sets: &Sets, size: PreviewSize, seed: u64) -> PreviewSets {
    let train_index = stratified(&sets.train.labels, size.train, seed);
    let test_index = stratified(&sets.test.labels, size.id_test, seed.wrapping_add(1));
    let pick = |set: &PreparedSet, k: u64| set.subset(&uniform(set.len(), size.per_ood_set, seed.wrapping_add(k)));
    PreviewSets {
        sets: Sets {
            train: sets.train.subset(&train_index),
            test: sets.test.subset(&test_index),
            id_val: sets.id_val.as_ref().map(|v| v.subset(&stratified(&v.labels, size.id_test, seed.wrapping_add(2)))),
            val: pick(&sets.val, 2),
            ood: sets.ood.iter().enumerate().map(|(i, s)| pick(s, 3 + i as u64)).collect(),
        },
        train_index,
        size,
    }
}

/// `n` indices of `0..len`, seeded, ascending (all of them when `n >= len`).
fn uniform(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(n);
    idx.sort_unstable();
    idx
}

/// About `n` indices with each class represented in proportion to its share (largest remainders
/// get the rounding), seeded, ascending.
pub fn stratified(labels: &[u32], n: usize, seed: u64) -> Vec<usize> {
    if n >= labels.len() {
        return (0..labels.len()).collect();
    }
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let total = labels.len() as f64;
    let mut quotas: Vec<(u32, usize, f64)> = by_class
        .iter()
        .map(|(&c, members)| {
            let exact = n as f64 * members.len() as f64 / total;
            (c, exact.floor() as usize, exact - exact.floor())
        })
        .collect();
    let mut left = n - quotas.iter().map(|q| q.1).sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
    by_remainder.sort_by(|&a, &b| quotas[b].2.total_cmp(&quotas[a].2).then(a.cmp(&b)));
    for &k in &by_remainder {
        if left == 0 {
            break;
        }
        quotas[k].1 += 1;
        left -= 1;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    for (c, quota, _) in quotas {
        let mut members = by_class[&c].clone();
        members.shuffle(&mut rng);
        out.extend(members.into_iter().take(quota));
    }
    out.sort_unstable();
    out
}


/// Ratios of the default sweep: log-spaced from 0.01 to 0.95, where magnitude masking goes from
/// harmless to destructive; three significant digits, so they read well in tables.
pub fn default_sweep_ratios(count: usize) -> Vec<f64> {
    let (lo, hi) = (0.01f64.ln(), 0.95f64.ln());
    (0..count).map(|i| (lo + (hi - lo) * i as f64 / (count.max(2) - 1) as f64).exp()).map(three_digits).collect()
}

fn three_digits(x: f64) -> f64 {
    let scale = 10f64.powi(2 - x.log10().floor() as i32);
    (x * scale).round() / scale
}

/// Linear interpolation of sweep points at `ratio` in log-ratio (the slider's scale); None
/// outside the swept range.
pub fn interpolate(points: &[MaskSweepPoint], ratio: f64) -> Option<MaskSweepPoint> {
    let mut pts: Vec<&MaskSweepPoint> = points.iter().filter(|p| p.ratio > 0.0).collect();
    pts.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    if ratio <= 0.0 {
        return None;
    }
    let x = ratio.ln();
    let i = pts.windows(2).position(|w| w[0].ratio <= ratio && ratio <= w[1].ratio)?;
    let (a, b) = (pts[i], pts[i + 1]);
    let t = if b.ratio > a.ratio { (x - a.ratio.ln()) / (b.ratio.ln() - a.ratio.ln()) } else { 0.0 };
    let lerp = |u: f64, v: f64| u + (v - u) * t;
    Some(MaskSweepPoint {
        ratio,
        gamma: lerp(a.gamma, b.gamma),
        atypical: lerp(a.atypical as f64, b.atypical as f64).round() as usize,
        masked_test_acc: lerp(a.masked_test_acc, b.masked_test_acc),
        masked_ood_auroc: lerp(a.masked_ood_auroc, b.masked_ood_auroc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unleash::MaskSweepPoint;

    #[test]
    fn stratified_keeps_class_shares_and_is_seeded() {
        // 60 of class 0, 30 of class 1, 10 of class 2: a 20-sample subset takes 12 / 6 / 2.
        let labels: Vec<u32> = (0..100).map(|i| if i < 60 { 0 } else if i < 90 { 1 } else { 2 }).collect();
        let a = stratified(&labels, 20, 7);
        assert_eq!(a.len(), 20);
        let count = |c| a.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(0), count(1), count(2)), (12, 6, 2));
        assert_eq!(a, stratified(&labels, 20, 7));
        assert_ne!(a, stratified(&labels, 20, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn stratified_rounding_gives_exactly_n() {
        // Three equal classes and n = 10: remainders 1/3 each, the first class gets the extra one.
        let labels: Vec<u32> = (0..30).map(|i| (i % 3) as u32).collect();
        let a = stratified(&labels, 10, 0);
        assert_eq!(a.len(), 10);
        assert_eq!(a.iter().filter(|&&i| labels[i] == 0).count(), 4);
        assert_eq!(stratified(&labels, 50, 0).len(), 30);
    }

    #[test]
    fn sweep_ratios_are_log_spaced_between_the_ends() {
        let r = default_sweep_ratios(12);
        assert_eq!(r.len(), 12);
        assert_eq!((r[0], r[11]), (0.01, 0.95));
        let steps: Vec<f64> = r.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        assert!(steps.iter().all(|s| (s - steps[0]).abs() < 1e-2), "{steps:?}");
    }

    #[test]
    fn interpolation_is_linear_in_log_ratio() {
        let p = |ratio: f64, gamma: f64, atypical: usize| MaskSweepPoint { ratio, gamma, atypical, masked_test_acc: 1.0 - ratio, masked_ood_auroc: 0.9 };
        let pts = [p(0.1, 0.0, 0), p(0.4, 2.0, 100)];
        let mid = interpolate(&pts, 0.2).unwrap();
        assert!((mid.gamma - 1.0).abs() < 1e-12);
        assert_eq!(mid.atypical, 50);
        assert!((mid.masked_test_acc - 0.75).abs() < 1e-12);
        assert!(interpolate(&pts, 0.05).is_none());
        assert!(interpolate(&pts, 0.5).is_none());
        assert_eq!(interpolate(&pts, 0.4).unwrap().gamma, 2.0);
    }
}
