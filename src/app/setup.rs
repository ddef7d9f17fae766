//! The left panel: data sets, model and recipe, device, output folder, and the job controls.

use super::state::RunView;
use super::{Action, DialogPurpose};
use crate::config::{DeviceChoice, ExperimentConfig, ModelKind};
use crate::events::format_secs;
use crate::worker::Command;
use eframe::egui;

/// The experiment the next Start trains, as the user edits it (an opened run sets it to its own).
pub struct SetupPanel {
    pub config: ExperimentConfig,
    /// The run folder Start writes.
    pub out_dir: String,
}

impl SetupPanel {
    pub fn new(config: ExperimentConfig) -> SetupPanel {
        SetupPanel { config, out_dir: default_out_dir() }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, view: &RunView) -> Option<Action> {
        ui.heading("Run");
        let mut asked = controls(ui, view, &self.out_dir);
        if !view.records.is_empty() {
            ui.label(egui::RichText::new(start_hint(&self.out_dir)).weak());
        }
        ui.separator();
        ui.add_enabled_ui(!view.is_busy(), |ui| {
            asked = asked.take().or(self.data(ui));
            ui.separator();
            asked = asked.take().or(self.recipe(ui));
        });
        asked
    }
}

/// `runs/app-<seconds>` under the working directory, as an absolute path: the field shows where
/// the run goes, whatever directory a file dialog or a later Start is in.
fn default_out_dir() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    absolute(&format!("runs/app-{secs}"))
}

/// `path` made absolute against the working directory (left as it is if that fails).
pub fn absolute(path: &str) -> String {
    std::path::absolute(path).map_or_else(|_| path.to_string(), |p| p.display().to_string())
}

/// What Start does, said beside it once a run is open: a fresh model, in a new folder, the open
/// run left as it is.
fn start_hint(out_dir: &str) -> String {
    format!("Start new run: trains a fresh model from scratch with the setup below, into {out_dir} (a numbered folder beside it if that one holds a run). The open run stays as it is.")
}

/// The validation OOD field's help: what a `patch-shuffle:COUNT:SEED` spec means.
const PATCH_SHUFFLE_HELP: &str = "patch-shuffle:COUNT:SEED makes the validation OOD set from held-out ID images: COUNT images, each cut into a 4x4 grid of patches put back in a random order drawn from SEED. It keeps the ID pixel statistics but not the shapes, and shares no family with the test OOD sets; it picks the best epoch and gamma, never a test set. A file or folder path works here too.";

