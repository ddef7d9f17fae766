//! The GPU path (burn-wgpu) against the CPU path (burn's flex backend) on the same input and the
//! same weights: SmallCNN's forward pass, the loss, the gradients and one SGD step of the training
//! recipe, and ResNet-18's forward pass on a 2-image batch (BatchNorm in training and in
//! inference mode).
//!
//! It needs a Vulkan adapter. Without a GPU, Mesa's software Vulkan (lavapipe, Debian
//! `mesa-vulkan-drivers`) is one; `.ci/run` installs it. No adapter is a failure that says so,
//! never a silent pass. `cargo test --release wgpu` runs it alone.
//!
//! What it checks is the arithmetic of the GPU path (burn's conv/pool/linear/BatchNorm kernels
//! compiled by cubecl for Vulkan, their backward passes, the optimizer step on that device, and
//! moving a model between devices), not its speed. cubecl's autotune is turned down to `minimal`
//! (`CUBECL_AUTOTUNE_LEVEL`: coarser keys, fewer shapes tuned). It cannot be turned off at run
//! time (burn's `autotune` feature comes with this crate's `wgpu` feature), and it is nearly all of
//! the test's time on lavapipe, compiling every candidate kernel: measured on 2 cores, SmallCNN's
//! first wgpu step 32 s, the same step again in the same process 0.2 s; the whole file about 45 s
//! (the two tests run in parallel). On flex, SmallCNN
//! runs its fused conv+ReLU+pool op (src/model/fused); on wgpu, burn's separate ops: the test
//! compares exactly the two paths that `--device cpu` and `--device gpu` train with.
#![cfg(feature = "wgpu")]

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::momentum::MomentumConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::wgpu::WgpuBackend;
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use unleash::config::{ModelKind, TrainConfig};
use unleash::data::ImageShape;
use unleash::model::Net;
use unleash::train::session::objective_loss;
use unleash::train::Objective;

/// Tolerance: `max |wgpu - flex| <= RTOL * max |flex|` per tensor (and per parameter).
///
/// The two backends compute the same f32 sums in different orders (flex: gemm blocks and rayon
/// chunks, and the fused conv op; wgpu: cubecl's tiled matmul/convolution and tree reductions).
/// Reordering a sum of K f32 terms changes it by up to about K * 2^-24 * sum|terms| in the worst
/// case and about sqrt(K) * 2^-24 * sum|terms| typically. The longest sums here are the weight
/// gradients of conv1 (K = 16 images * 28 * 28 positions = 12,544: sqrt(K) * 2^-24 = 7e-6) and
/// fc1's forward (K = 3,136); a loss gradient's terms cancel (softmax minus one-hot), so sum|terms|
/// can be several times |result|, and four layers pass their error on. 1e-4 of the tensor's
/// largest magnitude leaves room for that; a real bug (a transposed weight, a wrong padding or
/// stride, pooling before the ReLU computed differently, a lost bias or gradient term, a wrong
/// momentum or weight decay) is off by 1e-2 of the scale or more.
const RTOL: f32 = 1e-4;
/// The learning rate of the step: the recipe's base lr (the cosine schedule's first step).
const LR: f64 = 0.05;
const BATCH: usize = 16;

/// The wgpu device on a Vulkan adapter (software ones included), made once for the whole binary.
fn wgpu_device() -> Device {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    let got = DEVICE.get_or_init(|| {
        // Before the first cubecl call, which reads its configuration once. Safety: nothing else
        // reads the environment concurrently here: this is the binary's only wgpu start, inside
        // a OnceLock, and the other test of this file waits on the same OnceLock.
        if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
            unsafe { std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal") };
        }
        let t = Instant::now();
        let started = std::panic::catch_unwind(|| Device::wgpu_options().graphics_api(WgpuBackend::Vulkan).init_with_setup());
        match started {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                eprintln!(
                    "wgpu adapter: {} ({:?}, {:?}, driver {} {}), started in {:.2}s",
                    info.name,
                    info.backend,
                    info.device_type,
                    info.driver,
                    info.driver_info,
                    t.elapsed().as_secs_f64()
                );
                Ok(device)
            }
            Ok(Err(e)) => Err(format!("{e}")),
            Err(_) => Err("the wgpu start panicked".to_string()),
        }
    });
    match got {
        Ok(device) => device.clone(),
        Err(e) => panic!(
            "no Vulkan adapter for wgpu: {e}. This test needs one; without a GPU install Mesa's \
             software Vulkan (Debian/Ubuntu: apt-get install mesa-vulkan-drivers) and check with \
             `vulkaninfo --summary` (vulkan-tools)"
        ),
    }
}

