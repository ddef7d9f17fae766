//! CIFAR-style ResNet-18 (3x3 stem, no max-pool; stages of 64/128/256/512 with two basic blocks
//! each; global average pool; linear). Meant for 32x32 RGB on a GPU; runs anywhere, slowly on CPU.

use super::Output;
use crate::data::ImageShape;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

fn conv3x3(i: usize, o: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([i, o], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

#[derive(Module, Debug)]
pub struct Shortcut {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub shortcut: Option<Shortcut>,
    relu: Relu,
}

impl BasicBlock {
    fn new(i: usize, o: usize, stride: usize, device: &Device) -> BasicBlock {
        let shortcut = (stride != 1 || i != o).then(|| Shortcut {
            conv: Conv2dConfig::new([i, o], [1, 1]).with_stride([stride, stride]).with_bias(false).init(device),
            bn: BatchNormConfig::new(o).init(device),
        });
        BasicBlock {
            conv1: conv3x3(i, o, stride, device),
            bn1: BatchNormConfig::new(o).init(device),
            conv2: conv3x3(o, o, 1, device),
            bn2: BatchNormConfig::new(o).init(device),
            shortcut,
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = self.relu.forward(self.bn1.forward(self.conv1.forward(x.clone())));
        let out = self.bn2.forward(self.conv2.forward(out));
        let skip = match &self.shortcut {
            Some(s) => s.bn.forward(s.conv.forward(x)),
            None => x,
        };
        self.relu.forward(out + skip)
    }
}

#[derive(Module, Debug)]
pub struct ResNet18 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub blocks: Vec<BasicBlock>,
    pub fc: Linear,
    pool: AdaptiveAvgPool2d,
    relu: Relu,
}

impl ResNet18 {
    pub fn new(shape: ImageShape, classes: usize, device: &Device) -> ResNet18 {
        let mut blocks = Vec::new();
        let mut inp = 64;
        for (width, stride) in [(64, 1), (128, 2), (256, 2), (512, 2)] {
            blocks.push(BasicBlock::new(inp, width, stride, device));
            blocks.push(BasicBlock::new(width, width, 1, device));
            inp = width;
        }
        ResNet18 {
            conv1: conv3x3(shape.channels, 64, 1, device),
            bn1: BatchNormConfig::new(64).init(device),
            blocks,
            fc: LinearConfig::new(512, classes).init(device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            relu: Relu::new(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Output {
        let mut x = self.relu.forward(self.bn1.forward(self.conv1.forward(x)));
        for b in &self.blocks {
            x = b.forward(x);
        }
        let features = self.pool.forward(x).flatten::<2>(1, 3);
        let logits = self.fc.forward(features.clone());
        Output { logits, features }
    }
}
