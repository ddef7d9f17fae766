//! The left panel: data sets, model and recipe, device, output folder, and the job controls.

use super::{DialogPurpose, UnleashApp};
use crate::events::format_secs;
use crate::config::{DeviceChoice, ModelKind};
use eframe::egui;

pub fn show(app: &mut UnleashApp, ui: &mut egui::Ui) {
    ui.heading("Run");
    controls(app, ui);
    ui.separator();
    ui.add_enabled_ui(!app.state.is_busy(), |ui| {
        data(app, ui);
        ui.separator();
        recipe(app, ui);
    });
}

fn controls(app: &mut UnleashApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let busy = app.state.is_busy();
        if ui.add_enabled(!busy, egui::Button::new("Start")).on_hover_text("Train a fresh model with this setup").clicked() {
            app.start_training();
        }
        if app.state.paused {
            if ui.add_enabled(busy, egui::Button::new("Resume")).clicked() {
                app.pause(false);
            }
        } else if ui.add_enabled(busy, egui::Button::new("Pause")).clicked() {
            app.pause(true);
        }
        if ui.add_enabled(busy, egui::Button::new("Stop")).on_hover_text("Stop after the current batch; finished epochs stay on disk").clicked() {
            app.stop();
        }
    });
    if let (Some((done, planned)), Some(dir), false) = (app.state.resumable(), app.state.run_dir.clone(), app.state.is_busy()) {
        let text = format!("Resume training ({done} of {planned} epochs done)");
        if ui.button(text).on_hover_text("Continue this run's base training from its last complete epoch, to the numbers of an uninterrupted run").clicked() {
            app.state.busy = Some(crate::worker::Job::Starting);
            app.send(crate::worker::Command::Resume(dir));
        }
    }
    let st = &app.state;
    if let Some(b) = st.batch.filter(|_| st.is_busy() && st.evaluating.is_none()) {
        let frac = b.batch as f32 / b.batches.max(1) as f32;
        ui.add(egui::ProgressBar::new(frac).text(format!("{} epoch {}/{} - batch {}/{}", b.phase.name(), b.phase_epoch, b.phase_epochs, b.batch, b.batches)));
        ui.label(format!("loss {:.4} | {:.0} samples/s | ETA {}", b.loss, b.samples_per_sec, format_secs(b.eta_secs)));
    } else if let Some((set, done, total)) = &st.evaluating {
        ui.add(egui::ProgressBar::new(*done as f32 / (*total).max(1) as f32).text(format!("evaluating {set}: {done}/{total}")));
    } else if let Some(what) = &st.busy {
        ui.label(format!("working: {}", what.describe()));
    } else {
        ui.label("idle");
    }
    if st.paused {
        ui.label("paused");
    }
    if let Some(r) = st.records.last() {
        ui.label(format!("epoch {} ({}): ID test accuracy {:.4}", r.epoch, r.phase.name(), r.test_acc));
        if let Some(m) = r.ood_mean.get(&crate::ood::Score::Energy) {
            ui.label(format!("mean test-OOD Energy AUROC {:.4}, FPR95 {:.4}", m.auroc, m.fpr95));
        }
    }
}

fn path_row(ui: &mut egui::Ui, label: &str, value: &mut String) -> bool {
    let mut browse = false;
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(egui::TextEdit::singleline(value).desired_width(180.0)).labelled_by(l.id);
        browse = ui.small_button("...").on_hover_text(format!("Choose the {label} file")).clicked();
    });
    browse
}

fn data(app: &mut UnleashApp, ui: &mut egui::Ui) {
    ui.heading("Data");
    ui.label("ID sets (IDX, CIFAR .bin, image folder):");
    let ctx = ui.ctx().clone();
    if path_row(ui, "ID train", &mut app.state.config.data.train) {
        app.open_dialog(DialogPurpose::TrainSet, &ctx);
    }
    if path_row(ui, "ID test", &mut app.state.config.data.test) {
        app.open_dialog(DialogPurpose::TestSet, &ctx);
    }
    if path_row(ui, "Validation OOD", &mut app.state.config.data.val_ood) {
        app.open_dialog(DialogPurpose::ValSet, &ctx);
    }
    ui.label("Test OOD sets (reported only):");
    let mut remove = None;
    for (i, o) in app.state.config.data.ood.iter().enumerate() {
        ui.horizontal(|ui| {
            if ui.small_button("x").on_hover_text(format!("Remove {o}")).clicked() {
                remove = Some(i);
            }
            let short = std::path::Path::new(o).file_name().map_or(o.clone(), |f| f.to_string_lossy().to_string());
            ui.label(short).on_hover_text(o);
        });
    }
    if let Some(i) = remove {
        app.state.config.data.ood.remove(i);
    }
    ui.horizontal(|ui| {
        if ui.small_button("Add file...").clicked() {
            app.open_dialog(DialogPurpose::AddOod, &ctx);
        }
        if ui.small_button("Add folder...").clicked() {
            app.open_dialog(DialogPurpose::AddOodFolder, &ctx);
        }
        if ui.small_button("+ Gaussian").clicked() {
            app.state.config.data.ood.push("gaussian".into());
        }
        if ui.small_button("+ uniform").clicked() {
            app.state.config.data.ood.push("uniform".into());
        }
    });
    let mut limit = app.state.config.data.train_limit.unwrap_or(0);
    ui.horizontal(|ui| {
        let l = ui.label("Train samples (0 = all)");
        ui.add(egui::DragValue::new(&mut limit).range(0..=1_000_000).speed(100)).labelled_by(l.id);
    });
    app.state.config.data.train_limit = (limit > 0).then_some(limit);
}

fn recipe(app: &mut UnleashApp, ui: &mut egui::Ui) {
    ui.heading("Model & recipe");
    let before = app.state.config.train.device;
    let t = &mut app.state.config.train;
    egui::Grid::new("recipe").num_columns(2).show(ui, |ui| {
        ui.label("");
        egui::ComboBox::from_label("Model").selected_text(t.model.key()).show_ui(ui, |ui| {
            for m in ModelKind::ALL {
                ui.selectable_value(&mut t.model, m, m.key());
            }
        });
        ui.end_row();
        let num = |ui: &mut egui::Ui, name: &str, w: egui::DragValue| {
            let l = ui.label(name);
            ui.add(w).labelled_by(l.id);
            ui.end_row();
        };
        num(ui, "Epochs", egui::DragValue::new(&mut t.epochs).range(1..=1000));
        num(ui, "Learning rate", egui::DragValue::new(&mut t.lr).range(1e-5..=10.0).speed(0.001).max_decimals(5));
        num(ui, "Batch size", egui::DragValue::new(&mut t.batch_size).range(1..=8192));
        num(ui, "Seed", egui::DragValue::new(&mut t.seed));
        ui.label("");
        egui::ComboBox::from_label("Device").selected_text(format!("{:?}", t.device).to_lowercase()).show_ui(ui, |ui| {
            ui.selectable_value(&mut t.device, DeviceChoice::Auto, "auto");
            ui.selectable_value(&mut t.device, DeviceChoice::Gpu, "gpu");
            ui.selectable_value(&mut t.device, DeviceChoice::Cpu, "cpu");
        });
        ui.end_row();
    });
    let now = app.state.config.train.device;
    if now != before {
        app.state.device = "device: probing...".into();
        app.send(crate::worker::Command::ProbeDevice(now));
    }
    ui.horizontal(|ui| {
        let l = ui.label("Output folder");
        ui.add(egui::TextEdit::singleline(&mut app.state.out_dir).desired_width(180.0)).labelled_by(l.id);
    });
}