/// A seeded model on `device`, initialised while no other test of this binary seeds or draws from
/// the flex device's generator (the tests run in parallel and share it).
fn seeded(kind: ModelKind, shape: ImageShape, device: &Device) -> Net {
    static SEEDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(0);
    unleash::unleash::mask::force_init(Net::new(kind, shape, 10, device).unwrap())
}

/// The first `n` images of an IDX file (gzip), as f32 in [0, 1], and their labels.
fn sample_images(n: usize) -> (Vec<f32>, Vec<i64>) {
    let read = |name: &str| {
        let path = format!("{}/sample_data/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).read_to_end(&mut bytes).unwrap();
        bytes
    };
    let images = read("fashion-train-images-idx3-ubyte.gz");
    let labels = read("fashion-train-labels-idx1-ubyte.gz");
    assert_eq!(&images[..4], &[0, 0, 8, 3], "IDX images header");
    let x = images[16..16 + n * 784].iter().map(|&p| p as f32 / 255.0).collect();
    let y = labels[8..8 + n].iter().map(|&l| l as i64).collect();
    (x, y)
}

/// Every float parameter of a module, by path ("SmallCnn.conv1.weight") in module order, read
/// back to the host: its value, or with `grads` its gradient (the parameter's own leaf).
fn params(model: &Net, grads: Option<&burn::tensor::Gradients>) -> Vec<(String, Vec<f32>)> {
    struct Collect<'a> {
        grads: Option<&'a burn::tensor::Gradients>,
        path: Vec<String>,
        out: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let name = self.path.join(".");
            let t = match self.grads {
                Some(g) => param.val().grad(g).unwrap_or_else(|| panic!("{name}: no gradient")),
                None => param.val().detach(),
            };
            self.out.push((name, values(t)));
        }
    }
    let mut c = Collect { grads, path: Vec::new(), out: Vec::new() };
    model.visit(&mut c);
    c.out
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("reading a tensor back")
}

/// max |got - want| and max |want|; panics (with both) beyond `RTOL * max |want| + atol`, or on a
/// NaN or infinity in either.
fn compare(what: &str, got: &[f32], want: &[f32]) {
    compare_with_floor(what, got, want, 0.0);
}

fn compare_with_floor(what: &str, got: &[f32], want: &[f32], atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got.iter().chain(want).all(|v| v.is_finite()), "{what}: a NaN or infinity");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (mut diff, mut at) = (0f32, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        if (a - b).abs() > diff {
            (diff, at) = ((a - b).abs(), i);
        }
    }
    eprintln!("{what:<34} max|wgpu-flex| {diff:.3e}  max|flex| {scale:.3e}  ratio {:.2e}", diff / scale.max(f32::MIN_POSITIVE));
    assert!(
        diff <= RTOL * scale + atol,
        "{what}: wgpu differs from flex by {diff:e} at [{at}] (wgpu {} vs flex {}), over {RTOL:e} of the tensor's scale {scale:e} (+ {atol:e})",
        got[at],
        want[at]
    );
}

/// Everything one training step of SmallCNN computes on one device.
struct Step {
    logits: Vec<f32>,
    loss: Vec<f32>,
    grads: Vec<(String, Vec<f32>)>,
    updated: Vec<(String, Vec<f32>)>,
    logits_after: Vec<f32>,
}

/// One step of the training recipe on `model` (already on the autodiff device `ad`): forward,
/// mean cross-entropy, backward, SGD momentum 0.9 / dampening 0 / weight decay 5e-4 at `LR`
/// (as Session::run_phase_epochs builds it), then a forward of the updated model.
fn step(model: Net, ad: &Device, x: &[f32], y: &[i64]) -> Step {
    let recipe = TrainConfig::default();
    let n = y.len();
    let xt = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [n, 1, 28, 28]), ad);
    let yt = Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [n]), ad);
    let logits = model.logits(xt.clone());
    let loss = objective_loss(logits.clone(), yt, n, Objective::CrossEntropy);
    let grads = loss.backward();
    let grad_values = params(&model, Some(&grads));
    let grads = GradientsParams::from_grads(grads, &model);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(recipe.momentum).with_dampening(0.0).with_nesterov(false)))
        .with_weight_decay(Some(WeightDecayConfig::new(recipe.weight_decay as f32)))
        .init();
    let updated = optim.step(LR, model, grads);
    let logits_after = values(updated.logits(xt).detach());
    Step {
        logits: values(logits.detach()),
        loss: values(loss.detach()),
        grads: grad_values,
        updated: params(&updated, None),
        logits_after,
    }
}

