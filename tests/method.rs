//! The Unleashing Mask steps: the flooded loss flips the gradient below gamma; magnitude masks
//! remove exactly round(r*n) of the smallest weights per layer; UMAP leaves weights bit-identical
//! and prunes exactly r; UM drives the training loss towards gamma; a diverging phase stops with
//! an error and keeps every earlier epoch; models that cannot load say why.

mod common;
use burn::module::Module;
use burn::prelude::*;
use common::*;
use unleash::config::ModelKind;
use unleash::data::ImageShape;
use unleash::events::Control;
use unleash::model::Net;
use unleash::run::{Phase, RunReader};
use unleash::train::session::objective_loss;
use unleash::train::{Objective, PhaseSpec};
use unleash::unleash::mask::{masked_copy, masked_count, prunable_weights, MaskKind};

fn tiny_shape() -> ImageShape {
    ImageShape { channels: 1, height: 4, width: 4 }
}

#[test]
fn flooded_gradient_flips_sign_below_gamma() {
    let dev = unleash::device::cpu().device.autodiff();
    dev.seed(1);
    let net = unleash::unleash::mask::force_init(Net::new(ModelKind::Mlp, tiny_shape(), 3, &dev).unwrap());
    let x = Tensor::<4>::from_data(TensorData::new((0..32).map(|i| (i as f32 / 7.0).sin()).collect::<Vec<_>>(), [2, 1, 4, 4]), &dev);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &dev);
    let grad_of = |objective| {
        let loss = objective_loss(net.logits(x.clone()), y.clone(), 2, objective);
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        let Net::Mlp(m) = &net else { unreachable!() };
        (value, m.fc2.weight.val().grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap())
    };
    let (ce, g_ce) = grad_of(Objective::CrossEntropy);
    let (above, g_above) = grad_of(Objective::Flooded { gamma: f64::from(ce) * 0.5 });
    let (below, g_below) = grad_of(Objective::Flooded { gamma: f64::from(ce) * 2.0 });
    assert!((above - ce).abs() < 1e-5, "loss above gamma is CE");
    assert!((below - 3.0 * ce).abs() < 1e-4, "|ce - 2ce| + 2ce = 3ce");
    let mut nonzero = 0;
    for ((a, b), c) in g_above.iter().zip(&g_below).zip(&g_ce) {
        assert!((a - c).abs() < 1e-6, "above gamma the gradient is CE's");
        assert!((a + b).abs() < 1e-6, "below gamma it is the negative: {a} vs {b}");
        nonzero += usize::from(a.abs() > 1e-7);
    }
    assert!(nonzero > 0);
}

#[test]
fn magnitude_mask_zeroes_exactly_the_smallest_per_layer() {
    let dev = unleash::device::cpu().device;
    dev.seed(2);
    let net = Net::new(ModelKind::SmallCnn, ImageShape { channels: 1, height: 28, width: 28 }, 10, &dev).unwrap();
    let before = prunable_weights(&net);
    let masked = masked_copy(&net, 0.3, MaskKind::Magnitude, 0);
    let after = prunable_weights(&masked);
    assert_eq!(before.len(), 4, "conv1, conv2, fc1, fc2");
    for ((name, dims, w), (_, _, m)) in before.iter().zip(&after) {
        let n = w.len();
        let zeros: Vec<usize> = (0..n).filter(|&i| m[i] == 0.0).collect();
        assert_eq!(zeros.len(), masked_count(n, 0.3), "{name} {dims:?}");
        let max_removed = zeros.iter().map(|&i| w[i].abs()).fold(0f32, f32::max);
        let min_kept = (0..n).filter(|&i| m[i] != 0.0).map(|i| w[i].abs()).fold(f32::INFINITY, f32::min);
        assert!(max_removed <= min_kept, "{name}: removed {max_removed} > kept {min_kept}");
        for i in 0..n {
            assert!(m[i] == 0.0 || m[i] == w[i], "kept weights are untouched");
        }
    }
    // The original is untouched.
    assert_eq!(prunable_weights(&net), before);
    // Random masks remove the same count at other places.
    let random = prunable_weights(&masked_copy(&net, 0.3, MaskKind::Random, 7));
    for ((_, _, w), (_, _, r)) in before.iter().zip(&random) {
        assert_eq!(r.iter().filter(|&&v| v == 0.0).count(), masked_count(w.len(), 0.3));
    }
}

