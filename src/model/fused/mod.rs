//! A fused `conv3x3 (stride 1, pad 1) + bias -> ReLU -> maxpool 2x2` for burn's flex CPU
//! backend in f32, with its own backward, added through burn's backend extension mechanism
//! (`#[backend_extension]`): [`FusedConvBackend`] is implemented for `Flex` (inference) and for
//! `Autodiff<Flex>` (training, with a hand-written [`Backward`]).
//!
//! Why: burn-flex runs the three ops separately, ReLU and pooling over the full-size conv output,
//! and its conv backward (transposed conv with a scalar col2im, a serial weight gradient for one
//! input channel) dominated SmallCNN's training step. Here the conv output of a block of samples
//! is pooled while still in cache, and the backward rebuilds the conv output's gradient from one
//! byte per pooled value. The kernels are in [`kernel`].
//!
//! Use [`conv3x3_relu_pool2`] only where [`supported`] says so (flex device, f32); everything else
//! keeps burn's ops.

pub mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, DispatchDevice, Flex};
use burn::tensor::{DType, Tensor, TensorData};
use kernel::Geometry;
use std::sync::Arc;

#[backend_extension(Flex, Autodiff)]
pub trait FusedConvBackend: Backend {
    /// `max_pool2d(relu(conv2d(x, weight, bias, stride 1, padding 1)), 2x2)` for a 3x3 `weight`.
    fn conv3x3_bias_relu_pool2(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Whether the fused op can run on `x`: a flex device (with or without autodiff) and f32.
pub fn supported(x: &Tensor<4>) -> bool {
    let flex = match x.device().as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(inner.clone().inner(), DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    };
    flex && x.dtype() == DType::F32
}

/// `max_pool2d(relu(conv2d(x, weight, bias)), [2, 2])` with a 3x3 kernel, stride 1, padding 1:
/// `x` `[n, c_in, h, w]`, `weight` `[c_out, c_in, 3, 3]`, `bias` `[c_out]` -> `[n, c_out, h/2, w/2]`.
/// Gradients flow to all three on an autodiff device. Only where [`supported`] holds.
pub fn conv3x3_relu_pool2(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    let out = <Dispatch as FusedConvBackend>::conv3x3_bias_relu_pool2(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
    Tensor::from_dispatch(out)
}

/// The layer's geometry from its input and weight primitives; panics on shapes the op does not
/// take (the model builds them, so a mismatch is a programming error).
fn geometry(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> Geometry {
    let (xs, ws, bs) = (x.layout().shape(), weight.layout().shape(), bias.layout().shape());
    assert!(xs.len() == 4 && ws.len() == 4 && bs.len() == 1, "fused conv: x must be 4-D, weight 4-D, bias 1-D");
    assert!(ws[1] == xs[1] && ws[2] == 3 && ws[3] == 3 && bs[0] == ws[0], "fused conv: weight {ws:?} / bias {bs:?} do not fit input {xs:?}");
    for t in [x, weight, bias] {
        assert_eq!(t.dtype(), DType::F32, "fused conv: f32 only");
    }
    Geometry { batch: xs[0], c_in: xs[1], height: xs[2], width: xs[3], c_out: ws[0] }
}

/// Runs `f` on the tensor's f32 values (copied to a contiguous buffer only if it is a strided view).
fn with_f32<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
    let t = t.to_contiguous();
    f(t.as_slice::<f32>().expect("fused conv: a contiguous f32 tensor"))
}

fn flex_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The flex forward; `keep_codes` also returns where each pooled value came from.
fn flex_forward(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor, keep_codes: bool) -> (FlexTensor, Vec<u8>) {
    let g = geometry(x, weight, bias);
    let (out, codes) = with_f32(x, |xv| with_f32(weight, |wv| with_f32(bias, |bv| kernel::forward(xv, wv, bv, &g, keep_codes))));
    let (ph, pw) = g.pooled();
    (flex_tensor(out, vec![g.batch, g.c_out, ph, pw]), codes)
}

impl FusedConvBackend for Flex {
    fn conv3x3_bias_relu_pool2(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        flex_forward(&x, &weight, &bias, false).0
    }
}

/// What the backward needs from the forward: the input, the weight, and per pooled value where
/// its max came from (or that the ReLU was off).
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    weight: FlexTensor,
    codes: Arc<Vec<u8>>,
    geometry: Geometry,
}

#[derive(Debug)]
struct FusedConvBackward;

impl Backward<Flex, 3> for FusedConvBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Saved { x, weight, codes, geometry: g } = ops.state;
        let grad = with_f32(&x, |xv| with_f32(&weight, |wv| with_f32(&dy, |dyv| kernel::backward(xv, wv, dyv, &codes, &g, node_x.is_some()))));
        if let (Some(node), Some(dx)) = (node_x, grad.x) {
            grads.register::<Flex>(node.id, flex_tensor(dx, vec![g.batch, g.c_in, g.height, g.width]));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex_tensor(grad.weight, vec![g.c_out, g.c_in, 3, 3]));
        }
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, flex_tensor(grad.bias, vec![g.c_out]));
        }
    }
}

impl<C: CheckpointStrategy> FusedConvBackend for Autodiff<Flex, C> {
    fn conv3x3_bias_relu_pool2(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match FusedConvBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
                let geometry = geometry(&xp, &wp, bias.primitive());
                let (out, codes) = flex_forward(&xp, &wp, bias.primitive(), true);
                prep.finish(Saved { x: xp, weight: wp, codes: Arc::new(codes), geometry }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(x.primitive(), weight.primitive(), bias.primitive(), false).0),
        }
    }
}

#[cfg(test)]
mod tests;
