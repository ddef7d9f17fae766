//! Forward-only passes: one readback of logits per batch, then per-sample loss, accuracy and the
//! OOD scores are computed on the host (cheap: `classes` numbers per sample).

use crate::data::{Dataset, ImageShape, Normalization};
use crate::error::{Error, Result};
use crate::model::Net;
use crate::ood::Score;
use burn::prelude::*;
use std::collections::BTreeMap;

/// A set normalised once into f32, ready to slice into batches.
#[derive(Debug, Clone)]
pub struct PreparedSet {
    pub name: String,
    pub shape: ImageShape,
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
}

impl PreparedSet {
    pub fn new(ds: &Dataset, norm: &Normalization) -> PreparedSet {
        let mut x = Vec::new();
        norm.apply(ds.shape, &ds.pixels, &mut x);
        PreparedSet { name: ds.name.clone(), shape: ds.shape, x, labels: ds.labels.clone() }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Input tensor of the samples `range`.
    pub fn batch(&self, range: std::ops::Range<usize>, device: &Device) -> Tensor<4> {
        let d = self.shape.len();
        let data = self.x[range.start * d..range.end * d].to_vec();
        let ImageShape { channels, height, width } = self.shape;
        Tensor::from_data(TensorData::new(data, [range.len(), channels, height, width]), device)
    }

    /// Input and label tensors of the samples at `indices` (a shuffled batch).
    pub fn gather(&self, indices: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>, Vec<u32>) {
        let d = self.shape.len();
        let mut data = Vec::with_capacity(indices.len() * d);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            data.extend_from_slice(&self.x[i * d..(i + 1) * d]);
            labels.push(self.labels[i]);
        }
        let ImageShape { channels, height, width } = self.shape;
        let x = Tensor::from_data(TensorData::new(data, [indices.len(), channels, height, width]), device);
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

/// Every score of every row.
pub fn all_scores(logits: &[f32], classes: usize) -> BTreeMap<Score, Vec<f32>> {
    Score::ALL.iter().map(|&s| (s, crate::ood::scores::score_rows(s, logits, classes))).collect()
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
    fn labelled_pass_counts() {
        let logits = [2.0f32, 1.0, 0.0, 3.0];
        let pass = LabelledPass::from_logits(&logits, 2, &[0, 0]).unwrap();
        assert_eq!(pass.predictions, vec![0, 1]);
        assert_eq!(pass.accuracy, 0.5);
        assert!(LabelledPass::from_logits(&logits, 2, &[0, 7]).is_err());
    }
}
