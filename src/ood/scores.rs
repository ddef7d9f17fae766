//! Logit-based OOD scores (higher = more ID), computed on the host from one readback of logits.

use serde::{Deserialize, Serialize};

/// The post-hoc scores every run records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    Msp,
    MaxLogit,
    Energy,
}

impl Score {
    pub const ALL: [Score; 3] = [Score::Msp, Score::MaxLogit, Score::Energy];

    pub fn name(self) -> &'static str {
        match self {
            Score::Msp => "MSP",
            Score::MaxLogit => "MaxLogit",
            Score::Energy => "Energy",
        }
    }

    /// File-name friendly key.
    pub fn key(self) -> &'static str {
        match self {
            Score::Msp => "msp",
            Score::MaxLogit => "maxlogit",
            Score::Energy => "energy",
        }
    }

    pub fn from_key(key: &str) -> Option<Score> {
        Score::ALL.into_iter().find(|s| s.key().eq_ignore_ascii_case(key) || s.name().eq_ignore_ascii_case(key))
    }

    /// This score of one row of logits.
    pub fn of(self, logits: &[f32]) -> f32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        match self {
            Score::MaxLogit => max,
            // MSP = exp(max) / sum(exp) = 1 / sum(exp(l - max)); f64 keeps ties from rounding.
            Score::Msp => (1.0 / sum_exp_shifted(logits, max)) as f32,
            // Energy with T = 1: logsumexp(logits).
            Score::Energy => (f64::from(max) + sum_exp_shifted(logits, max).ln()) as f32,
        }
    }
}

fn sum_exp_shifted(logits: &[f32], max: f32) -> f64 {
    logits.iter().map(|&l| f64::from(l - max).exp()).sum()
}

/// Per-sample scores of a `[n, classes]` row-major logit matrix.
pub fn score_rows(score: Score, logits: &[f32], classes: usize) -> Vec<f32> {
    logits.chunks_exact(classes).map(|row| score.of(row)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_closed_forms() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((Score::Msp.of(&l) as f64 - 3f64.exp() / z).abs() < 1e-6);
        assert_eq!(Score::MaxLogit.of(&l), 3.0);
        assert!((Score::Energy.of(&l) as f64 - z.ln()).abs() < 1e-5);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let l = [1000.0f32, 999.0];
        assert!(Score::Energy.of(&l).is_finite());
        assert!(Score::Msp.of(&l) > 0.7);
    }
}