#[test]
fn umap_keeps_weights_bit_identical_and_prunes_exactly_r() {
    let mut s = session(small_experiment(1, 5));
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    s.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
    let before = prunable_weights(&s.inference_model());
    let umap = PhaseSpec { phase: Phase::Umap, epochs: 1, lr: 0.05, objective: Objective::Flooded { gamma: 0.3 }, umap_ratio: Some(0.2), from_epoch: None };
    s.run_phase(&umap, &Control::new(), &mut |_| {}).unwrap();
    let pruned = prunable_weights(&s.inference_model());
    let mut scores_moved = false;
    for ((name, _, w), (_, _, p)) in before.iter().zip(&pruned) {
        let zeros = p.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, masked_count(w.len(), 0.2), "{name}");
        for (a, b) in w.iter().zip(p) {
            assert!(*b == 0.0 || a.to_bits() == b.to_bits(), "{name}: weight changed {a} -> {b}");
        }
        // Learned masks are not just the magnitude mask: at least one layer's choice moved.
        let magnitude = unleash::unleash::mask::keep_mask(w, 0.2, MaskKind::Magnitude, 0);
        scores_moved |= magnitude.iter().zip(p).any(|(k, v)| (*k == 0.0) != (*v == 0.0));
    }
    assert!(scores_moved, "edge-popup scores never changed the mask");
    // Biases are frozen too.
    let Net::SmallCnn(m) = s.inference_model() else { panic!() };
    assert!(m.conv1.bias.is_some());
}

