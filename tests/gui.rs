#![cfg(feature = "gui")]
//! The real app, driven through egui_kittest: it opens on the sample data; Start trains a short
//! run on the CPU and the accuracy label and plots fill; moving the mask slider changes the gamma
//! label; exports through injected paths write files that load back; a worker panic shows in the
//! UI and a new run can start after it; an opened run shows its epochs, and each tab its content
//! (the loss histogram, the atypical thumbnails, the ROC curves, the sweep's points); the UM,
//! UMAP and control buttons each add epochs of their phase.

mod common;
use common::step_until;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use unleash::app::{AppOptions, UnleashApp};
use unleash::config::DeviceChoice;
use unleash::worker::{Command, ExportRequest};

fn harness() -> Harness<'static, UnleashApp> {
    common::app_harness([1400.0, 900.0])
}


fn small_setup(h: &mut Harness<'static, UnleashApp>, out: &std::path::Path, epochs: usize) {
    let setup = &mut h.state_mut().setup;
    setup.config.data = common::small_data();
    setup.config.train.epochs = epochs;
    setup.out_dir = out.display().to_string();
}

#[test]
fn train_watch_mask_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness();
    h.step();
    // Opens on the bundled sample data, with the device named.
    assert!(h.state().setup.config.data.train.ends_with("fashion-train-images-idx3-ubyte.gz"));
    h.get_by_label_contains("CPU (burn flex");
    h.get_by_label("Start");

    small_setup(&mut h, &dir.path().join("run"), 2);
    h.get_by_label("Start").click();
    step_until(&mut h, "two epochs", 300, |a| a.state.records.len() == 2 && !a.state.is_busy());
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    let acc = h.get_by_label_contains("): ID test accuracy").value().unwrap_or_default();
    assert!(acc.contains("epoch 2"), "{acc}");
    // The plots are there and their data came from the epochs.
    h.get_by_label("plot: OOD AUROC (test sets and validation)");
    assert_eq!(h.state().state.loss_rows.len(), 2);
    assert_eq!(h.state().state.loss_rows[1].len(), 540, "600 samples less the 10% ID validation split");

    // Every tab draws without error.
    for tab in ["Per-sample loss", "Compare stages", "Atypical samples", "Training"] {
        h.get_by_label(tab).click();
        h.step();
        h.step();
    }
    // The compare view's score arrays come from the worker's reader, and are drawn.
    h.get_by_label("Compare stages").click();
    let final_id = unleash::worker::ScoresRequest { run: dir.path().join("run"), epoch: 2, set: "id_test".into() };
    step_until(&mut h, "the final stage's scores", 60, |a| matches!(a.state.stage_scores.get(&final_id), Some(unleash::app::state::StageScores::Loaded(_))));
    // The OOD side's array may arrive a frame or two later; 60 s is far beyond reading two small
    // .npy files on a loaded 2-core machine.
    let t = std::time::Instant::now();
    while h.query_by_label_contains("final (epoch 2): Energy ID test vs").is_none() {
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "the final stage's histogram never appeared");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The mask tab opens on an answer at its current ratio, without the slider being touched:
    // first a preview, then the complete answer with the masked OOD table.
    h.get_by_label("Mask ratio & UM").click();
    h.step();
    step_until(&mut h, "the complete answer at 0.5", 300, |a| a.state.mask_detection.is_some() && a.state.mask_result.as_ref().is_some_and(|m| m.preview.is_none() && (m.ratio - 0.5).abs() < 1e-12));
    h.get_by_label_contains("complete: every training, test and OOD sample");
    h.get_by_label_contains("Mean test-OOD Energy AUROC: masked");
    // A row per set (validation first, the mean last), each with a masked value.
    let detection = h.state().state.mask_detection.clone().unwrap();
    for name in detection.ood.keys().chain([&format!("{} (validation)", detection.val_name)]) {
        h.get_by_label(name);
    }
    h.get_by_label("mean of the test sets");
    assert!(h.state().state.last_preview_latency.is_some() && h.state().state.last_mask_latency.is_some());
    assert!(h.state().state.last_preview_latency <= h.state().state.last_mask_latency);
    // The sweep computed after the base phase arrives and is drawn.
    step_until(&mut h, "the sweep", 600, |a| a.state.sweep.as_ref().is_some_and(|s| s.complete));
    h.step();
    let points = unleash::worker::DEFAULT_SWEEP_POINTS;
    h.get_by_label_contains(&format!("plot: masked mean test-OOD Energy AUROC, {points} points"));

    // Moving the slider: a preview for the new ratio, then the complete answer; gamma changes.
    let g1 = h.get_by_label_contains("Loss constraint gamma").value().unwrap_or_default();
    h.get_by_role_and_label(eframe::egui::accesskit::Role::Slider, "mask ratio").set_value_accesskit(0.8);
    step_until(&mut h, "a preview at 0.8", 120, |a| a.state.mask_result.as_ref().is_some_and(|m| (m.ratio - 0.8).abs() < 1e-9));
    let first = h.state().state.mask_result.clone().unwrap();
    if first.preview.is_some() {
        h.step();
        h.get_by_label_contains("preview on subsets (n = 1000 training");
    }
    step_until(&mut h, "the complete answer at 0.8", 300, |a| a.state.mask_detection.is_some() && a.state.mask_result.as_ref().is_some_and(|m| m.preview.is_none() && (m.ratio - 0.8).abs() < 1e-9));
    let g2 = h.get_by_label_contains("Loss constraint gamma").value().unwrap_or_default();
    assert_ne!(g1, g2);
    // The slider's gamma is the CLI's for the same run, snapshot and ratio.
    let out = common::unleash(&["mask", "--run", dir.path().join("run").to_str().unwrap(), "--ratios", "0.8", "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ratios"][0]["gamma"].as_f64(), Some(h.state().state.mask_result.as_ref().unwrap().gamma));
    assert_eq!(json["ratios"][0]["ood_mean"]["energy"]["auroc"].as_f64(), h.state().state.mask_detection.as_ref().unwrap().mean(unleash::ood::Score::Energy).map(|m| m.auroc));

    // Export through injected paths; the files load back.
    let model = dir.path().join("exported-model");
    let report = dir.path().join("report");
    let csv = dir.path().join("atypical");
    let sheet = dir.path().join("sheet");
    h.state_mut().export_to(ExportRequest { model: Some(model.clone()), report: Some(report.clone()), atypical_csv: Some(csv.clone()), contact_sheet: Some(sheet.clone()), ..Default::default() });
    step_until(&mut h, "export", 60, |a| !a.state.exported.is_empty() || a.state.last_error.is_some());
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    let shape = unleash::data::ImageShape { channels: 1, height: 28, width: 28 };
    unleash::model::Net::load_bpk(unleash::config::ModelKind::SmallCnn, shape, 10, &model.with_extension("bpk"), &unleash::device::cpu().device).unwrap();
    assert!(model.with_extension("safetensors").exists());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(report.with_extension("json")).unwrap()).unwrap();
    assert_eq!(json["epochs"].as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(report.with_extension("md")).unwrap().contains("ID acc"));
    let rows = std::fs::read_to_string(csv.with_extension("csv")).unwrap();
    let n_atypical = h.state().state.mask_result.as_ref().unwrap().samples.len();
    assert_eq!(rows.lines().count(), n_atypical + 1);
    if n_atypical > 0 {
        image::open(sheet.with_extension("png")).unwrap();
    }

    // A bad export path is an error in the UI, and the app goes on.
    h.state_mut().export_to(ExportRequest { report: Some(dir.path().join("no/such/folder/report")), ..Default::default() });
    step_until(&mut h, "export error", 60, |a| a.state.last_error.is_some());
    assert!(h.state().state.last_error.as_ref().unwrap().contains("does not exist"));
}

