#![cfg(feature = "gui")]
//! An imported run in the real app (egui_kittest): a model exported by unleash is imported
//! through the engine's `import_run` (what the app's "Import model..." would call), then opened
//! through the app's own `open_run`: its one epoch shows, the loss tab draws its one row, the
//! mask tab answers, and the compare view lists the "imported (epoch 1)" stage with its curves.
//! And File > Import model... does the same from the app.

mod common;
use common::step_until;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use unleash::app::{AppOptions, UnleashApp};
use unleash::config::DeviceChoice;
use unleash::import::{import_run, ImportSpec, KeyMap};

/// A model trained one epoch on the small sample data and exported by unleash: its safetensors.
fn exported_model(dir: &std::path::Path) -> std::path::PathBuf {
    let trained = common::train_run(&dir.join("trained"), 1, 0);
    let model = dir.join("model");
    let s = |p: &std::path::Path| p.display().to_string();
    common::unleash_ok(&["export", "--run", &s(&trained), "--model", &s(&model), "--device", "cpu"].map(String::from));
    model.with_extension("safetensors")
}

#[test]
fn an_imported_run_opens_and_every_tab_works_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("imported");
    let spec = ImportSpec { model: exported_model(dir.path()), key_map: KeyMap::Unleash };
    let session = import_run(common::small_experiment(1, 0), &spec, &run, &unleash::events::Control::new(), &mut |_| {}).unwrap();
    drop(session);

    let mut h = common::app_harness([1400.0, 900.0]);
    h.step();
    h.state_mut().open_run(run.clone());
    step_until(&mut h, "the imported run and its data", 120, |a| a.state.data.is_some() && a.state.records.len() == 1);
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    h.get_by_label(&format!("run: {}", run.display()));
    h.get_by_label_contains("latest epoch 1: ID acc");
    assert_eq!(h.state().state.loss_rows.len(), 1, "the loss history has one row");

    h.get_by_label("Per-sample loss").click();
    h.step();
    h.step();
    h.get_by_label("plot: histogram of 540 per-sample losses at epoch 1");
    h.get_by_label_contains("The map needs more epochs");

    step_until(&mut h, "the mask tab's complete answer", 300, |a| a.state.mask_result.as_ref().is_some_and(|m| m.preview.is_none()));
    h.get_by_label("Mask ratio & UM").click();
    h.step();
    h.step();

    // The stages the compare view offers: the imported epoch, standing for best and final.
    let offered: Vec<String> = unleash::run::stages(&h.state().state.records).iter().map(|s| s.title()).collect();
    assert_eq!(offered, ["imported (epoch 1)"]);
    // The view opens on the stages the run has (its defaults, best epoch and final, are not).
    h.get_by_label("Compare stages").click();
    let t = std::time::Instant::now();
    while h.query_by_label_contains("plot: ROC curves").is_none() {
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "the ROC curves never appeared");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let shown = h.get_by_label_contains("plot: ROC curves").accesskit_node().label().unwrap_or_default();
    assert!(shown.starts_with("plot: ROC curves (gaussian): imported (epoch 1): "), "{shown}");
    assert_eq!(h.state().compare.stages, ["imported".to_string(), "imported".to_string()]);
    assert_eq!(h.query_all_by_label_contains("imported (epoch 1): Energy ID test vs gaussian").count(), 2, "a histogram per side");
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
}

#[test]
fn file_import_model_makes_a_new_run_from_a_checkpoint_and_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = exported_model(dir.path());
    let s = |p: &std::path::Path| p.display().to_string();
    let mut h = Harness::builder().with_size([1400.0, 900.0]).build_eframe(|cc| {
        UnleashApp::new(&cc.egui_ctx, AppOptions { device: Some(DeviceChoice::Cpu), config: Some(common::small_experiment(1, 0)), no_native_dialogs: true, ..Default::default() })
    });
    h.step();
    h.get_by_label("File").click();
    h.step();
    h.step();
    h.get_by_label("Import model...").click();
    h.step();
    h.step();
    // No file dialog here: the app asks for the checkpoint's path, then for the import's choices.
    h.state_mut().path_prompt.as_mut().expect("the app asks for the checkpoint").path = s(&checkpoint);
    h.get_by_label("Open").click();
    h.step();
    h.step();
    let panel = h.state_mut().import.as_mut().expect("the import window");
    assert_eq!(panel.checkpoint, s(&checkpoint));
    assert!(panel.out_dir.ends_with("imported-model"), "{}", panel.out_dir);
    let run = dir.path().join("from-the-app");
    panel.out_dir = s(&run);
    h.get_by_label_contains("Architecture and data: the Setup panel's (small-cnn");
    h.get_by_label("Import").click();
    step_until(&mut h, "the imported run, opened", 120, |a| a.state.run_dir.as_deref() == Some(run.as_path()) && a.state.records.len() == 1 && a.state.data.is_some() && !a.state.is_busy());
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    assert!(h.state().import.is_none(), "the window closes");
    let record = &h.state().state.records[0];
    assert_eq!(record.imported_from.as_deref(), Some("model.safetensors"));
    // The same checkpoint imported by the engine directly gives the same epoch.
    let direct = dir.path().join("direct");
    let spec = ImportSpec { model: checkpoint, key_map: KeyMap::Unleash };
    drop(import_run(common::small_experiment(1, 0), &spec, &direct, &unleash::events::Control::new(), &mut |_| {}).unwrap());
    let theirs = unleash::run::RunReader::open(&direct).unwrap().records.remove(0);
    assert_eq!((record.test_acc, &record.ood_mean, record.train_eval_loss), (theirs.test_acc, &theirs.ood_mean, theirs.train_eval_loss));
}