#[test]
fn um_drives_the_training_loss_towards_gamma() {
    let mut s = session(small_experiment(4, 0));
    let base = PhaseSpec { phase: Phase::Base, epochs: 4, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    s.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
    let base_loss = s.records.last().unwrap().train_eval_loss;
    let gamma = base_loss * 2.0 + 0.2;
    let um = PhaseSpec { phase: Phase::Um, epochs: 3, lr: 0.05, objective: Objective::Flooded { gamma }, umap_ratio: None, from_epoch: None };
    s.run_phase(&um, &Control::new(), &mut |_| {}).unwrap();
    let last = s.records.last().unwrap();
    assert_eq!(last.gamma, Some(gamma));
    assert!((last.train_loss - gamma).abs() < 0.35 * gamma, "train loss {} should end near gamma {gamma} (base {base_loss})", last.train_loss);
    assert!(last.train_loss > base_loss + 0.5 * (gamma - base_loss), "UM did not raise the loss: {} (base {base_loss}, gamma {gamma})", last.train_loss);
}

#[test]
fn a_diverging_phase_stops_with_an_error_and_keeps_earlier_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(small_experiment(1, 0));
    s.create_run(&dir.path().join("run")).unwrap();
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    s.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
    let wild = PhaseSpec { phase: Phase::Control, epochs: 2, lr: 1e6, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    let e = s.run_phase(&wild, &Control::new(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("diverged") && e.contains("last good snapshot"), "{e}");
    let run = RunReader::open(&dir.path().join("run")).unwrap();
    assert_eq!(run.records.len(), 1);
    let snap = run.snapshot(1).unwrap();
    let net = Net::load_bpk(ModelKind::SmallCnn, s.data.train.shape, 10, &snap, s.inference_device()).unwrap();
    assert_eq!(net.num_params(), s.inference_model().num_params());
}

#[test]
fn stop_requested_before_a_job_ends_it_at_the_first_checkpoint() {
    let mut s = session(small_experiment(1, 0));
    let control = Control::new();
    control.request_stop();
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    assert!(matches!(s.run_phase(&base, &control, &mut |_| {}), Err(unleash::Error::Stopped)));
    assert!(s.records.is_empty());
}

#[test]
fn corrupt_foreign_or_mismatched_models_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dev = unleash::device::cpu().device;
    let shape = ImageShape { channels: 1, height: 28, width: 28 };
    let net = Net::new(ModelKind::SmallCnn, shape, 10, &dev).unwrap();
    let good = dir.path().join("m.bpk");
    net.save_bpk(&good).unwrap();
    assert!(Net::load_bpk(ModelKind::SmallCnn, shape, 10, &good, &dev).is_ok());
    // Truncated.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.bpk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Net::load_bpk(ModelKind::SmallCnn, shape, 10, &cut, &dev).unwrap_err().to_string();
    assert!(e.contains("cut.bpk"), "{e}");
    // Foreign bytes.
    let junk = dir.path().join("junk.bpk");
    std::fs::write(&junk, b"this is not a model at all, just text").unwrap();
    assert!(Net::load_bpk(ModelKind::SmallCnn, shape, 10, &junk, &dev).unwrap_err().to_string().contains("junk.bpk"));
    // Another architecture.
    let e = Net::load_bpk(ModelKind::Mlp, shape, 10, &good, &dev).unwrap_err().to_string();
    assert!(e.contains("m.bpk") && e.contains("mlp"), "{e}");
    // Missing.
    assert!(Net::load_bpk(ModelKind::SmallCnn, shape, 10, &dir.path().join("none.bpk"), &dev).unwrap_err().to_string().contains("not found"));
    // Safetensors export writes PyTorch-style names.
    let st = dir.path().join("m.safetensors");
    net.save_safetensors(&st).unwrap();
    let raw = std::fs::read(&st).unwrap();
    let header_len = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&raw[8..8 + header_len]).unwrap();
    for name in ["conv1.weight", "conv1.bias", "conv2.weight", "fc1.weight", "fc2.bias"] {
        assert!(header.contains(&format!("\"{name}\"")), "{name} missing in {header}");
    }
    assert!(!header.contains("SmallCnn."), "PyTorch names carry no enum prefix: {header}");
    // PyTorch's nn.Linear layout: [out, in].
    let meta: serde_json::Value = serde_json::from_str(header).unwrap();
    assert_eq!(meta["fc1.weight"]["shape"], serde_json::json!([128, 3136]));
    // ...and loads back to the same function (through the [out, in] transpose and the names).
    let x = Tensor::<4>::random([3, 1, 28, 28], burn::tensor::Distribution::Default, &dev);
    let back = Net::load(ModelKind::SmallCnn, shape, 10, &st, &dev).unwrap();
    let (a, b) = (net.logits(x.clone()).into_data(), back.logits(x).into_data());
    a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));
    // Truncated, foreign and mismatched safetensors are errors naming the file.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &raw[..raw.len() / 2]).unwrap();
    let e = Net::load(ModelKind::SmallCnn, shape, 10, &cut, &dev).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors"), "{e}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x10\0\0\0\0\0\0\0{not json at all}").unwrap();
    assert!(Net::load(ModelKind::SmallCnn, shape, 10, &junk, &dev).unwrap_err().to_string().contains("junk.safetensors"));
    let e = Net::load(ModelKind::Mlp, shape, 10, &st, &dev).unwrap_err().to_string();
    assert!(e.contains("m.safetensors") && e.contains("mlp"), "{e}");
    let e = Net::load(ModelKind::SmallCnn, shape, 7, &st, &dev).unwrap_err().to_string();
    assert!(e.contains("m.safetensors") && e.contains("7 classes"), "{e}");
}

#[test]
fn export_to_a_missing_or_unwritable_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let dev = unleash::device::cpu().device;
    let net = Net::new(ModelKind::Mlp, tiny_shape(), 3, &dev).unwrap();
    let e = unleash::export::export_model(&net, &dir.path().join("missing/model")).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    // A regular file where the folder is expected: nobody can write there, root included (CI runs
    // as root, and root writes into a read-only folder). The error names the file it could not
    // write, and the file in the way keeps its bytes.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let e = unleash::export::export_model(&net, &blocker.join("model")).unwrap_err().to_string();
    assert!(e.contains(&blocker.join("model.bpk").display().to_string()) && e.contains("is a file, not a folder"), "{e}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"not a folder");
    // A read-only folder: the same, where permissions apply (not as root; the case above stands in).
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
    std::fs::set_permissions(&ro, perm).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_err() {
        let e = unleash::export::export_model(&net, &ro.join("model")).unwrap_err().to_string();
        assert!(e.contains("model.bpk"), "{e}");
        assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0, "nothing half-written");
    } else {
        let _ = std::fs::remove_file(ro.join("probe"));
    }
    // A name clash with a folder: refused, the folder untouched.
    std::fs::create_dir(dir.path().join("clash.bpk")).unwrap();
    assert!(unleash::export::export_model(&net, &dir.path().join("clash")).is_err());
    assert!(dir.path().join("clash.bpk").is_dir());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("tmp")).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn resnet18_and_mlp_give_logits_and_features() {
    let dev = unleash::device::cpu().device;
    let shape = ImageShape { channels: 3, height: 32, width: 32 };
    for kind in [ModelKind::Resnet18, ModelKind::Mlp, ModelKind::SmallCnn] {
        let net = Net::new(kind, shape, 10, &dev).unwrap();
        let x = Tensor::<4>::zeros([2, 3, 32, 32], &dev);
        let out = net.valid().forward(x);
        assert_eq!(out.logits.dims(), [2, 10], "{kind:?}");
        assert_eq!(out.features.dims()[0], 2);
    }
    assert!(Net::new(ModelKind::SmallCnn, shape, 1, &dev).unwrap_err().to_string().contains("at least 2 classes"));
}