#[test]
fn a_worker_panic_shows_and_the_app_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness();
    h.step();
    h.state_mut().send(Command::Crash);
    step_until(&mut h, "the panic report", 30, |a| a.state.last_error.is_some());
    h.get_by_label_contains("the worker failed");
    // Stop before Start is a no-op; a bad setup is refused with the field named; then a run starts.
    h.state_mut().stop();
    small_setup(&mut h, &dir.path().join("bad"), 1);
    // (The lr field clamps what a person types; a config from elsewhere can still be bad.)
    h.state_mut().setup.config.train.lr = -1.0;
    h.state_mut().start_training();
    assert!(h.state().state.last_error.as_ref().unwrap().contains("lr"));
    h.state_mut().setup.config.train.lr = 0.05;
    h.state_mut().setup.config.data.ood = vec!["/no/such/ood-images-idx3-ubyte.gz".into()];
    h.get_by_label("Start").click();
    step_until(&mut h, "the data error", 60, |a| a.state.last_error.as_ref().is_some_and(|e| e.contains("/no/such/ood")) && !a.state.is_busy());
    small_setup(&mut h, &dir.path().join("ok"), 1);
    h.get_by_label("Start").click();
    step_until(&mut h, "one epoch", 300, |a| a.state.records.len() == 1 && !a.state.is_busy());
}