#[test]
fn wgpu_matches_flex_small_cnn_forward_loss_gradients_and_sgd_step() {
    let t = Instant::now();
    let gpu = wgpu_device();
    let flex_ad = Device::flex().autodiff();
    let wgpu_ad = gpu.clone().autodiff();
    let (mut x, y) = sample_images(BATCH);
    // Normalised as training does (the batch's own mean and std stand in for the training set's).
    let mean = x.iter().sum::<f32>() / x.len() as f32;
    let std = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / x.len() as f32).sqrt();
    x.iter_mut().for_each(|v| *v = (*v - mean) / std);

    // The seeded model on flex, moved to wgpu the way the product moves models (valid() then
    // train_on the other autodiff device): the copy must be exact before anything is compared.
    let on_flex = seeded(ModelKind::SmallCnn, ImageShape { channels: 1, height: 28, width: 28 }, &flex_ad);
    let on_wgpu = on_flex.valid().train_on(&wgpu_ad);
    let (copied, original) = (params(&on_wgpu, None), params(&on_flex, None));
    assert_eq!(copied.len(), 8, "SmallCNN has 4 weights and 4 biases");
    for ((name, a), (_, b)) in copied.iter().zip(&original) {
        assert_eq!(a, b, "{name}: the copy to wgpu changed the weights");
    }

    let cpu = step(on_flex, &flex_ad, &x, &y);
    let gpu = step(on_wgpu, &wgpu_ad, &x, &y);
    compare("logits", &gpu.logits, &cpu.logits);
    compare("loss", &gpu.loss, &cpu.loss);
    for ((name, g), (_, c)) in gpu.grads.iter().zip(&cpu.grads) {
        compare(&format!("grad {name}"), g, c);
    }
    // The update itself (new - old weight = -lr (grad + weight decay * weight) on momentum's
    // first step), compared on its own scale: on the weights' scale a wrong weight decay (2% of
    // the update here) would hide under the tolerance. Each new weight is rounded to f32 on its
    // own device, so the two updates may also differ by up to one ulp of the largest weight.
    for (((name, g), (_, c)), (_, w)) in gpu.updated.iter().zip(&cpu.updated).zip(&original) {
        compare(&format!("after step {name}"), g, c);
        let delta = |v: &[f32]| v.iter().zip(w).map(|(a, b)| a - b).collect::<Vec<f32>>();
        let ulp = w.iter().fold(0f32, |m, v| m.max(v.abs())) * f32::EPSILON;
        compare_with_floor(&format!("update {name}"), &delta(g), &delta(c), ulp);
    }
    compare("logits after the step", &gpu.logits_after, &cpu.logits_after);
    // The step must have moved the weights by far more than the tolerance, or comparing the
    // updated weights would say nothing about the update.
    let moved = cpu.grads.iter().map(|(_, g)| g.iter().fold(0f32, |m, v| m.max(v.abs()))).fold(0f32, f32::max) * LR as f32;
    assert!(moved > 1e-3, "the step barely moved the weights ({moved:e})");
    eprintln!("SmallCNN parity in {:.1}s", t.elapsed().as_secs_f64());
}

#[test]
fn wgpu_matches_flex_resnet18_forward() {
    let t = Instant::now();
    let gpu = wgpu_device();
    let flex = Device::flex();
    let shape = ImageShape { channels: 3, height: 32, width: 32 };
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let x: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|_| {
            // xorshift64*: a fixed, dependency-free stream of inputs in [-1, 1).
            rng_state ^= rng_state >> 12;
            rng_state ^= rng_state << 25;
            rng_state ^= rng_state >> 27;
            (rng_state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let flex_ad = flex.clone().autodiff();
    let model = seeded(ModelKind::Resnet18, shape, &flex_ad);
    // Training mode (autodiff device): BatchNorm normalises with the batch's statistics, as every
    // training step does. Inference mode: with the running statistics, as evaluation does.
    let wgpu_ad = gpu.clone().autodiff();
    let on_wgpu = model.valid().train_on(&wgpu_ad);
    for (mode, flex_dev, wgpu_dev, flex_model, wgpu_model) in [
        ("train mode", flex_ad.clone(), wgpu_ad.clone(), model.clone(), on_wgpu.clone()),
        ("inference", flex.clone(), gpu.clone(), model.valid(), on_wgpu.valid()),
    ] {
        let run = |m: &Net, dev: &Device| {
            let out = m.forward(Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 32, 32]), dev));
            (values(out.logits.detach()), values(out.features.detach()))
        };
        let (cpu_logits, cpu_features) = run(&flex_model, &flex_dev);
        let (gpu_logits, gpu_features) = run(&wgpu_model, &wgpu_dev);
        compare(&format!("resnet18 {mode} logits"), &gpu_logits, &cpu_logits);
        compare(&format!("resnet18 {mode} features"), &gpu_features, &cpu_features);
    }
    eprintln!("ResNet-18 parity in {:.1}s", t.elapsed().as_secs_f64());
}