#[test]
fn device_choices_answer_without_hanging_or_panicking() {
    use unleash::config::DeviceChoice;
    let t = std::time::Instant::now();
    let auto = unleash::device::resolve(DeviceChoice::Auto).unwrap();
    assert!(!auto.description.is_empty());
    match unleash::device::resolve(DeviceChoice::Gpu) {
        Ok(d) => assert!(d.is_gpu && d.description.starts_with("GPU")),
        Err(e) => assert!(e.to_string().starts_with("device: "), "{e}"),
    }
    assert!(!unleash::device::resolve(DeviceChoice::Cpu).unwrap().is_gpu);
    assert!(t.elapsed().as_secs() < 90);
}

#[test]
fn arms_from_one_snapshot_train_on_the_same_batches() {
    // UM with gamma 0 is |CE - 0| + 0 = CE, with CE's gradient: from one snapshot and on the same
    // batches it must retrace the control exactly. Keyed on the run epoch (2 for the control, 3
    // for UM) the two would shuffle differently and part at the first step.
    let mut s = session(small_experiment(1, 3));
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    let dir = tempfile::tempdir().unwrap();
    s.create_run(&dir.path().join("run")).unwrap();
    s.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
    let arm = |phase, objective| PhaseSpec { phase, epochs: 2, lr: 0.05, objective, umap_ratio: None, from_epoch: Some(1) };
    s.run_phase(&arm(Phase::Control, Objective::CrossEntropy), &Control::new(), &mut |_| {}).unwrap();
    s.run_phase(&arm(Phase::Um, Objective::Flooded { gamma: 0.0 }), &Control::new(), &mut |_| {}).unwrap();
    let r = &s.records;
    assert_eq!(r.iter().map(|r| r.phase).collect::<Vec<_>>(), vec![Phase::Base, Phase::Control, Phase::Control, Phase::Um, Phase::Um]);
    for k in 0..2 {
        let (control, um) = (&r[1 + k], &r[3 + k]);
        assert_eq!(control.train_loss.to_bits(), um.train_loss.to_bits(), "phase epoch {}: {} vs {}", k + 1, control.train_loss, um.train_loss);
        assert_eq!(s.loss_rows[1 + k], s.loss_rows[3 + k], "per-sample losses after phase epoch {}", k + 1);
    }
    // ...and the fine-tune moved the model (the comparison is not vacuous).
    assert_ne!(s.loss_rows[0], s.loss_rows[1]);
}

#[test]
fn a_run_refuses_a_validation_set_of_a_test_family_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = small_experiment(1, 0);
    // small_data's test OOD sets include "gaussian:300"; Gaussian noise of another seed is its family.
    exp.data.val_ood = "gaussian:300:77".into();
    let mut s = session(exp.clone());
    let e = s.create_run(&dir.path().join("refused")).unwrap_err().to_string();
    assert!(e.contains("'gaussian:300:77'") && e.contains("'gaussian:300'"), "{e}");
    assert!(!dir.path().join("refused/config.json").exists(), "nothing written");
    // With the override the run starts, and config.json says so, naming the clash.
    exp.data.allow_val_test_overlap = true;
    let mut s = session(exp);
    let run = dir.path().join("allowed");
    s.create_run(&run).unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["val_test_overlap"]["allowed"], true);
    assert!(cfg["val_test_overlap"]["clashes"][0].as_str().unwrap().contains("gaussian noise"), "{cfg}");
    assert_eq!(cfg["experiment"]["data"]["allow_val_test_overlap"], true);
}

