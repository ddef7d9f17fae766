//! Where a fine-tune's loss constraint gamma comes from: one vocabulary for the app and the CLI.

use super::atypical::gamma_from_quantile;
use crate::run::EpochRecord;
use std::sync::Arc;

/// A source of gamma for a fine-tune that starts from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GammaSource {
    /// gamma of the start snapshot masked at a ratio (the paper's choice). It needs the model: a
    /// [`super::MaskProbe`] answers it, not the history.
    MaskRatio,
    /// The q-quantile of the start snapshot's per-sample training losses.
    Quantile(f64),
    /// The mean training loss (eval pass) at an epoch.
    EpochLoss(usize),
    Manual(f64),
}

impl GammaSource {
    /// gamma from the run's history for a fine-tune starting at snapshot `start`: None for the
    /// mask ratio; Err says what the run lacks.
    pub fn from_history(self, records: &[EpochRecord], loss_rows: &[Arc<Vec<f32>>], start: usize) -> Option<Result<f64, String>> {
        Some(match self {
            GammaSource::MaskRatio => return None,
            GammaSource::Manual(g) => Ok(g),
            GammaSource::Quantile(q) => match loss_rows.get(start.wrapping_sub(1)) {
                Some(row) => gamma_from_quantile(row, q).ok_or_else(|| format!("quantile {q} is outside [0, 1]")),
                None => Err(format!("has no per-sample losses for epoch {start}")),
            },
            GammaSource::EpochLoss(e) => records.get(e.wrapping_sub(1)).map(|r| r.train_eval_loss).ok_or_else(|| format!("has no epoch {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_sources_read_the_start_snapshot_and_the_named_epoch() {
        let rows = vec![Arc::new(vec![1.0f32, 2.0, 3.0]), Arc::new(vec![0.0, 10.0, 20.0])];
        let mut records = vec![crate::run::tests::record(1), crate::run::tests::record(2)];
        records[0].train_eval_loss = 0.7;
        assert_eq!(GammaSource::Quantile(0.5).from_history(&records, &rows, 2), Some(Ok(10.0)));
        assert_eq!(GammaSource::Quantile(0.5).from_history(&records, &rows, 1), Some(Ok(2.0)));
        assert_eq!(GammaSource::EpochLoss(1).from_history(&records, &rows, 2), Some(Ok(0.7)));
        assert_eq!(GammaSource::Manual(0.3).from_history(&records, &rows, 2), Some(Ok(0.3)));
        assert_eq!(GammaSource::MaskRatio.from_history(&records, &rows, 2), None);
        assert_eq!(GammaSource::EpochLoss(9).from_history(&records, &rows, 2), Some(Err("has no epoch 9".into())));
        assert_eq!(GammaSource::Quantile(0.5).from_history(&records, &rows, 3), Some(Err("has no per-sample losses for epoch 3".into())));
        assert_eq!(GammaSource::Quantile(1.5).from_history(&records, &rows, 1), Some(Err("quantile 1.5 is outside [0, 1]".into())));
    }
}
