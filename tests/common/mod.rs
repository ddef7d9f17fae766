//! Shared helpers of the end-to-end tests: small, fast runs on the bundled sample data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use unleash::config::{DataConfig, DeviceChoice, ExperimentConfig, TrainConfig};
use unleash::train::Session;

pub fn sample(path: &str) -> String {
    format!("{}/sample_data/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Sample data cut down for tests: the first 600 training samples (540 trained on, 60 held out
/// as the ID validation split), small OOD sets.
pub fn small_data() -> DataConfig {
    DataConfig {
        train: sample("fashion-train-images-idx3-ubyte.gz"),
        test: sample("fashion-t10k-images-idx3-ubyte.gz"),
        val_ood: "uniform:300:9".into(),
        ood: vec![sample("textures-images-idx3-ubyte.gz"), "gaussian:300".into()],
        train_limit: Some(600),
        classes: None,
        id_val_fraction: 0.1,
        id_val_seed: 0,
        allow_val_test_overlap: false,
    }
}

pub fn small_experiment(epochs: usize, seed: u64) -> ExperimentConfig {
    ExperimentConfig { data: small_data(), train: TrainConfig { epochs, seed, device: DeviceChoice::Cpu, ..TrainConfig::default() }, detectors: Default::default() }
}

pub fn session(exp: ExperimentConfig) -> Session {
    let data = Arc::new(exp.data.load().unwrap());
    Session::new(exp, unleash::device::cpu(), data).unwrap()
}

/// The CLI flags of [`small_data`].
pub fn small_args() -> Vec<String> {
    let d = small_data();
    let mut v = vec!["--train".into(), d.train, "--test".into(), d.test, "--val-ood".into(), d.val_ood, "--train-limit".into(), "600".into(), "--device".into(), "cpu".into()];
    for o in d.ood {
        v.push("--ood".into());
        v.push(o);
    }
    v
}

pub fn unleash(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unleash")).args(args).output().expect("running the unleash binary")
}

pub fn unleash_ok(args: &[String]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_unleash")).args(args).output().expect("running the unleash binary");
    assert!(out.status.success(), "unleash {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn train_run(dir: &Path, epochs: usize, seed: u64) -> PathBuf {
    let mut args: Vec<String> = vec!["train".into(), "--epochs".into(), epochs.to_string(), "--seed".into(), seed.to_string(), "--out".into(), dir.display().to_string()];
    args.extend(small_args());
    unleash_ok(&args);
    dir.to_path_buf()
}

pub fn events_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("events.jsonl")).map_or(0, |t| t.lines().count())
}

/// Polls (every 5 ms) until events.jsonl holds `n` lines: a point in the run fixed by its own
/// progress, not by a sleep. The 600 s limit only turns a hang into a failure: an epoch of
/// [`small_data`] takes seconds even on 2 cores shared with the other test binaries.
pub fn wait_for_lines(run: &Path, n: usize, child: &mut std::process::Child) {
    use std::time::{Duration, Instant};
    let t = Instant::now();
    while events_lines(run) < n {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before epoch {n} was written");
        assert!(t.elapsed() < Duration::from_secs(600), "epoch {n} never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The app on the CPU in an egui_kittest harness `size` points large (the GUI tests' window).
#[cfg(feature = "gui")]
pub fn app_harness(size: [f32; 2]) -> egui_kittest::Harness<'static, unleash::app::UnleashApp> {
    use unleash::app::{AppOptions, UnleashApp};
    egui_kittest::Harness::builder()
        .with_size(size)
        .build_eframe(|cc| UnleashApp::new(&cc.egui_ctx, AppOptions { device: Some(DeviceChoice::Cpu), ..Default::default() }))
}

/// Steps the app under egui_kittest until `done` holds (the worker runs on its own thread); fails
/// naming `what` and the app's last error after `secs`.
#[cfg(feature = "gui")]
pub fn step_until(h: &mut egui_kittest::Harness<'static, unleash::app::UnleashApp>, what: &str, secs: u64, done: impl Fn(&unleash::app::UnleashApp) -> bool) {
    use std::time::{Duration, Instant};
    let t = Instant::now();
    while !done(h.state()) {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}; last error: {:?}", h.state().state.last_error);
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.step();
}

/// Opens `run` in the app and steps until the mask tab's complete answer (at the panel's ratio) is
/// in and no job runs: where the fine-tune buttons have a gamma from the mask.
#[cfg(feature = "gui")]
pub fn open_until_the_complete_answer(h: &mut egui_kittest::Harness<'static, unleash::app::UnleashApp>, run: &Path) {
    h.step();
    h.state_mut().open_run(run.to_path_buf());
    step_until(h, "the complete answer", 300, |a| a.state.mask_result.as_ref().is_some_and(|m| m.preview.is_none()) && !a.state.is_busy());
}