#[test]
fn validation_uses_the_held_out_split_and_never_the_test_set() {
    let s = session(small_experiment(1, 0));
    let d = s.data.clone();
    // 600 -> 540 trained on + 60 held out, class-stratified (10% of each class, +-1).
    assert_eq!((d.train.len(), d.id_val.len(), d.id_val_split.count), (540, 60, 60));
    for c in 0..10u32 {
        let all = d.train.labels.iter().chain(&d.id_val.labels).filter(|&&l| l == c).count() as f64;
        let held = d.id_val.labels.iter().filter(|&&l| l == c).count() as f64;
        assert!((held - 0.1 * all).abs() <= 1.0, "class {c}: {held} of {all}");
    }
    assert_eq!(d.validation_id_name(), "id_val");
    // An epoch's validation metrics are the split's scores against the validation OOD set's.
    let dir = tempfile::tempdir().unwrap();
    let mut s = s;
    s.create_run(&dir.path().join("run")).unwrap();
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    s.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
    let run = RunReader::open(&dir.path().join("run")).unwrap();
    let (id_val, val, test) = (run.scores(1, "id_val").unwrap(), run.scores(1, "val_uniform-val").unwrap(), run.scores(1, "id_test").unwrap());
    assert_eq!(id_val[&unleash::ood::Score::Energy].len(), 60);
    // Every score but the opt-in ODIN.
    for score in unleash::ood::Score::ALL.into_iter().filter(|&s| s != unleash::ood::Score::Odin) {
        let m = unleash::ood::metrics::compute(&id_val[&score], &val[&score]).unwrap();
        assert_eq!(run.records[0].val[&score], m, "{score:?}");
        assert_ne!(unleash::ood::metrics::compute(&test[&score], &val[&score]).unwrap(), m, "the test set would give other numbers");
    }
    assert_eq!(run.records[0].val_id_name, "id_val");
    // The validation OOD set is built from the held-out images' pixels, not from training images.
    let mut exp = small_experiment(1, 0);
    exp.data.val_ood = "patch-shuffle:60:1".into();
    let s2 = session(exp);
    for i in 0..60 {
        let mut a = s2.data.val_ood.image(i).to_vec();
        let mut b = s2.data.id_val.image(i).to_vec();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "validation OOD image {i} is a rearranged held-out image");
    }
    // Fraction 0: a warning, and the training set (never the test set) is the ID side.
    let mut exp = small_experiment(1, 0);
    exp.data.id_val_fraction = 0.0;
    let s3 = session(exp);
    assert_eq!((s3.data.train.len(), s3.data.id_val.len()), (600, 0));
    assert!(s3.data.warnings.iter().any(|w| w.contains("no ID validation split")), "{:?}", s3.data.warnings);
    assert_eq!(s3.data.validation_id_name(), unleash::data::VALIDATION_ID_FALLBACK);
}

