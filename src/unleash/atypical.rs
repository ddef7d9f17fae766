//! The loss constraint gamma and the atypical samples a mask reveals: training samples the full
//! model classifies correctly and the masked model does not.

use super::mask::{masked_copy, MaskKind};
use super::probe::{Detection, PreviewSize};
use crate::ood::Score;
use crate::error::Result;
use crate::model::Net;
use crate::eval::{LabelledPass, PreparedSet};
use serde::{Deserialize, Serialize};

/// One atypical training sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtypicalSample {
    pub index: usize,
    pub label: u32,
    pub full_prediction: u32,
    pub masked_prediction: u32,
    pub full_loss: f32,
    pub masked_loss: f32,
}

impl AtypicalSample {
    pub fn loss_increase(&self) -> f32 {
        self.masked_loss - self.full_loss
    }
}

/// What one mask ratio gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtypicalSet {
    pub ratio: f64,
    pub kind: MaskKind,
    /// The snapshot the mask was applied to.
    pub epoch: usize,
    /// gamma(r): mean CE of the masked model over the ID training set (eval mode).
    pub gamma: f64,
    pub full_train_loss: f64,
    pub full_test_acc: f64,
    /// The masked model's ID test accuracy: a second pass, so the app shows gamma and the atypical
    /// set first and fills this in after (None until then).
    pub masked_test_acc: Option<f64>,
    pub masked_train_acc: f64,
    /// Sorted by masked loss, highest first.
    pub samples: Vec<AtypicalSample>,
    /// The masked model's loss on every training sample (for histograms).
    #[serde(skip)]
    pub masked_losses: Vec<f32>,
    /// The masked model's ID test accuracy and OOD detection (None until that pass has run).
    #[serde(default)]
    pub masked_detection: Option<Detection>,
    /// The unmasked model's, on the same samples, for the differences.
    #[serde(default)]
    pub full_detection: Option<Detection>,
    /// Some: a preview on subsets of these sizes (gamma, counts and metrics are estimates).
    #[serde(default)]
    pub preview: Option<PreviewSize>,
}

impl AtypicalSet {
    pub fn sweep_point(&self) -> MaskSweepPoint {
        MaskSweepPoint {
            ratio: self.ratio,
            gamma: self.gamma,
            atypical: self.samples.len(),
            masked_test_acc: self.masked_test_acc.unwrap_or(f64::NAN),
            masked_ood_auroc: self.masked_detection.as_ref().map_or(f64::NAN, |d| d.mean_auroc(Score::Energy)),
        }
    }

    /// The atypical count scaled to the whole training set (a preview counts on its subset).
    pub fn estimated_atypical(&self, train_samples: usize) -> usize {
        match self.preview {
            Some(p) if p.train > 0 && p.train < train_samples => (self.samples.len() as f64 * train_samples as f64 / p.train as f64).round() as usize,
            _ => self.samples.len(),
        }
    }

    /// CSV: index,label,full_prediction,masked_prediction,full_loss,masked_loss,loss_increase.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("index,label,full_prediction,masked_prediction,full_loss,masked_loss,loss_increase\n");
        for a in &self.samples {
            s.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                a.index, a.label, a.full_prediction, a.masked_prediction, a.full_loss, a.masked_loss, a.loss_increase()
            ));
        }
        s
    }
}

/// One point of the gamma-vs-ratio curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskSweepPoint {
    pub ratio: f64,
    pub gamma: f64,
    pub atypical: usize,
    /// NaN where not computed (written as null).
    #[serde(deserialize_with = "null_as_nan")]
    pub masked_test_acc: f64,
    /// The masked model's mean test-OOD Energy AUROC (NaN where not computed).
    #[serde(default = "nan", deserialize_with = "null_as_nan")]
    pub masked_ood_auroc: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// serde_json writes a NaN as null; read it back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The full model's passes, computed once per snapshot and reused for every ratio.
#[derive(Debug, Clone)]
pub struct FullPass {
    pub epoch: usize,
    pub train: LabelledPass,
    pub test_acc: f64,
}

/// `model` with the fraction `ratio` of each conv/linear weight zeroed (see [`masked_copy`]).
pub fn masked_model(model: &Net, ratio: f64, kind: MaskKind, seed: u64) -> Result<Net> {
    crate::config::check_mask_ratio(ratio)?;
    Ok(masked_copy(model, ratio, kind, seed))
}

