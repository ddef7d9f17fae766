//! `unleash bench`: throughput figures, medians over repeated measurements in one run:
//! SmallCNN (or another model) train and eval samples/s, the per-sample-loss pass over the
//! training set, one mask ratio -> gamma + atypical set (what the slider shows first) and then
//! the masked test accuracy, and metrics on 1M + 1M scores.
//! `--pytorch` runs benches/pytorch_reference.py in the same run for the reference figures.

use crate::config::{DataConfig, DeviceChoice, ExperimentConfig, ModelKind, TrainConfig};
use crate::error::{Error, Result};
use crate::ood::metrics;
use crate::eval;
use crate::train::{Objective, Session};
use crate::unleash::MaskKind;
use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use clap::Args;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value = "small-cnn")]
    pub model: String,
    /// Timed training steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Repeats of the whole-pass measurements.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Also run benches/pytorch_reference.py (needs python3 with torch, numpy, scikit-learn).
    #[arg(long)]
    pub pytorch: bool,
    #[arg(long)]
    pub json: bool,
    /// Also time each SmallCNN layer's forward and forward+backward at batch 128 (where training
    /// time goes), next to PyTorch's with --pytorch.
    #[arg(long)]
    pub ops: bool,
    /// Measure on this experiment's data (a TOML file's [data]) instead of the sample data, e.g.
    /// CIFAR batches for ResNet-18 on a GPU.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let mut data = match &a.config {
        Some(p) => ExperimentConfig::from_toml_file(p)?.data,
        None => DataConfig::sample(),
    };
    // All training samples, as the PyTorch reference measures: no ID validation split.
    data.id_val_fraction = 0.0;
    let train = TrainConfig { model: ModelKind::parse(&a.model)?, device: DeviceChoice::parse(&a.device)?, ..TrainConfig::default() };
    let exp = ExperimentConfig { data, train, detectors: Default::default() };
    let s = Session::open(exp.clone(), None)?;
    let ad = s.autodiff_device();
    let desc = s.device.description.clone();
    eprintln!("device: {desc}");

    // Training steps at batch 128 (the recipe's), timed one by one.
    let batch = exp.train.batch_size;
    let mut model = s.model.clone();
    let mut optim = SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0))).init();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut step_rates = Vec::new();
    for step in 0..a.steps + 3 {
        let idx: Vec<usize> = (0..batch).map(|_| rng.random_range(0..s.sets.train.len())).collect();
        let t = Instant::now();
        let (x, y, _) = s.sets.train.gather(&idx, &ad);
        let logits = model.logits(x);
        let _host = eval::to_vec(logits.clone().detach())?;
        let loss = crate::train::session::objective_loss(logits, y, batch, Objective::CrossEntropy);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
        let _ = eval::to_vec(model.logits(s.sets.train.batch(0..1, &ad)).detach())?; // sync the update
        if step >= 3 {
            step_rates.push(batch as f64 / t.elapsed().as_secs_f64());
        }
    }
    let train_rate = median(step_rates);

    // Eval: forward-only at the eval batch size, and the full per-sample-loss pass.
    let inf = model.valid();
    let dev = s.inference_device().clone();
    let eb = exp.train.eval_batch_size;
    let mut eval_rates = Vec::new();
    let mut pass_secs = Vec::new();
    let mut nothing = |_| -> Result<()> { Ok(()) };
    for _ in 0..a.repeats {
        let t = Instant::now();
        let _ = eval::logits(&inf, &s.sets.test, eb, &dev, &mut nothing)?;
        eval_rates.push(s.sets.test.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let l = eval::logits(&inf, &s.sets.train, eb, &dev, &mut nothing)?;
        let _ = eval::LabelledPass::from_logits(&l, s.classes, &s.sets.train.labels)?;
        pass_secs.push(t.elapsed().as_secs_f64());
    }

    // The mask explorer, as the app asks it: one new ratio on a snapshot whose unmasked reference
    // is already computed. The preview (subsets) is what shows first; the complete answer is
    // gamma + atypical set + masked ID accuracy + OOD detection on every set; "to gamma" is the
    // first part of it (one pass over the training set).
    let mut probe = super::commands::mask_probe(&s, inf.clone(), 0);
    let mut p = |_, _| -> Result<()> { Ok(()) };
    probe.full_detection(&s.sets, &mut p)?;
    let warm = probe.masked(0.3, MaskKind::Magnitude, 0)?;
    probe.preview(&warm, 0.3, MaskKind::Magnitude)?;
    let (mut preview_secs, mut mask_secs, mut full_secs) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..a.repeats {
        let ratio = 0.5 + 0.01 * k as f64;
        let t = Instant::now();
        let masked = probe.masked(ratio, MaskKind::Magnitude, 0)?;
        let _ = probe.preview(&masked, ratio, MaskKind::Magnitude)?;
        preview_secs.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let masked = probe.masked(ratio, MaskKind::Magnitude, 0)?;
        let _ = probe.gamma_at(&masked, ratio, MaskKind::Magnitude, &s.sets, &mut p)?;
        mask_secs.push(t.elapsed().as_secs_f64());
        let _ = probe.detection(&masked, &s.sets, &mut p)?;
        full_secs.push(t.elapsed().as_secs_f64());
    }

    // A snapshot's first complete answer, as the app gets it: the snapshot read from disk, its
    // unmasked figures from the run's records (here: computed once above, as an epoch's
    // evaluation computes them), the preview's unmasked reference on the subsets, the preview,
    // then gamma and the masked detection on the complete sets.
    let recorded = (probe.full_pass(&s.sets, &mut p)?, probe.full_detection(&s.sets, &mut p)?);
    let snapshot = std::env::temp_dir().join(format!("unleash-bench-{}.bpk", std::process::id()));
    inf.save_bpk(&snapshot)?;
    let preview_sets = Arc::new(crate::unleash::probe::PreviewSets::new(&s.sets, Default::default()));
    let mut first_secs = Vec::new();
    for k in 0..a.repeats {
        let ratio = 0.5 + 0.01 * k as f64;
        let t = Instant::now();
        let model = crate::model::Net::load_bpk(exp.train.model, s.data.train.shape, s.classes, &snapshot, &dev);
        let mut fresh = crate::unleash::MaskProbe::new(model?, 1, s.eval_context(), exp.detectors.clone(), preview_sets.clone()).with_recorded(recorded.0.clone(), recorded.1.clone());
        let masked = fresh.masked(ratio, MaskKind::Magnitude, 0)?;
        let _ = fresh.preview(&masked, ratio, MaskKind::Magnitude)?;
        let _ = fresh.gamma_at(&masked, ratio, MaskKind::Magnitude, &s.sets, &mut p)?;
        let _ = fresh.detection(&masked, &s.sets, &mut p)?;
        first_secs.push(t.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(&snapshot);

    // The per-epoch evaluation as training runs it, with all default detectors, against the same
    // evaluation with the logit scores alone (what it was before the detectors); ODIN once.
    let epoch_eval = epoch_eval_times(&exp, &s, &inf, a.repeats)?;

    // Metrics on 1M ID + 1M OOD scores.
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let id: Vec<f32> = (0..1_000_000).map(|_| r.random::<f32>() + 0.3).collect();
    let ood: Vec<f32> = (0..1_000_000).map(|_| r.random::<f32>()).collect();
    let mut metric_secs = Vec::new();
    for _ in 0..a.repeats.max(3) {
        let t = Instant::now();
        let m = metrics::compute(&id, &ood)?;
        metric_secs.push(t.elapsed().as_secs_f64());
        std::hint::black_box(m);
    }

    let ops = if a.ops { Some(layer_timings(s.inference_device(), a.repeats.max(5))) } else { None };

    let ours = serde_json::json!({
        "device": desc,
        "model": exp.train.model.key(),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "train_samples_per_sec": train_rate,
        "train_batch": batch,
        "eval_samples_per_sec": median(eval_rates),
        "eval_batch": eb,
        "per_sample_loss_pass_secs": median(pass_secs),
        "per_sample_loss_pass_samples": s.sets.train.len(),
        "mask_preview_secs": median(preview_secs),
        "mask_ratio_to_gamma_secs": median(mask_secs),
        "mask_full_secs": median(full_secs),
        "mask_first_answer_secs": median(first_secs),
        "mask_full_samples": s.sets.train.len() + s.sets.test.len() + s.sets.id_val.as_ref().map_or(0, |v| v.len()) + s.sets.val.len() + s.sets.ood.iter().map(|o| o.len()).sum::<usize>(),
        "metrics_1m_1m_secs": median(metric_secs),
        "epoch_eval_secs": epoch_eval.with_detectors,
        "epoch_eval_logit_scores_only_secs": epoch_eval.logit_only,
        "epoch_eval_ratio": epoch_eval.with_detectors / epoch_eval.logit_only,
        "epoch_eval_with_odin_secs": epoch_eval.with_odin,
        "epoch_eval_samples": epoch_eval.samples,
        "ops": ops,
        // This process after its training steps and full passes over the sample data; a whole
        // run's figure is printed at the end of `unleash train` (snapshots and scores go to disk).
        "peak_rss_mib": crate::cli::peak_rss_mib(),
    });
    let reference = if a.pytorch { Some(run_pytorch_reference(a.ops)?) } else { None };
    let out = serde_json::json!({"unleash": ours, "pytorch_reference": reference});
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_bench(&ours, reference.as_ref());
    }
    Ok(())
}

struct EpochEvalTimes {
    with_detectors: f64,
    logit_only: f64,
    with_odin: f64,
    samples: usize,
}

/// Medians over `repeats` of the per-epoch evaluation of `model` on a default run's sets (with the
/// ID validation split, unlike the throughput figures above), alternating the two kinds.
fn epoch_eval_times(exp: &ExperimentConfig, s: &Session, model: &crate::model::Net, repeats: usize) -> Result<EpochEvalTimes> {
    let mut exp = exp.clone();
    exp.data.id_val_fraction = DataConfig::sample().id_val_fraction;
    let data = Arc::new(exp.data.load()?);
    let mut run = Session::new(exp, s.device.clone(), data)?;
    run.model = model.clone().train_on(&run.autodiff_device());
    let control = crate::events::Control::new();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        std::hint::black_box(run.evaluate(1, &control, &mut |_| {})?);
        with.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        logit_scores_only_evaluation(&run)?;
        without.push(t.elapsed().as_secs_f64());
    }
    run.config.detectors.odin = true;
    let t = Instant::now();
    std::hint::black_box(run.evaluate(1, &control, &mut |_| {})?);
    let with_odin = t.elapsed().as_secs_f64();
    let sets = &run.sets;
    let samples = sets.train.len() + sets.test.len() + sets.id_val.as_ref().map_or(0, |v| v.len()) + sets.val.len() + sets.ood.iter().map(|o| o.len()).sum::<usize>();
    Ok(EpochEvalTimes { with_detectors: median(with), logit_only: median(without), with_odin, samples })
}

