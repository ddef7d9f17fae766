//! The loss constraint gamma and the atypical samples a mask reveals: training samples the full
//! model classifies correctly and the masked model does not.

use super::answer::{AtypicalSample, AtypicalSet};
use super::mask::{masked_copy, MaskKind};
use crate::error::Result;
use crate::model::Net;
use crate::eval::{LabelledPass, PreparedSet};
use crate::run::EpochRecord;

/// What gamma and the atypical set are measured against: the unmasked model of a snapshot on the
/// training set (eval mode), and its ID test accuracy. It comes from the run's records where the
/// epoch has them ([`FullPass::from_record`]: the epoch's evaluation is this same pass), else from
/// one pass ([`FullPass::from_pass`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FullPass {
    pub epoch: usize,
    pub per_sample_loss: Vec<f32>,
    /// Whether the model classifies each training sample right.
    pub correct: Vec<bool>,
    /// Mean of the per-sample losses (summed in f64 before each was stored as f32).
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_acc: f64,
}

impl FullPass {
    pub fn from_pass(epoch: usize, train: &LabelledPass, labels: &[u32], test_acc: f64) -> FullPass {
        FullPass { epoch, per_sample_loss: train.per_sample_loss.clone(), correct: train.correct(labels), train_loss: train.mean_loss, train_acc: train.accuracy, test_acc }
    }

    /// From an epoch's record and its rows of per_sample_loss.npy and per_sample_correct.npy;
    /// None where the correctness row is not known (epochs written by an earlier version) or the
    /// rows do not fit each other.
    pub fn from_record(record: &EpochRecord, loss_row: &[f32], correct_row: &[u8]) -> Option<FullPass> {
        if loss_row.len() != correct_row.len() || correct_row.iter().any(|&c| c > 1) {
            return None;
        }
        let correct: Vec<bool> = correct_row.iter().map(|&c| c == 1).collect();
        let train_acc = correct.iter().filter(|&&c| c).count() as f64 / correct.len().max(1) as f64;
        Some(FullPass { epoch: record.epoch, per_sample_loss: loss_row.to_vec(), correct, train_loss: record.train_eval_loss, train_acc, test_acc: record.test_acc })
    }
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
    if full.correct.len() != train.len() || full.per_sample_loss.len() != train.len() {
        return Err(crate::error::Error::Mismatch(format!("the unmasked model's pass covers {} samples, the training set has {}", full.correct.len(), train.len())));
    }
    let mut samples: Vec<AtypicalSample> = (0..train.len())
        .filter(|&i| full.correct[i] && m_train.predictions[i] != train.labels[i])
        .map(|i| AtypicalSample {
            index: i,
            label: train.labels[i],
            // Right, by the filter.
            full_prediction: train.labels[i],
            masked_prediction: m_train.predictions[i],
            full_loss: full.per_sample_loss[i],
            masked_loss: m_train.per_sample_loss[i],
        })
        .collect();
    samples.sort_by(|a, b| b.masked_loss.total_cmp(&a.masked_loss).then(a.index.cmp(&b.index)));
    Ok(AtypicalSet {
        ratio,
        kind,
        epoch: full.epoch,
        gamma: m_train.mean_loss,
        full_train_loss: full.train_loss,
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
        let full = FullPass::from_pass(7, &LabelledPass::from_logits(&full_logits, 2, &labels).unwrap(), &labels, 0.5);
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
