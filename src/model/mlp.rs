//! MLP: flatten -> linear(C*H*W -> 256)+ReLU -> linear(256 -> classes). 784-256-10 on MNIST shapes.

use super::Output;
use crate::data::ImageShape;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    relu: Relu,
}

impl Mlp {
    pub fn new(shape: ImageShape, classes: usize, device: &Device) -> Mlp {
        Mlp {
            fc1: LinearConfig::new(shape.len(), 256).init(device),
            fc2: LinearConfig::new(256, classes).init(device),
            relu: Relu::new(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Output {
        let features = self.relu.forward(self.fc1.forward(x.flatten::<2>(1, 3)));
        let logits = self.fc2.forward(features.clone());
        Output { logits, features }
    }
}
