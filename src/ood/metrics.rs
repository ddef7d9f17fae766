//! OOD detection metrics, exactly as scikit-learn computes them (see METHOD.md).
//!
//! ID is the positive class and a higher score means "more ID". All four metrics come from one
//! O(n log n) sort of the pooled scores:
//! - AUROC = `roc_auc_score(y, s)`: Mann-Whitney U with ties counted one half (exact integer sums).
//! - FPR95 = fpr at the first point of `roc_curve(y, s)` (default `drop_intermediate=True`) whose
//!   tpr >= 0.95. Dropping collinear points matters for ties and tiny sets, so it is replicated.
//! - AUPR-In = `average_precision_score(y, s)`; AUPR-Out = the same with OOD positive, scores negated.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The four detection metrics for one ID-vs-OOD comparison (fractions, not percent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub auroc: f64,
    pub fpr95: f64,
    pub aupr_in: f64,
    pub aupr_out: f64,
}

impl Metrics {
    /// Plain mean of each metric over several OOD sets.
    pub fn mean(all: &[Metrics]) -> Option<Metrics> {
        if all.is_empty() {
            return None;
        }
        let n = all.len() as f64;
        let sum = |f: fn(&Metrics) -> f64| all.iter().map(f).sum::<f64>() / n;
        Some(Metrics {
            auroc: sum(|m| m.auroc),
            fpr95: sum(|m| m.fpr95),
            aupr_in: sum(|m| m.aupr_in),
            aupr_out: sum(|m| m.aupr_out),
        })
    }
}

/// One group of equal scores, in descending score order: how many ID and OOD samples share it.
#[derive(Debug, Clone, Copy)]
struct TieGroup {
    id: u64,
    ood: u64,
}