fn controls(ui: &mut egui::Ui, st: &RunView, out_dir: &str) -> Option<Action> {
    let mut asked = None;
    let has_run = !st.records.is_empty();
    ui.horizontal(|ui| {
        let busy = st.is_busy();
        let hint = if has_run { start_hint(out_dir) } else { format!("Train a fresh model with this setup, into {out_dir}") };
        if ui.add_enabled(!busy, egui::Button::new(if has_run { "Start new run" } else { "Start" })).on_hover_text(hint).clicked() {
            asked = Some(Action::Start);
        }
        if st.paused {
            if ui.add_enabled(busy, egui::Button::new("Resume")).clicked() {
                asked = Some(Action::Pause(false));
            }
        } else if ui.add_enabled(busy, egui::Button::new("Pause")).clicked() {
            asked = Some(Action::Pause(true));
        }
        if ui.add_enabled(busy, egui::Button::new("Stop")).on_hover_text("Stop after the current batch; finished epochs stay on disk").clicked() {
            asked = Some(Action::Stop);
        }
    });
    if let (Some((done, planned)), Some(dir), false) = (st.resumable(), st.run_dir.clone(), st.is_busy()) {
        let text = format!("Resume training ({done} of {planned} epochs done)");
        if ui.button(text).on_hover_text("Continue this run's base training from its last complete epoch, to the numbers of an uninterrupted run").clicked() {
            asked = Some(Action::Send(Command::Resume(dir)));
        }
    }
    if let Some(b) = st.batch.filter(|_| st.is_busy() && st.evaluating.is_none()) {
        let frac = b.batch as f32 / b.batches.max(1) as f32;
        ui.add(egui::ProgressBar::new(frac).text(format!("{} epoch {}/{} - batch {}/{}", b.phase.name(), b.phase_epoch, b.phase_epochs, b.batch, b.batches)));
        ui.label(format!("loss {:.4} | {:.0} samples/s | ETA {}", b.loss, b.samples_per_sec, format_secs(b.eta_secs)));
    } else if let Some((set, done, total)) = &st.evaluating {
        ui.add(egui::ProgressBar::new(*done as f32 / (*total).max(1) as f32).text(format!("evaluating {set}: {done}/{total}")));
    } else if let Some(what) = &st.busy {
        ui.label(format!("working: {}", st.job_text(what)));
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
    asked
}

/// A path field with its label and a browse button; hovering the field shows the whole path
/// (the field is narrower than most), then `help` if any.
fn path_row(ui: &mut egui::Ui, label: &str, value: &mut String, help: Option<&str>) -> bool {
    let mut browse = false;
    ui.horizontal(|ui| {
        let l = ui.label(label);
        let hover = match help {
            Some(help) => format!("{value}\n\n{help}"),
            None => value.clone(),
        };
        ui.add(egui::TextEdit::singleline(value).desired_width(180.0)).labelled_by(l.id).on_hover_text(hover);
        browse = ui.small_button("...").on_hover_text(format!("Choose the {label} file")).clicked();
        if let Some(help) = help {
            ui.label("(?)").on_hover_text(help);
        }
    });
    browse
}

impl SetupPanel {
    fn data(&mut self, ui: &mut egui::Ui) -> Option<Action> {
        let mut asked = None;
        ui.heading("Data");
        ui.label("ID sets (IDX, CIFAR .bin, image folder):");
        if path_row(ui, "ID train", &mut self.config.data.train, None) {
            asked = Some(Action::Dialog(DialogPurpose::TrainSet));
        }
        if path_row(ui, "ID test", &mut self.config.data.test, None) {
            asked = Some(Action::Dialog(DialogPurpose::TestSet));
        }
        let help = self.config.data.val_ood.starts_with("patch-shuffle").then_some(PATCH_SHUFFLE_HELP);
        if path_row(ui, "Validation OOD", &mut self.config.data.val_ood, help) {
            asked = Some(Action::Dialog(DialogPurpose::ValSet));
        }
        ui.label("Test OOD sets (reported only):");
        let mut remove = None;
        for (i, o) in self.config.data.ood.iter().enumerate() {
            ui.horizontal(|ui| {
                if ui.small_button("x").on_hover_text(format!("Remove {o}")).clicked() {
                    remove = Some(i);
                }
                let short = std::path::Path::new(o).file_name().map_or(o.clone(), |f| f.to_string_lossy().to_string());
                ui.label(short).on_hover_text(o);
            });
        }
        if let Some(i) = remove {
            self.config.data.ood.remove(i);
        }
        ui.horizontal(|ui| {
            if ui.small_button("Add file...").clicked() {
                asked = Some(Action::Dialog(DialogPurpose::AddOod));
            }
            if ui.small_button("Add folder...").clicked() {
                asked = Some(Action::Dialog(DialogPurpose::AddOodFolder));
            }
            if ui.small_button("+ Gaussian").clicked() {
                self.config.data.ood.push("gaussian".into());
            }
            if ui.small_button("+ uniform").clicked() {
                self.config.data.ood.push("uniform".into());
            }
        });
        let mut limit = self.config.data.train_limit.unwrap_or(0);
        ui.horizontal(|ui| {
            let l = ui.label("Train samples (0 = all)");
            ui.add(egui::DragValue::new(&mut limit).range(0..=1_000_000).speed(100)).labelled_by(l.id);
        });
        self.config.data.train_limit = (limit > 0).then_some(limit);
        asked
    }

    fn recipe(&mut self, ui: &mut egui::Ui) -> Option<Action> {
        ui.heading("Model & recipe");
        let before = self.config.train.device;
        let t = &mut self.config.train;
        egui::Grid::new("recipe").num_columns(2).show(ui, |ui| {
            // Every row: its label on the left, its field on the right.
            let l = ui.label("Model");
            egui::ComboBox::from_id_salt("model").selected_text(t.model.key()).show_ui(ui, |ui| {
                for m in ModelKind::ALL {
                    ui.selectable_value(&mut t.model, m, m.key());
                }
            })
            .response
            .labelled_by(l.id);
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
            let l = ui.label("Device");
            egui::ComboBox::from_id_salt("device")
                .selected_text(format!("{:?}", t.device).to_lowercase())
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut t.device, DeviceChoice::Auto, "auto");
                    ui.selectable_value(&mut t.device, DeviceChoice::Gpu, "gpu");
                    ui.selectable_value(&mut t.device, DeviceChoice::Cpu, "cpu");
                })
                .response
                .labelled_by(l.id);
            ui.end_row();
        });
        let now = self.config.train.device;
        let asked = (now != before).then_some(Action::Send(Command::ProbeDevice(now)));
        ui.horizontal(|ui| {
            let l = ui.label("Output folder");
            let hover = self.out_dir.clone();
            ui.add(egui::TextEdit::singleline(&mut self.out_dir).desired_width(180.0)).labelled_by(l.id).on_hover_text(hover);
        });
        asked
    }
}
