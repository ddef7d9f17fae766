#![cfg(feature = "gui")]
//! A long session of the real app (egui_kittest, no display), for memory growth and frame times:
//! 20 epochs on the sample data, 100 mask requests, UM, UMAP and the control, 10 exports and 3
//! runs opened. It takes minutes, so it is not part of `cargo test`; run it with
//! `cargo test --release --test soak -- --ignored --nocapture` (UNLEASH_SOAK_JSON=path writes the
//! figures as JSON).

mod common;
use common::step_until;
use egui_kittest::Harness;
use unleash::app::{AppOptions, UnleashApp};
use unleash::config::DeviceChoice;
use unleash::train::Finetune;
use unleash::worker::{Command, ExportRequest};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(f64::NAN) / 1024.0
}

fn no_error(h: &Harness<'static, UnleashApp>, when: &str) {
    assert!(h.state().state.last_error.is_none(), "{when}: {:?}", h.state().state.last_error);
}

#[test]
#[ignore = "minutes long: run by hand (see the module comment)"]
fn a_long_session_keeps_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::builder().with_size([1400.0, 900.0]).build_eframe(|cc| UnleashApp::new(&cc.egui_ctx, AppOptions { device: Some(DeviceChoice::Cpu), ..Default::default() }));
    h.step();
    let rss_start = rss_mib();
    let run = dir.path().join("run");
    {
        let setup = &mut h.state_mut().setup;
        setup.config.train.epochs = 20;
        setup.out_dir = run.display().to_string();
    }
    h.state_mut().start_training();
    step_until(&mut h, "the first epoch", 600, |a| !a.state.records.is_empty());
    let rss_first_epoch = rss_mib();
    step_until(&mut h, "20 epochs", 3600, |a| a.state.records.len() == 20 && !a.state.is_busy());
    no_error(&h, "training");
    let rss_trained = rss_mib();

    // 100 mask requests, as a slider drag would send them, waiting for an answer every tenth.
    for k in 0..100 {
        h.state_mut().mask.ratio = 0.05 + 0.009 * k as f64;
        h.state_mut().request_mask();
        h.step();
        if k % 10 == 9 {
            step_until(&mut h, "a mask answer", 600, |a| !a.state.mask_pending);
        }
    }
    no_error(&h, "masking");
    step_until(&mut h, "a complete answer", 600, |a| a.state.mask_result.as_ref().is_some_and(|m| m.preview.is_none()));
    let gamma = h.state().state.mask_result.as_ref().unwrap().gamma;

    for kind in [Finetune::Um, Finetune::Umap, Finetune::Control] {
        h.state_mut().send(Command::Finetune { kind, gamma, epochs: 2, lr: 0.05, prune_ratio: 0.2, from_epoch: None });
        step_until(&mut h, "a fine-tune", 1200, |a| a.state.is_busy());
        step_until(&mut h, "the fine-tune's end", 1200, |a| !a.state.is_busy());
        no_error(&h, "fine-tuning");
    }
    for k in 0..10 {
        let p = dir.path().join(format!("export-{k}"));
        h.state_mut().export_to(ExportRequest { model: Some(p.clone()), report: Some(p.clone()), atypical_csv: Some(p.clone()), contact_sheet: None, ..Default::default() });
        let bpk = p.with_extension("bpk");
        step_until(&mut h, "an export", 300, |a| a.state.exported.contains(&bpk));
    }
    no_error(&h, "exporting");
    for _ in 0..3 {
        h.state_mut().send(Command::OpenRun(run.clone()));
        step_until(&mut h, "the run to open", 600, |a| a.state.data.is_some() && !a.state.is_busy() && a.state.records.len() == 26);
    }
    no_error(&h, "opening runs");
    let rss_end = rss_mib();
    let frames = &h.state().frame_times;
    let max_frame_ms = frames.iter().copied().fold(0.0f64, f64::max) * 1e3;
    let mut sorted = frames.clone();
    sorted.sort_by(f64::total_cmp);
    let p95_ms = sorted.get(sorted.len() * 95 / 100).copied().unwrap_or(f64::NAN) * 1e3;
    let figures = serde_json::json!({
        "rss_start_mib": rss_start, "rss_after_first_epoch_mib": rss_first_epoch, "rss_after_training_mib": rss_trained, "rss_end_mib": rss_end,
        "frames": frames.len(), "frame_p95_ms": p95_ms, "frame_max_ms": max_frame_ms,
    });
    println!("{figures}");
    if let Ok(p) = std::env::var("UNLEASH_SOAK_JSON") {
        std::fs::write(p, figures.to_string()).unwrap();
    }
    // Growth after the first epoch stays within 10%.
    assert!(rss_end <= rss_first_epoch * 1.10, "resident memory grew from {rss_first_epoch:.0} MiB after the first epoch to {rss_end:.0} MiB");
}
