//! Training: the plain loop of burn's custom-training-loop example, plus per-epoch evaluation of
//! everything the method needs (per-sample loss, ID accuracy, OOD scores and metrics).

pub mod eval;
pub mod session;

pub use eval::PreparedSet;
pub use session::{Objective, PhaseSpec, Session};

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
    fn cosine_schedule_endpoints() {
        assert_eq!(cosine_lr(0.05, 0, 100), 0.05);
        assert!((cosine_lr(0.05, 50, 100) - 0.025).abs() < 1e-12);
        assert!(cosine_lr(0.05, 99, 100) < 0.0001);
    }
}