/// Maps an f32 to a u32 whose unsigned order is the float's total order.
fn sortable_bits(x: f32) -> u32 {
    // -0.0 and 0.0 are one threshold for numpy, so they must be one key here.
    let b = if x == 0.0 { 0u32 } else { x.to_bits() };
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// Sorts the pooled scores (descending) and returns their tie groups.
fn tie_groups(id_scores: &[f32], ood_scores: &[f32]) -> Result<Vec<TieGroup>> {
    if id_scores.is_empty() || ood_scores.is_empty() {
        return Err(Error::Other(format!(
            "metrics need both classes: {} ID and {} OOD scores given",
            id_scores.len(),
            ood_scores.len()
        )));
    }
    // scikit-learn refuses non-finite scores; so do we (an inf usually means a diverged model).
    if let Some(bad) = id_scores.iter().chain(ood_scores).find(|s| !s.is_finite()) {
        return Err(Error::Other(format!("scores contain {bad}; metrics need finite numbers")));
    }
    // Key = sortable score in the high 32 bits, label in bit 0: one u64 sort does the work.
    let mut keys: Vec<u64> = Vec::with_capacity(id_scores.len() + ood_scores.len());
    keys.extend(id_scores.iter().map(|&s| (u64::from(sortable_bits(s)) << 32) | 1));
    keys.extend(ood_scores.iter().map(|&s| u64::from(sortable_bits(s)) << 32));
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let mut groups: Vec<TieGroup> = Vec::new();
    let mut current: Option<u64> = None;
    for k in keys {
        let score = k >> 32;
        if current != Some(score) {
            groups.push(TieGroup { id: 0, ood: 0 });
            current = Some(score);
        }
        let g = groups.last_mut().expect("pushed above");
        if k & 1 == 1 { g.id += 1 } else { g.ood += 1 }
    }
    Ok(groups)
}

/// All four metrics for ID scores against OOD scores (higher = more ID).
pub fn compute(id_scores: &[f32], ood_scores: &[f32]) -> Result<Metrics> {
    let groups = tie_groups(id_scores, ood_scores)?;
    let p = id_scores.len() as u64;
    let n = ood_scores.len() as u64;
    Ok(Metrics {
        auroc: auroc_from_groups(&groups, p, n),
        fpr95: fpr_at_tpr_from_groups(&groups, p, n, 0.95),
        aupr_in: average_precision(groups.iter().map(|g| (g.id, g.ood)), p),
        aupr_out: average_precision(groups.iter().rev().map(|g| (g.ood, g.id)), n),
    })
}

/// AUROC only (same definition as [`compute`]).
pub fn auroc(id_scores: &[f32], ood_scores: &[f32]) -> Result<f64> {
    let groups = tie_groups(id_scores, ood_scores)?;
    Ok(auroc_from_groups(&groups, id_scores.len() as u64, ood_scores.len() as u64))
}

fn auroc_from_groups(groups: &[TieGroup], p: u64, n: u64) -> f64 {
    // Twice the U statistic, in exact integers: each OOD sample is beaten by every ID sample above
    // it (2 each) and ties with every ID sample in its group (1 each).
    let mut twice_u: u128 = 0;
    let mut id_above: u64 = 0;
    for g in groups {
        twice_u += u128::from(g.ood) * u128::from(2 * id_above + g.id);
        id_above += g.id;
    }
    twice_u as f64 / (2.0 * p as f64 * n as f64)
}

/// Cumulative (tps, fps) per distinct threshold, descending, as sklearn's `_binary_clf_curve`.
fn cumulative_counts(groups: &[TieGroup]) -> Vec<(u64, u64)> {
    let (mut tps, mut fps) = (0u64, 0u64);
    groups
        .iter()
        .map(|g| {
            tps += g.id;
            fps += g.ood;
            (tps, fps)
        })
        .collect()
}

/// The ROC points sklearn's `roc_curve(y, s)` returns (drop_intermediate=True), as (fpr, tpr),
/// starting at (0, 0).
pub fn roc_curve(id_scores: &[f32], ood_scores: &[f32]) -> Result<Vec<(f64, f64)>> {
    let groups = tie_groups(id_scores, ood_scores)?;
    let (p, n) = (id_scores.len() as f64, ood_scores.len() as f64);
    Ok(roc_points(&groups)
        .into_iter()
        .map(|(tps, fps)| (fps as f64 / n, tps as f64 / p))
        .collect())
}

/// (tps, fps) of the kept ROC points, with sklearn's leading (0, 0).
fn roc_points(groups: &[TieGroup]) -> Vec<(u64, u64)> {
    let counts = cumulative_counts(groups);
    let mut points = vec![(0u64, 0u64)];
    if counts.len() <= 2 {
        points.extend(counts);
        return points;
    }
    let last = counts.len() - 1;
    // sklearn keeps a point where the second difference of fps or tps is non-zero (a corner).
    let second_diff_nonzero = |i: usize, f: fn(&(u64, u64)) -> u64| {
        let (a, b, c) = (f(&counts[i - 1]) as i128, f(&counts[i]) as i128, f(&counts[i + 1]) as i128);
        a - 2 * b + c != 0
    };
    for i in 0..=last {
        let keep = i == 0 || i == last || second_diff_nonzero(i, |c| c.0) || second_diff_nonzero(i, |c| c.1);
        if keep {
            points.push(counts[i]);
        }
    }
    points
}

fn fpr_at_tpr_from_groups(groups: &[TieGroup], p: u64, n: u64, min_tpr: f64) -> f64 {
    roc_points(groups)
        .into_iter()
        .find(|&(tps, _)| tps as f64 / p as f64 >= min_tpr)
        .map(|(_, fps)| fps as f64 / n as f64)
        .unwrap_or(1.0)
}

/// sklearn's `average_precision_score`: sum over thresholds (descending) of
/// (recall_k - recall_{k-1}) * precision_k, from (positives, negatives) per tie group, with recall
/// differences taken as sklearn takes them. Rounding can push a perfect score a few ulps past 1;
/// it is clamped to the true range.
fn average_precision(groups: impl Iterator<Item = (u64, u64)>, total_pos: u64) -> f64 {
    let (mut tps, mut fps) = (0u64, 0u64);
    let mut ap = 0.0f64;
    let mut prev_recall = 0.0f64;
    for (pos, neg) in groups {
        tps += pos;
        fps += neg;
        if pos > 0 {
            let recall = tps as f64 / total_pos as f64;
            let precision = tps as f64 / (tps + fps) as f64;
            ap += (recall - prev_recall) * precision;
            prev_recall = recall;
        }
    }
    ap.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation() {
        let m = compute(&[3.0, 4.0], &[1.0, 2.0]).unwrap();
        assert_eq!(m.auroc, 1.0);
        assert_eq!(m.fpr95, 0.0);
        assert_eq!(m.aupr_in, 1.0);
        assert_eq!(m.aupr_out, 1.0);
    }

    #[test]
    fn all_tied_is_chance() {
        let m = compute(&[1.0; 3], &[1.0; 5]).unwrap();
        assert_eq!(m.auroc, 0.5);
        assert_eq!(m.fpr95, 1.0);
        assert!((m.aupr_in - 3.0 / 8.0).abs() < 1e-12);
        assert!((m.aupr_out - 5.0 / 8.0).abs() < 1e-12);
    }

    #[test]
    fn perfect_aupr_stays_within_one() {
        // Found by proptest: summing recall steps of 1/n overshot 1 by an ulp.
        let ood: Vec<f32> = (0..31).map(|i| if i % 3 == 0 { 0.25 } else { 0.0 }).collect();
        let m = compute(&[10.5], &ood).unwrap();
        assert!(m.aupr_out <= 1.0 && (m.aupr_out - 1.0).abs() < 1e-12, "{}", m.aupr_out);
    }

    #[test]
    fn empty_or_nan_is_an_error() {
        assert!(compute(&[], &[1.0]).is_err());
        assert!(compute(&[1.0], &[]).is_err());
        assert!(compute(&[f32::NAN], &[1.0]).is_err());
        assert!(compute(&[1.0], &[f32::INFINITY]).is_err());
    }

    #[test]
    fn sortable_bits_orders_like_floats() {
        let xs = [f32::NEG_INFINITY, -3.5, -0.0, 0.0, 1e-30, 2.0, f32::INFINITY];
        assert_eq!(sortable_bits(-0.0), sortable_bits(0.0));
        for w in xs.windows(2) {
            assert!(sortable_bits(w[0]) <= sortable_bits(w[1]), "{:?}", w);
        }
    }
}
