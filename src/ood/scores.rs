//! Logit-based OOD scores (higher = more ID), computed on the host from one readback of logits.
//!
//! MSP is stored as log-MSP, `-log1p(sum_{j != argmax} exp(l_j - l_max))`: the same order as MSP
//! (log is increasing), so every rank metric is MSP's, but it does not saturate. Plain MSP in f32
//! rounds to exactly 1.0 once the logit margin passes about 17 (1 - 2^-24), and those ties blunt
//! the metrics; log-MSP stays distinct until exp(-margin) underflows f32 (margins of about 100).
//! Run folders written before this stored plain MSP in the same column; the metrics agree.

use serde::{Deserialize, Serialize};

/// The post-hoc scores a run records: three from the logits, six from the penultimate features
/// (fitted on the ID training pass, see [`super::detectors`]) and ODIN (an input-gradient step,
/// opt-in). The order is the column order of the score arrays: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    Msp,
    MaxLogit,
    Energy,
    Mahalanobis,
    Knn,
    Vim,
    React,
    Ash,
    Dice,
    Odin,
}

impl Score {
    pub const ALL: [Score; 10] = [
        Score::Msp,
        Score::MaxLogit,
        Score::Energy,
        Score::Mahalanobis,
        Score::Knn,
        Score::Vim,
        Score::React,
        Score::Ash,
        Score::Dice,
        Score::Odin,
    ];

    /// The scores of the logits alone (all that runs written before the detectors recorded).
    pub const LOGIT: [Score; 3] = [Score::Msp, Score::MaxLogit, Score::Energy];

    pub fn name(self) -> &'static str {
        match self {
            Score::Msp => "MSP",
            Score::MaxLogit => "MaxLogit",
            Score::Energy => "Energy",
            Score::Mahalanobis => "Mahalanobis",
            Score::Knn => "KNN",
            Score::Vim => "ViM",
            Score::React => "ReAct",
            Score::Ash => "ASH-S",
            Score::Dice => "DICE",
            Score::Odin => "ODIN",
        }
    }

    /// File-name friendly key (the JSON name).
    pub fn key(self) -> &'static str {
        match self {
            Score::Msp => "msp",
            Score::MaxLogit => "maxlogit",
            Score::Energy => "energy",
            Score::Mahalanobis => "mahalanobis",
            Score::Knn => "knn",
            Score::Vim => "vim",
            Score::React => "react",
            Score::Ash => "ash",
            Score::Dice => "dice",
            Score::Odin => "odin",
        }
    }

    pub fn from_key(key: &str) -> Option<Score> {
        Score::ALL.into_iter().find(|s| s.key().eq_ignore_ascii_case(key) || s.name().eq_ignore_ascii_case(key))
    }

    /// This score of one row of logits; the feature scores and ODIN are not functions of the
    /// logits alone and give NaN here (see [`super::detectors`]).
    pub fn of(self, logits: &[f32]) -> f32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        match self {
            Score::MaxLogit => max,
            // log MSP = -log(sum exp(l - max)) = -log1p(sum over the other classes): the 1 of the
            // max term is kept out of the sum, so a tiny rest is not lost in 1 + rest.
            Score::Msp => (-log_msp_rest(logits, max).ln_1p()) as f32,
            // Energy with T = 1: logsumexp(logits).
            Score::Energy => (f64::from(max) + sum_exp_shifted(logits, max).ln()) as f32,
            _ => f32::NAN,
        }
    }
}

/// sum over every class but the (first) maximum of exp(l - max), in f64.
fn log_msp_rest(logits: &[f32], max: f32) -> f64 {
    let first_max = logits.iter().position(|&l| l == max);
    logits.iter().enumerate().filter(|&(i, _)| Some(i) != first_max).map(|(_, &l)| f64::from(l - max).exp()).sum()
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
        // Stored MSP is log(softmax max).
        assert!((Score::Msp.of(&l) as f64 - (3f64.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(Score::MaxLogit.of(&l), 3.0);
        assert!((Score::Energy.of(&l) as f64 - z.ln()).abs() < 1e-5);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let l = [1000.0f32, 999.0];
        // log MSP = -log(1 + e^-1); Energy = 1000 + log(1 + e^-1).
        let rest = (-1f64).exp().ln_1p();
        assert!((f64::from(Score::Msp.of(&l)) + rest).abs() < 1e-7, "{}", Score::Msp.of(&l));
        assert!((f64::from(Score::Energy.of(&l)) - (1000.0 + rest)).abs() < 1e-4, "{}", Score::Energy.of(&l));
    }

    #[test]
    fn msp_does_not_saturate_past_a_margin_of_17() {
        // Plain f32 MSP of these rows is exactly 1.0 for all three: a three-way tie.
        let rows = [[20.0f32, 0.0, 0.0], [30.0, 0.0, 0.0], [60.0, 0.0, 0.0]];
        let plain: Vec<f32> = rows.iter().map(|r| (1.0 / sum_exp_shifted(r, r[0])) as f32).collect();
        assert_eq!(plain, vec![1.0; 3], "the failure this avoids");
        let msp: Vec<f32> = rows.iter().map(|r| Score::Msp.of(r)).collect();
        assert!(msp[0] < msp[1] && msp[1] < msp[2] && msp[2] < 0.0, "{msp:?}");
        // -log1p(2 e^-m) ~ -2 e^-m.
        for (m, v) in [20.0f64, 30.0, 60.0].iter().zip(&msp) {
            let want = -(2.0 * (-m).exp());
            assert!(((f64::from(*v) - want) / want).abs() < 1e-6, "margin {m}: {v} vs {want}");
        }
        // Two equal maxima: MSP 1/2 exactly.
        assert!((Score::Msp.of(&[5.0, 5.0]) - 0.5f32.ln()).abs() < 1e-7);
    }
}