/// The per-epoch evaluation with MSP, MaxLogit and Energy only: logits of every set, the per-sample
/// loss, three scores and their metrics.
fn logit_scores_only_evaluation(s: &Session) -> Result<()> {
    use crate::ood::{scores::score_rows, Score};
    let ctx = s.eval_context();
    let model = s.inference_model();
    let mut nothing = |_| -> Result<()> { Ok(()) };
    let mut scores = |set: &eval::PreparedSet| -> Result<eval::ScoreMap> {
        let logits = eval::logits(&model, set, ctx.batch, &ctx.device, &mut nothing)?;
        Ok(Score::LOGIT.iter().map(|&sc| (sc, score_rows(sc, &logits, ctx.classes))).collect())
    };
    let train = eval::logits(&model, &s.sets.train, ctx.batch, &ctx.device, &mut |_| Ok(()))?;
    std::hint::black_box(eval::LabelledPass::from_logits(&train, ctx.classes, &s.sets.train.labels)?);
    let test = scores(&s.sets.test)?;
    let id_val = match &s.sets.id_val {
        Some(v) => scores(v)?,
        None => Score::LOGIT.iter().map(|&sc| (sc, score_rows(sc, &train, ctx.classes))).collect(),
    };
    std::hint::black_box(eval::score_metrics(&id_val, &scores(&s.sets.val)?)?);
    for set in &s.sets.ood {
        std::hint::black_box(eval::score_metrics(&test, &scores(set)?)?);
    }
    Ok(())
}