/// gamma and the atypical set of the model masked at `ratio`, from its logits over the training
/// set, row-major `[n, classes]`, against the full model's pass `full`.
pub fn analyze_logits(tl: &[f32], full: &FullPass, ratio: f64, kind: MaskKind, train: &PreparedSet, classes: usize) -> Result<AtypicalSet> {
    let m_train = LabelledPass::from_logits(tl, classes, &train.labels)?;
    let mut samples: Vec<AtypicalSample> = (0..train.len())
        .filter(|&i| full.train.predictions[i] == train.labels[i] && m_train.predictions[i] != train.labels[i])
        .map(|i| AtypicalSample {
            index: i,
            label: train.labels[i],
            full_prediction: full.train.predictions[i],
            masked_prediction: m_train.predictions[i],
            full_loss: full.train.per_sample_loss[i],
            masked_loss: m_train.per_sample_loss[i],
        })
        .collect();
    samples.sort_by(|a, b| b.masked_loss.total_cmp(&a.masked_loss).then(a.index.cmp(&b.index)));
    Ok(AtypicalSet {
        ratio,
        kind,
        epoch: full.epoch,
        gamma: m_train.mean_loss,
        full_train_loss: full.train.mean_loss,
        full_test_acc: full.test_acc,
        masked_test_acc: None,
        masked_train_acc: m_train.accuracy,
        samples,
        masked_losses: m_train.per_sample_loss,
        masked_detection: None,
        full_detection: None,
        preview: None,
    })
}

/// gamma as the q-quantile of per-sample losses (linear interpolation, as numpy's default).
pub fn gamma_from_quantile(losses: &[f32], q: f64) -> Option<f64> {
    crate::ood::quantile(losses.iter().map(|&l| f64::from(l)).collect(), q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(labels: &[u32]) -> PreparedSet {
        let shape = crate::data::ImageShape { channels: 1, height: 1, width: 1 };
        PreparedSet::from_normalised("t", shape, vec![0.0; labels.len()], labels.to_vec())
    }

    #[test]
    fn analyze_flags_full_right_masked_wrong_sorted_by_masked_loss() {
        // Four samples, two classes. Full model: right on 0, 1, 2; wrong on 3.
        let labels = [0u32, 1, 0, 1];
        let full_logits = [3.0f32, 0.0, 0.0, 3.0, 1.0, 0.0, 2.0, 0.0];
        let full = FullPass { epoch: 7, train: LabelledPass::from_logits(&full_logits, 2, &labels).unwrap(), test_acc: 0.5 };
        // Masked model: 0 stays right; 1 and 2 turn wrong (2 more confidently); 3 stays wrong.
        let masked = [2.0f32, 0.0, 0.5, 0.0, 0.0, 2.0, 3.0, 0.0];
        let set = analyze_logits(&masked, &full, 0.5, MaskKind::Magnitude, &set_of(&labels), 2).unwrap();
        assert_eq!(set.samples.iter().map(|a| a.index).collect::<Vec<_>>(), vec![2, 1], "only full-right, masked-wrong samples; highest masked loss first");
        let ce = |row: &[f32], y: usize| crate::eval::cross_entropy(row, y);
        assert!((f64::from(set.samples[0].masked_loss) - ce(&masked[4..6], 0)).abs() < 1e-6);
        assert_eq!((set.samples[0].full_prediction, set.samples[0].masked_prediction, set.samples[0].label), (0, 1, 0));
        // gamma is the masked model's mean loss over every training sample, not just the atypical.
        let mean = (0..4).map(|i| ce(&masked[2 * i..2 * i + 2], labels[i] as usize)).sum::<f64>() / 4.0;
        assert!((set.gamma - mean).abs() < 1e-12);
        assert_eq!((set.epoch, set.full_test_acc, set.masked_train_acc), (7, 0.5, 0.25));
        let csv = set.to_csv();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("index,label,full_prediction,masked_prediction,full_loss,masked_loss,loss_increase"));
        let first: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(&first[..4], &["2", "0", "0", "1"]);
        let increase: f32 = first[6].parse().unwrap();
        assert!((increase - set.samples[0].loss_increase()).abs() < 1e-6);
        assert_eq!(csv.lines().count(), 3);
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        let l = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(gamma_from_quantile(&l, 0.5), Some(2.5));
        assert_eq!(gamma_from_quantile(&l, 1.0), Some(4.0));
        assert_eq!(gamma_from_quantile(&[], 0.5), None);
    }
}