#[test]
fn an_interrupted_run_opens_with_resume_and_resuming_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("run"), 2, 0);
    // As a kill after the first epoch leaves it: one events line.
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    std::fs::write(run.join("events.jsonl"), format!("{}\n", text.lines().next().unwrap())).unwrap();
    let mut h = harness();
    h.state_mut().send(Command::OpenRun(run.clone()));
    step_until(&mut h, "the run and its data", 120, |a| a.state.data.is_some() && a.state.records.len() == 1 && !a.state.is_busy());
    h.get_by_label("Resume training (1 of 2 epochs done)").click();
    step_until(&mut h, "the resumed epoch", 300, |a| a.state.records.len() == 2 && !a.state.is_busy());
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    h.step();
    assert!(h.query_by_label_contains("Resume training").is_none(), "a finished run offers no resume");
    assert_eq!(unleash::run::RunReader::open(&run).unwrap().records.len(), 2);
}

/// The score column of `score` in a run's score arrays (one column per score, in Score::ALL order).
fn score_column(run: &std::path::Path, epoch: usize, set: &str, score: unleash::ood::Score) -> Vec<f32> {
    let (shape, data) = unleash::fsio::read_npy_f32(&unleash::run::scores_path(run, epoch, set)).unwrap();
    let k = unleash::ood::Score::ALL.iter().position(|s| *s == score).unwrap();
    data.iter().skip(k).step_by(shape[1]).copied().collect()
}

#[test]
fn an_opened_run_shows_its_epochs_and_each_tab_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("run"), 2, 0);
    let mut h = harness();
    // At 0.9 the masked model gets many training samples wrong: thumbnails to show.
    h.state_mut().mask.ratio = 0.9;
    h.step();
    h.state_mut().open_run(run.clone());
    step_until(&mut h, "the run and its data", 120, |a| a.state.data.is_some() && a.state.records.len() == 2);
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    // The training tab shows the run's epochs.
    h.get_by_label(&format!("run: {}", run.display()));
    h.get_by_label_contains("latest epoch 2: ID acc");
    h.get_by_label("plot: ID accuracy");

    // Per-sample loss: the histogram holds every training sample's loss of the latest epoch.
    h.get_by_label("Per-sample loss").click();
    h.step();
    h.step();
    h.get_by_label("plot: histogram of 540 per-sample losses at epoch 2");

    // Atypical samples: a thumbnail per sample of the first page (48 a page), none of the next.
    step_until(&mut h, "the complete answer at 0.9", 300, |a| a.state.mask_result.as_ref().is_some_and(|m| m.preview.is_none() && (m.ratio - 0.9).abs() < 1e-12));
    h.get_by_label("Atypical samples").click();
    h.step();
    h.step();
    let set = h.state().state.mask_result.clone().unwrap();
    assert!(set.samples.len() > 48, "{} atypical samples at 0.9: too few to fill a page", set.samples.len());
    h.get_by_label_contains(&format!("48 shown (page 1 of {}) of {}", set.samples.len().div_ceil(48), set.samples.len()));
    for a in &set.samples[..48] {
        h.get_by_role_and_label(eframe::egui::accesskit::Role::Image, &format!("sample {}", a.index));
    }
    assert!(h.query_by_label(&format!("sample {}", set.samples[48].index)).is_none(), "the 49th sample is on page 2");

    // Compare stages: a ROC curve per stage, with the points of the run's own score arrays.
    h.get_by_label("Compare stages").click();
    // The stages' score arrays come from the worker's reader thread: a few frames. 60 s is far
    // beyond reading four small .npy files, even on a loaded 2-core machine.
    let t = std::time::Instant::now();
    while h.query_by_label_contains("plot: ROC curves").is_none() {
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "the ROC curves never appeared");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let records = h.state().state.records.clone();
    let best = unleash::run::best_by_validation(&records, unleash::ood::Score::Energy, Some(unleash::run::Phase::Base)).unwrap();
    let ood_set = records[1].ood.keys().next().unwrap().clone();
    let roc_points = |epoch| {
        let (id, ood) = (score_column(&run, epoch, "id_test", unleash::ood::Score::Energy), score_column(&run, epoch, &ood_set, unleash::ood::Score::Energy));
        unleash::ood::metrics::roc_curve(&id, &ood).unwrap().len()
    };
    let label = format!("plot: ROC curves ({ood_set}): best epoch (epoch {best}): {} points; final (epoch 2): {} points", roc_points(best), roc_points(2));
    let shown = h.get_by_label_contains("plot: ROC curves").accesskit_node().label().unwrap_or_default();
    assert_eq!(shown, label);

    // The sweep that opening started: each of the mask tab's four plots gets a point per ratio.
    step_until(&mut h, "the sweep", 600, |a| a.state.sweep.as_ref().is_some_and(|s| s.complete && s.epoch == 2));
    h.get_by_label("Mask ratio & UM").click();
    h.step();
    h.step();
    let points = unleash::worker::DEFAULT_SWEEP_POINTS;
    for title in ["gamma (log scale)", "atypical samples", "masked ID test accuracy", "masked mean test-OOD Energy AUROC"] {
        h.get_by_label_contains(&format!("plot: {title}, {points} points, y "));
    }
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
}

