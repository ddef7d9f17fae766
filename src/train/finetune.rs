//! The phases a run is made of: its base training, and the three fine-tunes it can continue with.

use super::session::{Objective, PhaseSpec};
use crate::config::TrainConfig;
use crate::run::Phase;

/// Which fine-tune: UM (flooded CE), UMAP (learned pruning mask, flooded CE) or the plain-CE
/// control of the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finetune {
    Um,
    Umap,
    Control,
}

impl Finetune {
    /// The job's name (in a run's lock file).
    pub fn job(self) -> &'static str {
        match self {
            Finetune::Um => "um",
            Finetune::Umap => "umap",
            Finetune::Control => "control",
        }
    }

    /// The phase that runs this fine-tune from snapshot `from_epoch`. `gamma` is ignored by the
    /// control and `prune_ratio` by all but UMAP.
    pub fn phase_spec(self, gamma: f64, prune_ratio: f64, epochs: usize, lr: f64, from_epoch: usize) -> PhaseSpec {
        let (phase, objective, umap_ratio) = match self {
            Finetune::Um => (Phase::Um, Objective::Flooded { gamma }, None),
            Finetune::Umap => (Phase::Umap, Objective::Flooded { gamma }, Some(prune_ratio)),
            Finetune::Control => (Phase::Control, Objective::CrossEntropy, None),
        };
        PhaseSpec { phase, epochs, lr, objective, umap_ratio, from_epoch: Some(from_epoch) }
    }
}

impl PhaseSpec {
    /// The base training an experiment's recipe asks for (fresh, or resumed to its epoch count).
    pub fn base(train: &TrainConfig) -> PhaseSpec {
        PhaseSpec { phase: Phase::Base, epochs: train.epochs, lr: train.lr, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None }
    }
}
