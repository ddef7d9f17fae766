//! UMAP: edge-popup pruning. Every conv/linear weight gets a learnable score tensor (initialised
//! from |w|); the forward pass uses w * TopKMask(|s|), keeping exactly (1 - r) of each layer; the
//! mask's gradient passes straight through to the scores; the weights are frozen. Implemented as
//! a burn reparameterization, so the same `Net` trains, evaluates and materialises the pruned model.

use super::mask::{is_prunable, masked_count};
use burn::module::{Param, Reparameterization, Reparameterizer};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

#[derive(Module, Debug)]
pub struct PopupMask {
    /// Flat scores, one per weight entry.
    pub scores: Param<Tensor<1>>,
    /// How many entries stay (n - round(r * n)).
    pub keep: usize,
}

impl Reparameterization for PopupMask {
    const NAME: &'static str = "popup";

    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        let dims = base.dims();
        let s = self.scores.val();
        let n = s.dims()[0];
        let device = s.device();
        let hard = if self.keep >= n {
            Tensor::<1>::ones([n], &device)
        } else if self.keep == 0 {
            Tensor::<1>::zeros([n], &device)
        } else {
            let idx = s.clone().detach().abs().argtopk(self.keep, 0);
            Tensor::<1>::zeros([n], &device).scatter(0, idx, Tensor::<1>::ones([self.keep], &device), IndexingUpdateOp::Assign)
        };
        // Value = hard mask; gradient w.r.t. s = identity (straight-through estimator).
        let mask = s.clone() - s.detach() + hard;
        base * mask.reshape(dims)
    }
}

/// Attaches scores to every conv/linear weight and freezes all weights.
pub struct EdgePopup {
    pub ratio: f64,
}

impl Reparameterizer for EdgePopup {
    type Reparam = PopupMask;

    fn reparameterize<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> (Param<Tensor<D>>, Option<PopupMask>) {
        let base = param.set_require_grad(false);
        if !is_prunable(path, D) {
            return (base, None);
        }
        let w = base.val();
        let n: usize = w.dims().iter().product();
        let scores = w.abs().reshape([n]).detach();
        (base, Some(PopupMask { scores: Param::from_tensor(scores), keep: n - masked_count(n, self.ratio) }))
    }
}

/// An inference model with UMAP scores attached (train it on an autodiff device).
pub fn attach_scores<M: Module>(model: M, ratio: f64) -> M {
    model.apply_reparameterization(EdgePopup { ratio })
}