#[test]
fn flooding_acts_on_the_batch_mean_not_per_sample() {
    // gamma between the two samples' CEs: a per-sample flood mean(|ce_i - g| + g) differs from
    // the batch-mean flood |mean - g| + g in value and in gradient.
    let dev = unleash::device::cpu().device.autodiff();
    dev.seed(5);
    let net = unleash::unleash::mask::force_init(Net::new(ModelKind::Mlp, tiny_shape(), 3, &dev).unwrap());
    let x = Tensor::<4>::from_data(TensorData::new((0..32).map(|i| ((i * 7 % 11) as f32 / 3.0).cos() * 3.0).collect::<Vec<_>>(), [2, 1, 4, 4]), &dev);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &dev);
    let logits = net.logits(x.clone()).detach().try_into_vec_as::<f32>().unwrap();
    let ce: Vec<f64> = [0usize, 2].iter().enumerate().map(|(i, &label)| unleash::eval::cross_entropy(&logits[i * 3..i * 3 + 3], label)).collect();
    let (lo, hi) = (ce[0].min(ce[1]), ce[0].max(ce[1]));
    assert!(hi - lo > 0.05, "the two CEs must differ: {ce:?}");
    let mean = (ce[0] + ce[1]) / 2.0;
    let grad_of = |objective| {
        let loss = objective_loss(net.logits(x.clone()), y.clone(), 2, objective);
        let value = f64::from(loss.clone().into_scalar::<f32>());
        let grads = loss.backward();
        let Net::Mlp(m) = &net else { unreachable!() };
        (value, m.fc2.weight.val().grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap())
    };
    let (_, g_mean) = grad_of(Objective::CrossEntropy);
    for (gamma, sign) in [(lo + 0.25 * (hi - lo), 1.0f32), (lo + 0.75 * (hi - lo), -1.0)] {
        assert!(gamma > lo && gamma < hi);
        let (value, g) = grad_of(Objective::Flooded { gamma });
        let want = (mean - gamma).abs() + gamma;
        let per_sample = ce.iter().map(|c| (c - gamma).abs() + gamma).sum::<f64>() / 2.0;
        assert!((value - want).abs() < 1e-5, "gamma {gamma}: loss {value}, |mean - g| + g = {want}");
        assert!((value - per_sample).abs() > 1e-3, "indistinguishable from a per-sample flood");
        for (a, b) in g.iter().zip(&g_mean) {
            assert!((a - sign * b).abs() < 1e-6, "gamma {gamma}: gradient {a} vs sign(mean - g) * grad(mean) = {}", sign * b);
        }
    }
}

/// Every float parameter of a model (rank and values: weights, biases), in module order.
fn all_params(net: &Net) -> Vec<(usize, Vec<f32>)> {
    struct Collect(Vec<(usize, Vec<f32>)>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.push((D, param.val().try_into_vec_as::<f32>().unwrap()));
        }
    }
    let mut c = Collect(Vec::new());
    net.visit(&mut c);
    c.0
}

#[test]
fn umap_freezes_biases_materialises_what_it_scored_and_takes_ratios_0_and_099() {
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    for ratio in [0.0, 0.99] {
        let dir = tempfile::tempdir().unwrap();
        let mut t = session(small_experiment(1, 6));
        t.create_run(&dir.path().join("run")).unwrap();
        t.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
        let before = all_params(&t.inference_model());
        let weights = prunable_weights(&t.inference_model());
        let umap = PhaseSpec { phase: Phase::Umap, epochs: 1, lr: 0.05, objective: Objective::Flooded { gamma: 0.3 }, umap_ratio: Some(ratio), from_epoch: None };
        t.run_phase(&umap, &Control::new(), &mut |_| {}).unwrap();
        let pruned = t.inference_model();
        let after = all_params(&pruned);
        assert_eq!(before.iter().filter(|p| p.0 == 1).count(), 4, "conv1, conv2, fc1, fc2 biases");
        // Biases stay bit-identical; weights are kept bit-identical or zeroed.
        for (k, ((rank, a), (_, b))) in before.iter().zip(&after).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!(x.to_bits() == y.to_bits() || (*y == 0.0 && *rank > 1), "ratio {ratio}, parameter {k} (rank {rank}): {x} -> {y}");
            }
        }
        for ((name, _, w), (_, _, p)) in weights.iter().zip(prunable_weights(&pruned)) {
            let zeros = p.iter().zip(w).filter(|(v, orig)| **v == 0.0 && **orig != 0.0).count();
            assert_eq!(zeros, masked_count(w.len(), ratio), "ratio {ratio}: {name}");
        }
        // The materialised model computes what the scored model computed.
        let x = t.sets.test.batch(0..50, t.inference_device());
        let scored = t.model.valid().logits(x.clone()).into_data();
        let baked = pruned.logits(x).into_data();
        scored.assert_approx_eq::<f32>(&baked, burn::tensor::Tolerance::absolute(1e-5));
        // The snapshot on disk is the pruned model.
        let snap = RunReader::open(&dir.path().join("run")).unwrap().snapshot(2).unwrap();
        let loaded = Net::load_bpk(ModelKind::SmallCnn, t.data.train.shape, 10, &snap, t.inference_device()).unwrap();
        assert_eq!(all_params(&loaded), after, "ratio {ratio}");
    }
}