#[test]
fn the_um_umap_and_control_buttons_each_fine_tune_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("run"), 1, 0);
    let mut h = harness();
    // gamma from the mask ratio: the complete answer at 0.5.
    common::open_until_the_complete_answer(&mut h, &run);
    let gamma = h.state().state.mask_result.as_ref().unwrap().gamma;
    h.state_mut().mask.ft_epochs = 1;
    h.get_by_label("Mask ratio & UM").click();
    h.step();
    // UM and UMAP from the last base epoch (the snapshot chosen by default), with the mask's gamma;
    // the control from the snapshot chosen then: UM's end, epoch 2.
    use unleash::app::MaskSnapshot;
    let buttons = [
        ("Fine-tune with UM", MaskSnapshot::LastBase, unleash::run::Phase::Um, 1, Some(gamma)),
        ("Prune with UMAP", MaskSnapshot::LastBase, unleash::run::Phase::Umap, 1, Some(gamma)),
        ("CE control", MaskSnapshot::Epoch(2), unleash::run::Phase::Control, 2, None),
    ];
    for (k, (button, snapshot, phase, from_epoch, expected_gamma)) in buttons.into_iter().enumerate() {
        h.state_mut().mask.snapshot = snapshot;
        h.get_by_label("Mask ratio & UM").click();
        step_until(&mut h, "the worker to be free", 300, |a| !a.state.is_busy());
        h.get_by_label(button).click_accesskit();
        h.step();
        assert!(h.state().state.is_busy(), "{button} started nothing");
        step_until(&mut h, button, 300, |a| !a.state.is_busy());
        assert!(h.state().state.last_error.is_none(), "{button}: {:?}", h.state().state.last_error);
        let records = &h.state().state.records;
        assert_eq!(records.len(), k + 2, "{button}: one epoch more");
        let r = records.last().unwrap();
        assert_eq!((r.phase, r.from_epoch, r.gamma), (phase, from_epoch, expected_gamma), "{button}: its phase, snapshot and gamma");
    }
    // The epochs are the run folder's too.
    let phases: Vec<_> = unleash::run::RunReader::open(&run).unwrap().records.iter().map(|r| r.phase).collect();
    assert_eq!(phases, [unleash::run::Phase::Base, unleash::run::Phase::Um, unleash::run::Phase::Umap, unleash::run::Phase::Control]);
}

/// Where no file dialog can open (no desktop portal, no zenity), File > Export asks for the path in
/// the app, pre-filled with `<run>/export/`, and the status line names the files written.
#[test]
fn exports_without_a_file_dialog_ask_in_the_app_and_name_the_files_written() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("run"), 1, 0);
    let mut h = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(|cc| UnleashApp::new(&cc.egui_ctx, AppOptions { device: Some(DeviceChoice::Cpu), no_native_dialogs: true, ..Default::default() }));
    h.state_mut().open_run(run.clone());
    step_until(&mut h, "the run and its data", 120, |a| a.state.data.is_some() && a.state.records.len() == 1 && !a.state.is_busy());
    for (item, files) in [("Export report (markdown + JSON)...", ["report.md", "report.json"]), ("Export model (.bpk + .safetensors)...", ["model.bpk", "model.safetensors"])] {
        h.get_by_label("File").click();
        h.step();
        h.step();
        h.get_by_label(item).click();
        h.step();
        h.step();
        let prompt = h.state().path_prompt.as_ref().expect("the app asks for the path");
        let stem = files[0].split('.').next().unwrap();
        assert_eq!(prompt.path, run.join("export").join(stem).display().to_string());
        h.get_by_label_contains(": type the path.");
        h.get_by_label("Export").click();
        step_until(&mut h, "the export", 60, |a| !a.state.is_busy() && a.state.exported.iter().any(|p| p.display().to_string().contains(stem)));
        assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
        for f in files {
            assert!(run.join("export").join(f).metadata().unwrap().len() > 0, "{f} written");
            h.get_by_label_contains(&run.join("export").join(f).display().to_string());
        }
    }
}
