//! UMAP: edge-popup pruning. Every conv/linear weight gets a learnable score tensor (initialised
//! from |w|); the forward pass uses w * TopKMask(|s|), keeping exactly (1 - r) of each layer; the
//! mask's gradient passes straight through |s| to the scores (as the official GetSubnet on
//! `scores.abs()`); the weights are frozen. Implemented as
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
        // Value = hard mask; the gradient passes straight through |s| (d mask / d s = sign(s)), as
        // the official code's GetSubnet on scores.abs(). Passing it to s unchanged would push a
        // score that weight decay carried below 0 the wrong way: a "drop this weight" gradient
        // would make |s| larger.
        let abs = s.abs();
        let mask = abs.clone() - abs.detach() + hard;
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

/// Every parameter trainable again: UMAP froze them all, so a later phase (UM, control) that
/// continues from the pruned model must thaw them first or it has nothing to train.
pub fn unfreeze<M: Module>(model: M) -> M {
    struct Unfreeze;
    impl burn::module::ModuleMapper for Unfreeze {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.set_require_grad(true)
        }
    }
    model.map(&mut Unfreeze)
}

/// An inference model with UMAP scores attached (train it on an autodiff device).
pub fn attach_scores<M: Module>(model: M, ratio: f64) -> M {
    model.apply_reparameterization(EdgePopup { ratio })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gradient reaching each score of `mask` applied to weights [1, 1, 1] under the loss
    /// sum(w * mask * c): a positive c_i says "dropping weight i lowers the loss".
    fn score_grad(scores: [f32; 3], keep: usize, c: [f32; 3]) -> Vec<f32> {
        let dev = crate::device::cpu().device.autodiff();
        let s = Tensor::<1>::from_data(TensorData::new(scores.to_vec(), [3]), &dev).require_grad();
        let m = PopupMask { scores: Param::from_tensor(s), keep };
        let w = Tensor::<1>::ones([3], &dev);
        let c = Tensor::<1>::from_data(TensorData::new(c.to_vec(), [3]), &dev);
        let loss = (m.apply(w) * c).sum();
        let grads = loss.backward();
        m.scores.val().grad(&grads).expect("scores get a gradient").try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn a_negative_score_moves_the_way_that_lowers_the_loss() {
        // Score 0 is negative, score 1 positive; the loss says drop both (c > 0).
        let (s, c, lr) = ([-0.5f32, 0.5, 2.0], [1.0f32, 1.0, -1.0], 0.1f32);
        let g = score_grad(s, 2, c);
        // d loss / d s_i = c_i * sign(s_i): through |s|, not s.
        assert_eq!(g, vec![-1.0, 1.0, -1.0]);
        // One SGD step shrinks |s| for both scores the loss wants dropped, whatever their sign...
        for i in 0..2 {
            let after = s[i] - lr * g[i];
            assert!(after.abs() < s[i].abs(), "score {i}: {} -> {after} did not move towards dropping", s[i]);
        }
        // ...and grows |s| for the one it wants kept.
        assert!((s[2] - lr * g[2]).abs() > s[2].abs());
    }

    #[test]
    fn the_mask_keeps_the_top_k_of_abs_scores() {
        let dev = crate::device::cpu().device;
        let s = Tensor::<1>::from_data(TensorData::new(vec![-3.0f32, 0.1, 2.0, -0.2], [4]), &dev);
        let m = PopupMask { scores: Param::from_tensor(s), keep: 2 };
        let out = m.apply(Tensor::<1>::ones([4], &dev)).try_into_vec_as::<f32>().unwrap();
        assert_eq!(out, vec![1.0, 0.0, 1.0, 0.0]);
        // The keep-all and keep-none branches (ratio 0; a ratio that rounds to every entry).
        let all = PopupMask { scores: m.scores.clone(), keep: 4 }.apply(Tensor::<1>::ones([4], &dev));
        assert_eq!(all.try_into_vec_as::<f32>().unwrap(), vec![1.0; 4]);
        let none = PopupMask { scores: m.scores.clone(), keep: 0 }.apply(Tensor::<1>::ones([4], &dev));
        assert_eq!(none.try_into_vec_as::<f32>().unwrap(), vec![0.0; 4]);
    }
}
