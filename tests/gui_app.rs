#![cfg(feature = "gui")]
//! The app's smaller promises, driven through egui_kittest: path fields show their whole path on
//! hover and the validation spec its meaning; the setup's labels line up; the output folder is
//! absolute; the sample window keeps clear of the sidebar; after a finished run Start says what
//! it does; and the mask explorer's choices are kept with the run and come back on reopening (a
//! run without them opens with the defaults, a bad file is reported by name).

mod common;
use common::step_until;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use unleash::app::UnleashApp;
use unleash::worker::Command;

fn harness() -> Harness<'static, UnleashApp> {
    common::app_harness([1600.0, 1000.0])
}

/// The left edge of the text label `text` (not of a field it labels).
fn label_left(h: &Harness<'static, UnleashApp>, text: &str) -> f32 {
    let is_it = |n: &egui_kittest::Node| n.accesskit_node().label().as_deref() == Some(text) || n.value().as_deref() == Some(text);
    let node = h.get_all_by_role(eframe::egui::accesskit::Role::Label).find(is_it).unwrap_or_else(|| panic!("no label {text}"));
    node.rect().left()
}

#[test]
fn the_setup_panel_explains_its_fields_and_lines_them_up() {
    let mut h = harness();
    h.run_steps(3);
    // A path field is narrower than its path: hovering it shows the whole path.
    let train = h.state().setup.config.data.train.clone();
    assert!(h.query_by_label(&train).is_none(), "the path shown before any hover");
    let field = h.get_all_by_label("ID train").find(|n| n.accesskit_node().role() == eframe::egui::accesskit::Role::TextInput).expect("the ID train field");
    field.hover();
    // egui shows a tooltip once the pointer has rested (half a second: 60 frames of 1/60 s).
    h.run_steps(60);
    h.get_by_label(&train);

    // The default validation spec says what it is.
    assert!(h.state().setup.config.data.val_ood.starts_with("patch-shuffle"));
    h.get_by_label("(?)").hover();
    h.run_steps(60);
    h.get_by_label_contains("patch-shuffle:COUNT:SEED makes the validation OOD set from held-out ID images");

    // Model and Device sit where every other label of the recipe does.
    let left = label_left(&h, "Epochs");
    for label in ["Model", "Device", "Learning rate", "Seed"] {
        assert_eq!(label_left(&h, label), left, "{label}");
    }
    // The output folder is absolute, whatever the working directory is later.
    assert!(std::path::Path::new(&h.state().setup.out_dir).is_absolute(), "{}", h.state().setup.out_dir);
}

#[test]
fn the_sample_window_keeps_clear_of_the_sidebar() {
    let mut h = harness();
    h.run_steps(2);
    // The right edge of the sidebar's fields (the browse buttons end its rows).
    let sidebar_right = h.get_all_by_label("...").map(|n| n.rect().right()).fold(0.0, f32::max);
    assert!(sidebar_right > 100.0);
    h.state_mut().atypical.selected_sample = Some(0);
    h.run_steps(3);
    let window = h.get_by_label("Training sample #0").rect();
    assert!(window.left() > sidebar_right, "the sample window ({window:?}) covers the sidebar (to x = {sidebar_right})");
}

/// Opens `run` in a fresh app and waits for its epochs and for its kept choices to be read.
fn open(run: &std::path::Path) -> Harness<'static, UnleashApp> {
    let mut h = harness();
    h.state_mut().send(Command::OpenRun(run.to_path_buf()));
    step_until(&mut h, "the run", 120, |a| a.state.records.len() == 1 && !a.state.is_busy());
    // The file is read on its own thread: a few frames.
    for _ in 0..20 {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    h
}

#[test]
fn start_says_what_it_does_and_the_mask_choices_are_kept_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("run"), 1, 0);
    let file = run.join("app-settings.json");

    // A run from before the file opens with the defaults and gets no file of its own.
    let mut h = open(&run);
    assert!(!file.exists());
    assert_eq!((h.state().mask.ratio, h.state().mask.ft_epochs), (0.5, 10));
    // Start, with a run open: a fresh model, elsewhere, this run left alone.
    h.get_by_label("Start new run");
    let out = h.state().setup.out_dir.clone();
    h.get_by_label_contains(&format!("Start new run: trains a fresh model from scratch with the setup below, into {out}"));

    // Choices made on this run are written to it.
    h.state_mut().mask.ratio = 0.2;
    h.state_mut().mask.ft_epochs = 3;
    h.state_mut().mask.ft_lr = 0.02;
    let t = std::time::Instant::now();
    while !file.exists() {
        assert!(t.elapsed().as_secs() < 30, "the choices were never saved");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(h);
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!((saved["mask_ratio"].as_f64(), saved["finetune_epochs"].as_u64(), saved["finetune_lr"].as_f64()), (Some(0.2), Some(3), Some(0.02)));

    // Reopened: they come back.
    let h = open(&run);
    assert_eq!((h.state().mask.ratio, h.state().mask.ft_epochs, h.state().mask.ft_lr), (0.2, 3, 0.02));
    drop(h);

    // A bad file: the run opens, the problem is reported naming the file, the defaults stay.
    std::fs::write(&file, r#"{"mask_ratio": 7}"#).unwrap();
    let h = open(&run);
    assert_eq!(h.state().mask.ratio, 0.5);
    let error = h.state().state.last_error.clone().unwrap_or_default();
    assert!(error.contains(&file.display().to_string()) && error.contains("mask_ratio 7 is outside"), "{error}");
}
