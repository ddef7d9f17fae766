//! Training: the plain loop of burn's custom-training-loop example, plus per-epoch evaluation of
//! everything the method needs (per-sample loss, ID accuracy, OOD scores and metrics).

pub mod eval;
pub mod finetune;
pub mod session;

pub use eval::PreparedSet;
pub use finetune::Finetune;
pub use session::{Objective, PhaseSpec, Session};

/// The order in which an epoch visits the `n` training samples: one seeded stream per (seed,
/// run epoch), so the same seed reshuffles the same way, phase after phase. `unleash batch-order`
/// prints it, to feed another framework the very same batches.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
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
        let a = epoch_order(0, 81, 1000);
        assert_eq!(a, epoch_order(0, 81, 1000));
        assert_ne!(a, epoch_order(0, 82, 1000));
        assert_ne!(a, epoch_order(1, 81, 1000));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn cosine_schedule_endpoints() {
        assert_eq!(cosine_lr(0.05, 0, 100), 0.05);
        assert!((cosine_lr(0.05, 50, 100) - 0.025).abs() < 1e-12);
        assert!(cosine_lr(0.05, 99, 100) < 0.0001);
    }
}