#[test]
fn a_run_folder_from_before_the_split_reopens_and_continues() {
    // Made as the earlier version made runs: every training sample trained on, Gaussian validation
    // next to a Gaussian test set, no id_val_split in config.json, no val_id_name in events.jsonl.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("old");
    let mut exp = small_experiment(1, 2);
    exp.data.id_val_fraction = 0.0;
    exp.data.val_ood = "gaussian:300:2".into();
    exp.data.allow_val_test_overlap = true;
    let mut s = session(exp);
    s.create_run(&run).unwrap();
    let base = PhaseSpec { phase: Phase::Base, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
    s.run_phase(&base, &Control::new(), &mut |_| {}).unwrap();
    // The writer's lock goes with its session (one writer per run).
    drop(s);
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    for k in ["id_val_split", "validation_id", "val_test_overlap", "msp_stored_as"] {
        cfg.as_object_mut().unwrap().remove(k);
    }
    for k in ["id_val_fraction", "id_val_seed", "allow_val_test_overlap"] {
        cfg["experiment"]["data"].as_object_mut().unwrap().remove(k);
    }
    std::fs::write(run.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(events.trim()).unwrap();
    line.as_object_mut().unwrap().remove("val_id_name");
    std::fs::write(run.join("events.jsonl"), format!("{line}\n")).unwrap();

    let reader = RunReader::open(&run).unwrap();
    assert_eq!(reader.records[0].val_id_name, "id_test", "old records were validated against the ID test set");
    // It resumes with all 600 samples (its loss rows have 600 entries) and continues.
    let mut old = unleash::train::Session::resume(&run, Some(unleash::config::DeviceChoice::Cpu), None).unwrap();
    assert_eq!(old.data.train.len(), 600);
    let control = PhaseSpec { phase: Phase::Control, epochs: 1, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: Some(1) };
    old.run_phase(&control, &Control::new(), &mut |_| {}).unwrap();
    let reader = RunReader::open(&run).unwrap();
    assert_eq!(reader.records.len(), 2);
    assert_eq!(reader.loss_matrix().unwrap().unwrap().0, 600);
}

#[test]
fn a_phase_after_umap_continues_from_the_pruned_weights() {
    let mut s = session(small_experiment(1, 8));
    let spec = |phase, lr, objective, umap_ratio| PhaseSpec { phase, epochs: 1, lr, objective, umap_ratio, from_epoch: None };
    s.run_phase(&spec(Phase::Base, 0.05, Objective::CrossEntropy, None), &Control::new(), &mut |_| {}).unwrap();
    s.run_phase(&spec(Phase::Umap, 0.05, Objective::Flooded { gamma: 0.3 }, Some(0.5)), &Control::new(), &mut |_| {}).unwrap();
    let pruned = prunable_weights(&s.inference_model());
    // A control step this small moves no weight of ordinary size: the pruned zeros stay (nearly)
    // zero only if the control started from the pruned model, not from the dense one under it.
    s.run_phase(&spec(Phase::Control, 1e-30, Objective::CrossEntropy, None), &Control::new(), &mut |_| {}).unwrap();
    let after = prunable_weights(&s.inference_model());
    for ((name, _, p), (_, _, a)) in pruned.iter().zip(&after) {
        let zeros = p.iter().filter(|v| **v == 0.0).count();
        assert!(zeros >= masked_count(p.len(), 0.5), "{name}");
        for (x, y) in p.iter().zip(a) {
            if *x == 0.0 {
                assert!(y.abs() < 1e-20, "{name}: a pruned weight came back as {y}");
            } else {
                assert!((x - y).abs() <= 1e-6 * x.abs(), "{name}: {x} -> {y}");
            }
        }
    }
}

/// A labelled set of `n` generated 8x8 images (a tiny input, so that ResNet-18 trains in moments).
fn tiny_set(name: &str, n: usize, classes: usize, salt: usize) -> unleash::data::Dataset {
    let shape = ImageShape { channels: 1, height: 8, width: 8 };
    let pixels = (0..n * 64).map(|i| ((i * 37 + salt * 101 + (i / 64 % classes) * 60) % 256) as u8).collect();
    let labels = (0..n).map(|i| (i % classes) as u32).collect();
    unleash::data::Dataset { name: name.into(), origin: "generated: tests/method.rs".into(), shape, pixels, labels, num_classes: classes, labelled: true, ..Default::default() }
}

fn tiny_bundle() -> unleash::data::DataBundle {
    let train = tiny_set("train", 32, 3, 0);
    let norm = unleash::data::Normalization::from_dataset(&train);
    unleash::data::DataBundle {
        test: tiny_set("test", 16, 3, 1),
        val_ood: tiny_set("val", 16, 3, 2),
        ood: vec![tiny_set("ood", 16, 3, 3)],
        id_val: tiny_set("id_val", 0, 3, 4),
        id_val_split: unleash::data::validation::IdValSplit { fraction: 0.0, seed: 0, count: 0, indices: Vec::new() },
        warnings: Vec::new(),
        train,
        norm,
    }
}

/// gamma, beta, running mean and running variance of every BatchNorm of a ResNet-18, by name.
fn batch_norms(net: &Net) -> Vec<(String, [Vec<f32>; 4])> {
    let Net::Resnet18(r) = net else { panic!("not a ResNet-18") };
    let read = |bn: &burn::nn::BatchNorm| [bn.gamma.val(), bn.beta.val(), bn.running_mean.value_sync(), bn.running_var.value_sync()].map(|t| t.try_into_vec_as::<f32>().unwrap());
    let mut v = vec![("bn1".to_string(), read(&r.bn1))];
    for (i, b) in r.blocks.iter().enumerate() {
        v.push((format!("blocks.{i}.bn1"), read(&b.bn1)));
        v.push((format!("blocks.{i}.bn2"), read(&b.bn2)));
        if let Some(s) = &b.shortcut {
            v.push((format!("blocks.{i}.shortcut.bn"), read(&s.bn)));
        }
    }
    v
}

#[test]
fn umap_leaves_resnet18_batch_norm_gamma_and_beta_untouched() {
    let mut exp = small_experiment(1, 4);
    exp.train.model = ModelKind::Resnet18;
    exp.train.batch_size = 16;
    let mut s = unleash::train::Session::new(exp, unleash::device::cpu(), std::sync::Arc::new(tiny_bundle())).unwrap();
    let spec = |phase, objective, umap_ratio| PhaseSpec { phase, epochs: 1, lr: 0.05, objective, umap_ratio, from_epoch: None };
    let fresh = batch_norms(&s.inference_model());
    s.run_phase(&spec(Phase::Base, Objective::CrossEntropy, None), &Control::new(), &mut |_| {}).unwrap();
    let before = batch_norms(&s.inference_model());
    assert_eq!(before.len(), 20, "the stem's, 2 per block and 3 shortcuts'");
    // A training step does move BatchNorm (so the comparison below can see a change).
    assert!(fresh.iter().zip(&before).any(|(a, b)| a.1[2] != b.1[2]), "base training left the running means as initialised");
    let weights = prunable_weights(&s.inference_model());
    s.run_phase(&spec(Phase::Umap, Objective::Flooded { gamma: 0.3 }, Some(0.2)), &Control::new(), &mut |_| {}).unwrap();
    let pruned = s.inference_model();
    // UMAP did prune: round(0.2 n) weights of each layer zeroed (of which some may have been
    // zero already: 2.4M random floats of a layer can hold an exact 0).
    for ((name, _, w), (_, _, p)) in weights.iter().zip(prunable_weights(&pruned)) {
        let zeroed = p.iter().zip(w).filter(|(v, orig)| **v == 0.0 && **orig != 0.0).count();
        let were_zero = w.iter().filter(|v| **v == 0.0).count();
        let k = masked_count(w.len(), 0.2);
        assert!(zeroed <= k && zeroed + were_zero >= k, "{name}: {zeroed} zeroed ({were_zero} zero before), expected {k}");
    }
    // ...and left BatchNorm's gamma and beta bit-identical (frozen like every weight). Its running
    // statistics do follow the pruned model's batches: UMAP trains in train mode, where BatchNorm
    // normalises by batch statistics and updates the running ones, as PyTorch's model.train()
    // does in edge-popup code. Asserted so that changing it (freezing them) is a decision.
    let after = batch_norms(&pruned);
    let bits = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        assert!(bits(&a[0], &b[0]), "{name}.gamma changed under UMAP");
        assert!(bits(&a[1], &b[1]), "{name}.beta changed under UMAP");
    }
    assert!(before.iter().zip(&after).any(|(a, b)| !bits(&a.1[2], &b.1[2])), "the running means did not follow UMAP's batches");
}
