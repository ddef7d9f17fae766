//! Training: the plain loop of burn's custom-training-loop example, plus per-epoch evaluation of
//! everything the method needs (per-sample loss, ID accuracy, OOD scores and metrics).

pub mod finetune;
pub mod session;

pub use crate::eval::PreparedSet;
pub use finetune::Finetune;
pub use session::{Objective, PhaseSpec, Session};

/// Which shuffle stream an epoch draws its sample order from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    /// Base training: keyed on the run epoch (which equals the base epoch), so a base run resumed
    /// at epoch k draws exactly the orders an uninterrupted run would.
    Base { epoch: usize },
    /// A fine-tune (UM, UMAP, control): keyed on the epoch within the phase, so every arm started
    /// from one snapshot sees the same batches, and an arm difference is a paired difference.
    Finetune { phase_epoch: usize },
}

impl OrderKey {
    /// The key of an epoch of a phase.
    pub fn of(phase: crate::run::Phase, run_epoch: usize, phase_epoch: usize) -> OrderKey {
        match phase {
            crate::run::Phase::Base => OrderKey::Base { epoch: run_epoch },
            _ => OrderKey::Finetune { phase_epoch },
        }
    }

    /// The ChaCha seed of the stream. Base keeps the original keying (seed * 1000003 + epoch);
    /// fine-tune streams sit 2^32 further on, so they never reuse a base epoch's order.
    fn stream_seed(self, seed: u64) -> u64 {
        let offset = match self {
            OrderKey::Base { epoch } => epoch as u64,
            OrderKey::Finetune { phase_epoch } => (1u64 << 32) + phase_epoch as u64,
        };
        seed.wrapping_mul(1_000_003).wrapping_add(offset)
    }
}

/// The order in which an epoch visits the `n` training samples: one seeded stream per (seed,
/// key). `unleash batch-order` prints it, to feed another framework the very same batches.
pub fn epoch_order(seed: u64, key: OrderKey, n: usize) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(key.stream_seed(seed));
    order.shuffle(&mut rng);
    order
}

/// Cosine learning rate per step, from `base` at step 0 towards 0 at `total` steps
/// (PyTorch's CosineAnnealingLR with T_max = total steps, eta_min = 0, stepped per batch).
pub fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    if total == 0 {
        return base;
    }
    0.5 * base * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let base = |e| OrderKey::Base { epoch: e };
        let a = epoch_order(0, base(81), 1000);
        assert_eq!(a, epoch_order(0, base(81), 1000));
        assert_ne!(a, epoch_order(0, base(82), 1000));
        assert_ne!(a, epoch_order(1, base(81), 1000));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Fine-tune streams are their own: phase epoch 1 is no base epoch's order.
        let ft = epoch_order(0, OrderKey::Finetune { phase_epoch: 1 }, 1000);
        assert_ne!(ft, epoch_order(0, base(1), 1000));
        assert_ne!(ft, epoch_order(0, OrderKey::Finetune { phase_epoch: 2 }, 1000));
    }

    #[test]
    fn arms_from_one_snapshot_share_their_orders() {
        use crate::run::Phase;
        // Control at run epochs 41.., UM at 51.., UMAP at 61..: the same phase epoch, one order.
        for k in 1..=3 {
            let control = OrderKey::of(Phase::Control, 40 + k, k);
            assert_eq!(control, OrderKey::of(Phase::Um, 50 + k, k));
            assert_eq!(control, OrderKey::of(Phase::Umap, 60 + k, k));
        }
        // Base epochs stay keyed on the run epoch (a resumed base phase restarts phase_epoch).
        assert_eq!(OrderKey::of(Phase::Base, 7, 2), OrderKey::Base { epoch: 7 });
    }

    #[test]
    fn cosine_schedule_endpoints() {
        assert_eq!(cosine_lr(0.05, 0, 100), 0.05);
        assert!((cosine_lr(0.05, 50, 100) - 0.025).abs() < 1e-12);
        assert!(cosine_lr(0.05, 99, 100) < 0.0001);
    }
}
