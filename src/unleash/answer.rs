//! What the mask explorer answers, in one place: the atypical set of a ratio with its gamma, the
//! masked and unmasked models' detection, the sweep's points and the preview's sizes. The code
//! that computes them ([`super::atypical`], [`super::probe`]) depends on these types, never the
//! other way round.

use super::mask::MaskKind;
use crate::ood::{Metrics, Score};
use crate::run::{EpochRecord, ScoreMetrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sizes of the preview subsets: enough for a stable gamma and AUROC, small enough to answer in
/// well under a second on two CPU cores (about 2,750 forward passes with the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewSize {
    pub train: usize,
    pub id_test: usize,
    pub per_ood_set: usize,
}

impl Default for PreviewSize {
    fn default() -> Self {
        PreviewSize { train: 1000, id_test: 500, per_ood_set: 250 }
    }
}

/// A model's ID test accuracy and OOD detection (every score, every set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub test_acc: f64,
    /// The validation OOD set and its metrics (what selection may look at).
    pub val_name: String,
    pub val: ScoreMetrics,
    /// Test OOD sets (reported only), by name.
    pub ood: BTreeMap<String, ScoreMetrics>,
    /// Plain mean over the test OOD sets.
    pub ood_mean: ScoreMetrics,
    /// Detectors that could not be fitted on this model, each message naming one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Scores still being computed: the first part of an answer in order of need (see
    /// [`super::MaskProbe::detection_in_order`]) has the score on screen and lists the rest here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Score>,
}

impl Detection {
    /// An epoch's own figures: its evaluation scored the unmasked model exactly so.
    pub fn from_record(r: &EpochRecord) -> Detection {
        Detection { test_acc: r.test_acc, val_name: r.val_name.clone(), val: r.val.clone(), ood: r.ood.clone(), ood_mean: r.ood_mean.clone(), problems: r.detector_problems.clone(), pending: Vec::new() }
    }

    /// The headline: mean test-OOD AUROC of a score.
    pub fn mean_auroc(&self, score: Score) -> f64 {
        self.ood_mean.get(&score).map_or(f64::NAN, |m| m.auroc)
    }

    pub fn mean(&self, score: Score) -> Option<Metrics> {
        self.ood_mean.get(&score).copied()
    }
}

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

