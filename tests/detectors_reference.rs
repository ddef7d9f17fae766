//! The detectors against an independent reference: `benches/detectors_reference.py fixture`
//! computed every detector in PyTorch/numpy/scikit-learn, from the papers' definitions, on a
//! subsample of a trained SmallCNN's real penultimate features (and ODIN on a tiny seeded MLP).
//! unleash fits and scores the same float32 arrays here; per-sample scores and AUROC must agree.

use std::path::PathBuf;
use unleash::config::ModelKind;
use unleash::data::ImageShape;
use unleash::model::Net;
use unleash::ood::{metrics, DetectorConfig, Detectors, Embedded, Head, Score};
use unleash::eval::{self, EvalContext, PreparedSet};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    unleash::fsio::read_npy_f32(&fixture(&format!("detectors_{name}.npy"))).expect("fixture array")
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).expect("fixture json")).expect("valid json")
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// Per-sample agreement: |ours - reference| <= tol (1 + |reference|).
fn assert_close(what: &str, ours: &[f32], reference: &[f64], tol: f64) {
    assert_eq!(ours.len(), reference.len(), "{what}: sample count");
    let worst = ours.iter().zip(reference).map(|(&a, &b)| (f64::from(a) - b).abs() / (1.0 + b.abs())).fold(0f64, f64::max);
    assert!(worst <= tol, "{what}: largest relative difference {worst:.2e} > {tol:.0e}");
}

#[test]
fn every_detector_matches_the_reference_on_real_features() {
    let reference = json("detectors_reference.json");
    let (wshape, weight) = npy("weight");
    let (classes, dim) = (wshape[0], wshape[1]);
    let head = Head { classes, dim, weight, bias: floats(&reference["bias"]).iter().map(|&b| b as f32).collect() };
    let labels: Vec<u32> = reference["train_labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let pass = |name: &str| Embedded { features: npy(&format!("{name}_features")).1, logits: npy(&format!("{name}_logits")).1 };
    let settings = &reference["settings"];
    let cfg = DetectorConfig { knn_k: settings["knn_k"].as_u64().unwrap() as usize, ..DetectorConfig::default() };
    assert_eq!(reference["vim_dim"].as_u64().unwrap() as usize, dim / 2, "the reference's ViM D is unleash's default");
    let detectors = Detectors::fit(head, &pass("train"), &labels, &cfg).unwrap();
    assert!(detectors.problems().is_empty(), "{:?}", detectors.problems());
    let (id, ood) = (detectors.scores(&pass("id")), detectors.scores(&pass("ood")));
    let mut checked = Vec::new();
    for score in Score::ALL.into_iter().filter(|&s| s != Score::Odin) {
        let key = score.key();
        assert_close(&format!("{key} (ID)"), &id[&score], &floats(&reference["id_scores"][key]), 1e-4);
        assert_close(&format!("{key} (OOD)"), &ood[&score], &floats(&reference["ood_scores"][key]), 1e-4);
        let ours = metrics::compute(&id[&score], &ood[&score]).unwrap().auroc;
        let theirs = reference["auroc"][key].as_f64().unwrap();
        assert!((ours - theirs).abs() <= 1e-4, "{key}: AUROC {ours} vs reference {theirs}");
        checked.push(key);
    }
    assert_eq!(checked.len(), 9, "{checked:?}");
}

#[test]
fn odin_matches_the_reference_on_a_tiny_mlp() {
    let reference = json("odin_reference.json");
    let shape = ImageShape { channels: 1, height: 4, width: 4 };
    let device = unleash::device::resolve(unleash::config::DeviceChoice::Cpu).unwrap().device;
    let model = Net::load_safetensors(ModelKind::Mlp, shape, 3, &fixture("odin_mlp.safetensors"), &device).unwrap();
    let x: Vec<f32> = floats(&reference["inputs"]).iter().map(|&v| v as f32).collect();
    let n = x.len() / shape.len();
    let set = PreparedSet::from_normalised("inputs", shape, x, vec![0; n]);
    // The reference steps its epsilon on the inputs as given; ours is in pixel units, divided by
    // the channel std: with std 0.5, a pixel step of eps / 2 is the reference's step.
    let std = 0.5;
    let ctx = EvalContext { classes: 3, device, batch: 16, channel_std: vec![std] };
    let settings = &reference["settings"];
    let (t, eps) = (settings["odin_temperature"].as_f64().unwrap(), settings["odin_epsilon"].as_f64().unwrap() * f64::from(std));
    let ours = eval::odin(&model, &set, &ctx, t, eps, &mut |_| Ok(())).unwrap();
    assert_close("ODIN", &ours, &floats(&reference["odin"]), 1e-3);
    // The input step matters: without it the scores are the reference's step-free ones, not the
    // stepped ones (a step that did nothing would pass the first check only by accident).
    let plain = eval::odin(&model, &set, &ctx, t, 0.0, &mut |_| Ok(())).unwrap();
    assert_close("ODIN, epsilon 0", &plain, &floats(&reference["without_step"]), 1e-3);
    let moved: f64 = ours.iter().zip(&plain).map(|(a, b)| f64::from(a - b).abs()).sum::<f64>() / n as f64;
    assert!(moved > 1e-3, "the step moved the scores by only {moved:.2e} on average");
}

mod common;

#[test]
fn a_detector_that_cannot_be_fitted_is_named_and_the_others_still_report() {
    // 40 samples, 4 held out: 36 to fit on, fewer than KNN's k = 50.
    let mut exp = common::small_experiment(1, 0);
    exp.data.train_limit = Some(40);
    let mut s = common::session(exp);
    let mut infos = Vec::new();
    let spec = unleash::train::PhaseSpec::base(&s.config.train);
    s.run_phase(&spec, &unleash::events::Control::new(), &mut |e| {
        if let unleash::events::Event::Info(line) = e {
            infos.push(line);
        }
    })
    .unwrap();
    let record = &s.records[0];
    assert_eq!(record.detector_problems, vec!["KNN cannot be fitted: k = 50 but there are only 36 training samples".to_string()]);
    assert!(infos.iter().any(|l| l == "epoch 1: KNN cannot be fitted: k = 50 but there are only 36 training samples"), "{infos:?}");
    for metrics in record.ood.values().chain([&record.val, &record.ood_mean]) {
        assert!(!metrics.contains_key(&Score::Knn));
        for score in [Score::Energy, Score::Mahalanobis, Score::Vim, Score::React, Score::Ash, Score::Dice] {
            assert!(metrics.contains_key(&score), "{score:?} still reports");
        }
    }
}