fn run_pytorch_reference(ops: bool) -> Result<serde_json::Value> {
    let script = crate::data::sample_data_dir().parent().map(|p| p.join("benches/pytorch_reference.py")).unwrap_or_default();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--json")
        .args(ops.then_some("--ops"))
        .output()
        .map_err(|e| Error::Other(format!("cannot run python3 {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Other(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr))));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Other(format!("{} printed no JSON: {e}", script.display())))
}

fn print_bench(o: &serde_json::Value, reference: Option<&serde_json::Value>) {
    let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
    println!("device: {}", o["device"].as_str().unwrap_or("?"));
    let rows = [
        ("train samples/s (batch 128)", "train_samples_per_sec", true),
        ("eval samples/s (batch 500)", "eval_samples_per_sec", true),
        ("per-sample-loss pass, s", "per_sample_loss_pass_secs", false),
        ("mask ratio -> preview, s", "mask_preview_secs", false),
        ("mask ratio -> gamma + atypical, s", "mask_ratio_to_gamma_secs", false),
        ("  + masked acc + OOD metrics, s", "mask_full_secs", false),
        ("a snapshot's first answer, s", "mask_first_answer_secs", false),
        ("metrics on 1M+1M scores, s", "metrics_1m_1m_secs", false),
        ("epoch eval, default detectors, s", "epoch_eval_secs", false),
        ("  logit scores only, s", "epoch_eval_logit_scores_only_secs", false),
        ("  with ODIN too, s", "epoch_eval_with_odin_secs", false),
    ];
    println!("{:<34} {:>12} {:>12} {:>8}", "measure", "unleash", "reference", "ratio");
    for (name, key, higher_better) in rows {
        let ours = f(o, key);
        let theirs = reference.map_or(f64::NAN, |r| f(r, key));
        let ratio = if higher_better { ours / theirs } else { theirs / ours };
        println!("{name:<34} {ours:>12.3} {theirs:>12.3} {ratio:>7.2}x");
    }
    println!("(ratio > 1: unleash faster; reference = PyTorch / scikit-learn from benches/pytorch_reference.py)");
    println!("epoch evaluation with every default detector: {:.2}x the time of the logit scores alone ({} samples)", f(o, "epoch_eval_ratio"), f(o, "epoch_eval_samples"));
    if let Some(mib) = o.get("peak_rss_mib").and_then(serde_json::Value::as_f64) {
        let theirs = reference.map_or(String::new(), |r| format!(" (PyTorch reference process: {:.0} MiB)", f(r, "peak_rss_mib")));
        println!("peak resident memory of this benchmark: {mib:.0} MiB{theirs}");
    }
    if let Some(ops) = o.get("ops").and_then(serde_json::Value::as_array) {
        println!("\nSmallCNN layers at batch 128, milliseconds (median):");
        println!("{:<26} {:>10} {:>10} {:>12} {:>12}", "layer", "forward", "torch fwd", "fwd+bwd", "torch f+b");
        for op in ops {
            let name = op["layer"].as_str().unwrap_or("?");
            let theirs = reference.and_then(|r| r["ops"].as_array()).and_then(|v| v.iter().find(|t| t["layer"] == op["layer"]));
            let t = |k: &str| theirs.map_or(f64::NAN, |t| f(t, k));
            println!("{name:<26} {:>10.2} {:>10.2} {:>12.2} {:>12.2}", f(op, "forward_ms"), t("forward_ms"), f(op, "forward_backward_ms"), t("forward_backward_ms"));
        }
    }
}

/// Forward (inference) and forward+backward (training) time of each SmallCNN layer on its real
/// input shape at batch 128: where a training step's time goes. `dev` is the plain device.
fn layer_timings(dev: &burn::prelude::Device, reps: usize) -> serde_json::Value {
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::pool::MaxPool2dConfig;
    use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
    use burn::prelude::*;
    use burn::tensor::{activation, Distribution};
    let ad = dev.clone().autodiff();
    let conv = |i, o| Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&ad);
    let pool = MaxPool2dConfig::new([2, 2]).init();
    let (conv1, conv2): (Conv2d, Conv2d) = (conv(1, 32), conv(32, 64));
    let (fc1, fc2): (Linear, Linear) = (LinearConfig::new(3136, 128).init(&ad), LinearConfig::new(128, 10).init(&ad));
    let (conv1_i, conv2_i, fc1_i, fc2_i) = (conv1.valid(), conv2.valid(), fc1.valid(), fc2.valid());
    let x4 = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Default, dev);
    let x2 = |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Default, dev);
    let (a, b, c, d) = (x4([128, 1, 28, 28]), x4([128, 32, 28, 28]), x4([128, 32, 14, 14]), x4([128, 64, 14, 14]));
    let (e, f) = (x2([128, 3136]), x2([128, 128]));
    // Training inputs: every layer's input but conv1's needs its gradient (it flows further back).
    let grad4 = |t: &Tensor<4>, g: bool| t.clone().autodiff().set_require_grad(g);
    let grad2 = |t: &Tensor<2>| t.clone().autodiff().set_require_grad(true);
    let fused = |x: &Tensor<4>, conv: &Conv2d| {
        let bias = conv.bias.as_ref().map(|b| b.val()).expect("SmallCNN convs have a bias");
        crate::model::fused::conv3x3_relu_pool2(x.clone(), conv.weight.val(), bias)
    };
    type Case<'a> = (&'a str, Box<dyn Fn() -> Tensor<1> + 'a>, Box<dyn Fn() -> Tensor<1> + 'a>);
    let cases: Vec<Case> = vec![
        ("conv1 1->32 28x28", Box::new(|| conv1_i.forward(a.clone()).sum()), Box::new(|| conv1.forward(grad4(&a, false)).sum())),
        ("relu+pool 32x28x28", Box::new(|| pool.forward(activation::relu(b.clone())).sum()), Box::new(|| pool.forward(activation::relu(grad4(&b, true))).sum())),
        ("conv2 32->64 14x14", Box::new(|| conv2_i.forward(c.clone()).sum()), Box::new(|| conv2.forward(grad4(&c, true)).sum())),
        ("relu+pool 64x14x14", Box::new(|| pool.forward(activation::relu(d.clone())).sum()), Box::new(|| pool.forward(activation::relu(grad4(&d, true))).sum())),
        // The fused conv+bias+ReLU+pool op SmallCNN uses on this backend (src/model/fused).
        ("fused conv1+relu+pool", Box::new(|| fused(&a, &conv1_i).sum()), Box::new(|| fused(&grad4(&a, false), &conv1).sum())),
        ("fused conv2+relu+pool", Box::new(|| fused(&c, &conv2_i).sum()), Box::new(|| fused(&grad4(&c, true), &conv2).sum())),
        ("fc1 3136->128", Box::new(|| fc1_i.forward(e.clone()).sum()), Box::new(|| fc1.forward(grad2(&e)).sum())),
        ("fc2 128->10", Box::new(|| fc2_i.forward(f.clone()).sum()), Box::new(|| fc2.forward(grad2(&f)).sum())),
    ];
    let time = |run: &dyn Fn()| {
        run();
        median((0..reps).map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        }).collect())
    };
    let rows: Vec<serde_json::Value> = cases
        .iter()
        .map(|(name, forward, training)| {
            let fwd = time(&|| {
                let _ = forward().into_scalar::<f32>();
            });
            let both = time(&|| {
                let _grads = training().backward();
            });
            serde_json::json!({"layer": name, "forward_ms": fwd, "forward_backward_ms": both})
        })
        .collect();
    serde_json::Value::Array(rows)
}
