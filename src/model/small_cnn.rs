//! SmallCNN: conv3x3(C->32, pad 1)+ReLU+maxpool2 -> conv3x3(32->64, pad 1)+ReLU+maxpool2 ->
//! linear(64*(H/4)*(W/4) -> 128)+ReLU -> linear(128 -> classes). 3136 inputs to fc1 for 28x28.

use super::Output;
use crate::data::ImageShape;
use crate::error::{Error, Result};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct SmallCnn {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub fc1: Linear,
    pub fc2: Linear,
    pool: MaxPool2d,
    relu: Relu,
}

impl SmallCnn {
    pub fn new(shape: ImageShape, classes: usize, device: &Device) -> Result<SmallCnn> {
        if shape.height < 4 || shape.width < 4 {
            return Err(Error::config("model", format!("SmallCNN needs images of at least 4x4 (got {shape})")));
        }
        let conv = |i, o| Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        let flat = 64 * (shape.height / 4) * (shape.width / 4);
        Ok(SmallCnn {
            conv1: conv(shape.channels, 32),
            conv2: conv(32, 64),
            fc1: LinearConfig::new(flat, 128).init(device),
            fc2: LinearConfig::new(128, classes).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            relu: Relu::new(),
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Output {
        let x = self.conv_relu_pool(&self.conv1, x);
        let x = self.conv_relu_pool(&self.conv2, x);
        let x = x.flatten::<2>(1, 3);
        let features = self.relu.forward(self.fc1.forward(x));
        let logits = self.fc2.forward(features.clone());
        Output { logits, features }
    }

    /// `max_pool2d(relu(conv(x)))`. On the flex CPU backend in f32 this is one fused op
    /// ([`super::fused`]); `weight.val()` is the reparameterised weight (masks, UMAP scores), so
    /// those go through it too and their gradients flow as through burn's conv. Elsewhere (wgpu)
    /// burn's ops, pooling before the ReLU: the same values and gradients with 4x less ReLU work.
    fn conv_relu_pool(&self, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        let fusable = conv.kernel_size == [3, 3] && conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1 && conv.padding == PaddingConfig2d::Explicit(1, 1, 1, 1);
        match &conv.bias {
            Some(bias) if fusable && super::fused::supported(&x) => super::fused::conv3x3_relu_pool2(x, conv.weight.val(), bias.val()),
            _ => self.relu.forward(self.pool.forward(conv.forward(x))),
        }
    }
}
