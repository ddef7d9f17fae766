//! Layer-wise weight masking: in every conv/linear weight tensor, zero the fraction r with the
//! smallest |w| (magnitude) or a seeded random fraction. Biases and BatchNorm are untouched.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    #[default]
    Magnitude,
    Random,
}

impl MaskKind {
    pub fn key(self) -> &'static str {
        match self {
            MaskKind::Magnitude => "magnitude",
            MaskKind::Random => "random",
        }
    }

    pub fn parse(s: &str) -> crate::error::Result<MaskKind> {
        match s.to_ascii_lowercase().as_str() {
            "magnitude" => Ok(MaskKind::Magnitude),
            "random" => Ok(MaskKind::Random),
            _ => Err(crate::error::Error::config("mask", format!("unknown mask '{s}' (choose magnitude or random)"))),
        }
    }
}

/// True for the weight tensors of conv and linear layers: parameters named `weight` of rank 2 or
/// 4 (BatchNorm's are `gamma`/`beta`; biases are rank 1).
pub fn is_prunable(path: &str, rank: usize) -> bool {
    (rank == 2 || rank == 4) && path.rsplit('.').next() == Some("weight")
}

/// How many entries of `n` a ratio removes: r * n rounded half away from zero (2.5 -> 3), the
/// project's convention; the PyTorch cross-check scripts use the same (`floor(r * n + 0.5)`, not
/// Python's round-half-to-even, which gives 2).
pub fn masked_count(n: usize, ratio: f64) -> usize {
    ((n as f64) * ratio).round().min(n as f64) as usize
}

/// The 0/1 keep-mask of one tensor's values: exactly round(r*n) zeros, at the smallest |w|
/// (ties broken by position, so the mask is fully determined) or at seeded random positions.
pub fn keep_mask(values: &[f32], ratio: f64, kind: MaskKind, seed: u64) -> Vec<f32> {
    let n = values.len();
    let k = masked_count(n, ratio);
    let mut idx: Vec<usize> = (0..n).collect();
    match kind {
        MaskKind::Magnitude => idx.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b))),
        MaskKind::Random => idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed)),
    }
    let mut mask = vec![1.0f32; n];
    for &i in &idx[..k] {
        mask[i] = 0.0;
    }
    mask
}

/// Walks module paths ("conv1.weight") for mappers and visitors.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn path(&self) -> String {
        self.0.join(".")
    }
}

struct Masker {
    path: PathStack,
    ratio: f64,
    kind: MaskKind,
    seed: u64,
    layer: u64,
}

impl ModuleMapper for Masker {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !is_prunable(&self.path.path(), D) {
            return param;
        }
        self.layer += 1;
        let (ratio, kind, seed) = (self.ratio, self.kind, self.seed.wrapping_add(self.layer));
        param.map(|w| {
            let dims = w.dims();
            let device = w.device();
            let values = w.clone().try_into_vec_as::<f32>().expect("reading weights back from the device");
            let mask = Tensor::<D>::from_data(TensorData::new(keep_mask(&values, ratio, kind, seed), dims), &device);
            w * mask
        })
    }
}

/// A masked copy of an inference model; the original is untouched (burn modules are values).
pub fn masked_copy<M: Module>(model: &M, ratio: f64, kind: MaskKind, seed: u64) -> M {
    model.clone().map(&mut Masker { path: PathStack::default(), ratio, kind, seed, layer: 0 })
}

/// Names, shapes and values of every conv/linear weight, in module order.
pub fn prunable_weights<M: Module>(model: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect {
        path: PathStack,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.enter(name);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.path();
            if is_prunable(&path, D) {
                let w = param.val();
                let dims = w.dims().to_vec();
                let values = w.try_into_vec_as::<f32>().expect("reading weights back from the device");
                self.out.push((path, dims, values));
            }
        }
    }
    let mut c = Collect { path: PathStack::default(), out: Vec::new() };
    model.visit(&mut c);
    c.out
}

/// Touches every parameter in module order so that lazy initialisation happens now, in a fixed
/// order, right after the device was seeded.
pub fn force_init<M: Module>(model: M) -> M {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_mask_zeroes_exactly_the_smallest() {
        let v = [0.5f32, -0.1, 0.3, -0.7, 0.05, 0.2];
        let m = keep_mask(&v, 0.5, MaskKind::Magnitude, 0);
        assert_eq!(m, vec![1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn counts_round_and_ties_are_deterministic() {
        let v = vec![1.0f32; 10];
        let m = keep_mask(&v, 0.25, MaskKind::Magnitude, 0);
        assert_eq!(m.iter().filter(|&&x| x == 0.0).count(), 3); // round(2.5) = 3
        assert_eq!(&m[..3], &[0.0, 0.0, 0.0]);
        assert_eq!(keep_mask(&v, 0.0, MaskKind::Random, 1), vec![1.0; 10]);
    }

    #[test]
    fn mask_counts_round_half_away_from_zero() {
        // (n, r, count): exact halves round up, as the PyTorch scripts' floor(r * n + 0.5) does.
        for (n, r, k) in [(5, 0.5, 3), (10, 0.25, 3), (4, 0.125, 1), (7, 0.5, 4), (288, 0.7, 202), (401_408, 0.7, 280_986), (3, 0.99, 3), (8, 0.0, 0)] {
            assert_eq!(masked_count(n, r), k, "n {n}, r {r}");
            assert_eq!(masked_count(n, r), (n as f64 * r + 0.5).floor() as usize);
        }
    }

    #[test]
    fn random_mask_is_seeded() {
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let a = keep_mask(&v, 0.3, MaskKind::Random, 5);
        assert_eq!(a, keep_mask(&v, 0.3, MaskKind::Random, 5));
        assert_ne!(a, keep_mask(&v, 0.3, MaskKind::Random, 6));
        assert_eq!(a.iter().filter(|&&x| x == 0.0).count(), 30);
    }

    #[test]
    fn prunable_names() {
        assert!(is_prunable("conv1.weight", 4));
        assert!(is_prunable("fc1.weight", 2));
        assert!(!is_prunable("conv1.bias", 1));
        assert!(!is_prunable("bn1.gamma", 1));
    }
}
