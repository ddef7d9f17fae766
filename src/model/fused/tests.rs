//! The fused op against burn's own `conv2d -> relu -> max_pool2d`, forward and every gradient.

use super::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::Device;
use rand::{Rng, SeedableRng};

fn reference(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    max_pool2d(relu(conv2d(x, w, Some(b), ConvOptions::new([1, 1], [1, 1], [1, 1], 1))), MaxPoolOptions::new([2, 2]))
}

/// Forward values and the gradients of `sum(out * r)` w.r.t. x, weight and bias.
struct Run {
    out: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn run(fused: bool, g: &Geometry, x: &[f32], w: &[f32], b: &[f32], r: &[f32]) -> Run {
    let ad = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [g.batch, g.c_in, g.height, g.width]), &ad).require_grad();
    let w = Tensor::<4>::from_data(TensorData::new(w.to_vec(), [g.c_out, g.c_in, 3, 3]), &ad).require_grad();
    let b = Tensor::<1>::from_data(TensorData::new(b.to_vec(), [g.c_out]), &ad).require_grad();
    assert!(supported(&x));
    let out = if fused { conv3x3_relu_pool2(x.clone(), w.clone(), b.clone()) } else { reference(x.clone(), w.clone(), b.clone()) };
    let rt = Tensor::<4>::from_data(TensorData::new(r.to_vec(), out.dims()), &ad);
    let grads = (out.clone() * rt).sum().backward();
    Run {
        out: values(out.detach()),
        dx: values(x.grad(&grads).unwrap()),
        dw: values(w.grad(&grads).unwrap()),
        db: values(b.grad(&grads).unwrap()),
    }
}

/// Equal within 1e-5 of the tensor's largest finite magnitude; NaN and infinities where the
/// reference has them.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().filter(|v| v.is_finite()).fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        let ok = if e.is_finite() { (a - e).abs() <= 1e-5 * scale } else { a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan()) };
        assert!(ok, "{what}[{i}]: fused {a} vs burn {e} (scale {scale})");
    }
}

fn random(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn compare(g: Geometry, x: &[f32], w: &[f32], b: &[f32], r: &[f32]) {
    let (f, e) = (run(true, &g, x, w, b, r), run(false, &g, x, w, b, r));
    assert_close(&format!("{g:?} out"), &f.out, &e.out);
    assert_close(&format!("{g:?} dx"), &f.dx, &e.dx);
    assert_close(&format!("{g:?} dw"), &f.dw, &e.dw);
    assert_close(&format!("{g:?} db"), &f.db, &e.db);
}

fn random_case(g: Geometry, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = random(&mut rng, g.batch * g.input_len());
    let w = random(&mut rng, g.weight_len());
    let b = random(&mut rng, g.c_out);
    let r = random(&mut rng, g.batch * g.output_len());
    compare(g, &x, &w, &b, &r);
}

#[test]
fn forward_and_gradients_equal_burn_on_fixed_shapes() {
    let geo = |batch, c_in, height, width, c_out| Geometry { batch, c_in, height, width, c_out };
    // Odd sizes (floor pooling drops the last row/column), 2x3 images (one pooled value), one
    // input channel (SmallCNN's conv1), and shapes that split into several gemm blocks and
    // gradient chunks (32 channels of 14x14 is SmallCNN's conv2).
    for (i, g) in [geo(3, 1, 7, 9, 5), geo(2, 4, 6, 6, 8), geo(1, 3, 5, 4, 2), geo(4, 2, 2, 3, 3), geo(11, 32, 14, 14, 8), geo(17, 1, 28, 28, 4)].into_iter().enumerate() {
        random_case(g, i as u64);
    }
}

#[test]
fn forward_and_gradients_equal_burn_on_random_shapes() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for case in 0..12 {
        let g = Geometry {
            batch: rng.random_range(1..6),
            c_in: rng.random_range(1..6),
            height: rng.random_range(2..12),
            width: rng.random_range(2..12),
            c_out: rng.random_range(1..7),
        };
        random_case(g, 100 + case);
    }
}

/// A weight that copies the input (centre tap 1, zero bias): the conv output is `x` exactly, so
/// integer inputs make exact ties inside the pooling windows.
fn identity_case(x: Vec<f32>, g: Geometry) -> (Run, Run) {
    let mut w = vec![0f32; 9];
    w[4] = 1.0;
    let r: Vec<f32> = (0..g.batch * g.output_len()).map(|i| 1.0 + i as f32).collect();
    (run(true, &g, &x, &w, &[0.0], &r), run(false, &g, &x, &w, &[0.0], &r))
}

#[test]
fn ties_in_a_window_send_the_gradient_to_the_first_maximum_as_burn_does() {
    let g = Geometry { batch: 1, c_in: 1, height: 4, width: 4, c_out: 1 };
    #[rustfmt::skip]
    let x = vec![
        2.0, 2.0,   1.0, 3.0,
        2.0, 1.0,   3.0, 3.0,
        0.0, 5.0,   -1.0, -1.0,
        5.0, 5.0,   -1.0, -1.0,
    ];
    let (f, e) = identity_case(x, g);
    assert_eq!(f.out, vec![2.0, 3.0, 5.0, 0.0]);
    // Window 0: the first 2 (top-left); window 1: the first 3 (top-right); window 2: the first 5
    // (top-right of the window); window 3: ReLU off, no gradient.
    #[rustfmt::skip]
    let first_max = vec![
        1.0, 0.0,   0.0, 2.0,
        0.0, 0.0,   0.0, 0.0,
        0.0, 3.0,   0.0, 0.0,
        0.0, 0.0,   0.0, 0.0,
    ];
    assert_eq!(f.dx, first_max);
    assert_eq!(e.dx, first_max, "burn's own pooling picks the first maximum too");
    assert_close("ties dw", &f.dw, &e.dw);
    assert_close("ties db", &f.db, &e.db);
}

#[test]
fn nan_inputs_propagate_as_in_burn() {
    let g = Geometry { batch: 2, c_in: 1, height: 4, width: 6, c_out: 1 };
    let mut x: Vec<f32> = (0..g.batch * g.input_len()).map(|i| (i % 7) as f32 - 2.0).collect();
    x[1] = f32::NAN;
    x[g.input_len() + 10] = f32::NAN;
    let (f, e) = identity_case(x.clone(), g);
    assert!(f.out[0].is_nan(), "a NaN wins its window and survives the ReLU");
    assert_close("nan out", &f.out, &e.out);
    assert_close("nan dx", &f.dx, &e.dx);
    assert_close("nan dw", &f.dw, &e.dw);
    assert_close("nan db", &f.db, &e.db);
    // A general weight spreads the NaN over its 3x3 neighbourhood in every channel.
    let g = Geometry { c_out: 3, ..g };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (w, b, r) = (random(&mut rng, g.weight_len()), random(&mut rng, 3), random(&mut rng, g.batch * g.output_len()));
    compare(g, &x, &w, &b, &r);
    // An infinite input, and a NaN weight (the input gradient meets it where the conv output's
    // gradient is zero).
    let mut x_inf = x.clone();
    x_inf[1] = f32::INFINITY;
    x_inf[g.input_len() + 10] = 3.0;
    compare(g, &x_inf, &w, &b, &r);
    let finite: Vec<f32> = x.iter().map(|v| if v.is_nan() { 0.5 } else { *v }).collect();
    let mut w_nan = w.clone();
    w_nan[13] = f32::NAN;
    compare(g, &finite, &w_nan, &b, &r);
}

#[test]
fn results_do_not_depend_on_threads_or_repetition() {
    let g = Geometry { batch: 23, c_in: 8, height: 10, width: 10, c_out: 6 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (x, w, b, r) = (random(&mut rng, g.batch * g.input_len()), random(&mut rng, g.weight_len()), random(&mut rng, 6), random(&mut rng, g.batch * g.output_len()));
    let all = |r: Run| [r.out, r.dx, r.dw, r.db];
    let first = all(run(true, &g, &x, &w, &b, &r));
    assert_eq!(first, all(run(true, &g, &x, &w, &b, &r)));
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(first, one_thread.install(|| all(run(true, &g, &x, &w, &b, &r))));
    let three_threads = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    assert_eq!(first, three_threads.install(|| all(run(true, &g, &x, &w, &b, &r))));
}

#[test]
fn inference_without_autodiff_equals_burn() {
    let g = Geometry { batch: 5, c_in: 3, height: 9, width: 8, c_out: 4 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (x, w, b) = (random(&mut rng, g.batch * g.input_len()), random(&mut rng, g.weight_len()), random(&mut rng, 4));
    let dev = Device::flex();
    let x = Tensor::<4>::from_data(TensorData::new(x, [5, 3, 9, 8]), &dev);
    let w = Tensor::<4>::from_data(TensorData::new(w, [4, 3, 3, 3]), &dev);
    let b = Tensor::<1>::from_data(TensorData::new(b, [4]), &dev);
    assert!(supported(&x));
    let fused = conv3x3_relu_pool2(x.clone(), w.clone(), b.clone());
    assert_eq!(fused.dims(), [5, 4, 4, 4]);
    assert_close("inference", &values(fused), &values(reference(x, w, b)));
}

#[test]
fn gradient_reaches_a_weight_computed_from_other_tensors() {
    // Masked and UMAP weights are computed (w * mask): the gradient must flow on to the leaves.
    let ad = Device::flex().autodiff();
    let g = Geometry { batch: 2, c_in: 2, height: 6, width: 6, c_out: 3 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (xv, wv, sv, bv) = (random(&mut rng, g.batch * g.input_len()), random(&mut rng, g.weight_len()), random(&mut rng, g.weight_len()), random(&mut rng, 3));
    let grads_of = |fused: bool| {
        let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), [2, 2, 6, 6]), &ad);
        let w = Tensor::<4>::from_data(TensorData::new(wv.clone(), [3, 2, 3, 3]), &ad);
        let s = Tensor::<4>::from_data(TensorData::new(sv.clone(), [3, 2, 3, 3]), &ad).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(bv.clone(), [3]), &ad);
        let weight = w * s.clone();
        let out = if fused { conv3x3_relu_pool2(x, weight, b) } else { reference(x, weight, b) };
        let grads = out.sum().backward();
        values(s.grad(&grads).expect("the scores get a gradient"))
    };
    assert_close("scores", &grads_of(true), &grads_of(false));
}
