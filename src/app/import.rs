//! File > Import model...: a checkpoint trained elsewhere (PyTorch `.pt`/`.pth`/`.ckpt`, or
//! safetensors) becomes the first epoch of a new run, on the data and architecture of the Setup
//! panel, as `unleash import` does. The window only gathers the choices; the worker imports.

use crate::config::ExperimentConfig;
use crate::import::{parse_normalization, ImportSpec, KeyMap};
use eframe::egui;
use std::path::PathBuf;

/// The key maps offered, with what each is for.
const KEY_MAPS: [(&str, &str); 3] = [
    ("unleash", "unleash's own names (a model `unleash export` wrote)"),
    ("openood", "OpenOOD's ResNet18_32x32 (layer1.0.conv1, shortcut.0, fc)"),
    ("torchvision", "torchvision ResNet names with a CIFAR stem (downsample.0, fc)"),
];

/// The import's choices while its window is open.
pub struct ImportPanel {
    pub checkpoint: String,
    pub key_map: String,
    /// `data`, `cifar10`, `imagenet`, `MEAN,STD` or per-channel means then stds.
    pub normalize: String,
    /// The new run folder.
    pub out_dir: String,
    /// Why the last Import was refused (a bad normalisation), shown in the window.
    pub problem: Option<String>,
}

/// What the window asks for.
pub enum ImportAnswer {
    Import { config: Box<ExperimentConfig>, spec: ImportSpec, out: PathBuf },
    Cancel,
}

impl ImportPanel {
    /// For `checkpoint`, into a folder named after it beside the Setup panel's output folder.
    pub fn new(checkpoint: PathBuf, setup_out: &str) -> ImportPanel {
        let stem = checkpoint.file_stem().map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
        let out = PathBuf::from(setup_out).parent().map_or_else(|| PathBuf::from(format!("imported-{stem}")), |p| p.join(format!("imported-{stem}")));
        ImportPanel { checkpoint: checkpoint.display().to_string(), key_map: "unleash".into(), normalize: "data".into(), out_dir: out.display().to_string(), problem: None }
    }

    /// Draws the window; `setup` is the experiment whose data and architecture the import uses.
    pub fn ui(&mut self, ctx: &egui::Context, setup: &ExperimentConfig) -> Option<ImportAnswer> {
        let mut answer = None;
        egui::Window::new("Import model").collapsible(false).resizable(false).anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0]).show(ctx, |ui| {
            ui.label("The checkpoint becomes epoch 1 of a new run, scored on every set as an epoch is; the mask explorer, UM, UMAP and the control then work on it.");
            ui.label(format!("Architecture and data: the Setup panel's ({}, training set {}).", setup.train.model.key(), setup.data.train));
            egui::Grid::new("import_choices").num_columns(2).show(ui, |ui| {
                ui.label("checkpoint");
                ui.add(egui::TextEdit::singleline(&mut self.checkpoint).desired_width(480.0)).widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, "checkpoint"));
                ui.end_row();
                ui.label("key map");
                egui::ComboBox::from_id_salt("import_key_map").selected_text(self.key_map.clone()).show_ui(ui, |ui| {
                    for (key, what) in KEY_MAPS {
                        ui.selectable_value(&mut self.key_map, key.to_string(), key).on_hover_text(what);
                    }
                });
                ui.end_row();
                ui.label("normalize").on_hover_text("data: the training set's own mean and std (as unleash trains); cifar10 or imagenet: those presets; or MEAN,STD, or the means of every channel then their stds");
                ui.add(egui::TextEdit::singleline(&mut self.normalize).desired_width(240.0)).widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, "normalize"));
                ui.end_row();
                ui.label("new run folder");
                ui.add(egui::TextEdit::singleline(&mut self.out_dir).desired_width(480.0)).widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, "new run folder"));
                ui.end_row();
            });
            if let Some(p) = &self.problem {
                ui.colored_label(ui.visuals().error_fg_color, p);
            }
            ui.horizontal(|ui| {
                if ui.button("Import").clicked() {
                    answer = self.answer(setup);
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(ImportAnswer::Cancel);
                }
            });
        });
        answer
    }

    /// The import the choices describe, or None with the problem kept for the window.
    fn answer(&mut self, setup: &ExperimentConfig) -> Option<ImportAnswer> {
        let mut config = setup.clone();
        match parse_normalization(self.normalize.trim()) {
            Ok(n) => config.train.normalization = n,
            Err(e) => {
                self.problem = Some(e.to_string());
                return None;
            }
        }
        if self.checkpoint.trim().is_empty() || self.out_dir.trim().is_empty() {
            self.problem = Some("a checkpoint and a new run folder are needed".into());
            return None;
        }
        let spec = ImportSpec { model: PathBuf::from(self.checkpoint.trim()), key_map: KeyMap::parse(&self.key_map) };
        Some(ImportAnswer::Import { config: Box::new(config), spec, out: PathBuf::from(self.out_dir.trim()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_run_sits_beside_the_setup_folder_and_a_bad_normalisation_is_said() {
        let mut p = ImportPanel::new(PathBuf::from("/ckpt/resnet18_seed0.pt"), "/home/u/runs/run-1");
        assert_eq!(p.out_dir, "/home/u/runs/imported-resnet18_seed0");
        let setup = ExperimentConfig { data: crate::config::DataConfig::sample(), train: Default::default(), detectors: Default::default() };
        p.normalize = "0.5".into();
        assert!(p.answer(&setup).is_none());
        assert!(p.problem.as_deref().is_some_and(|e| e.contains("normalize")), "{:?}", p.problem);
        p.normalize = "cifar10".into();
        p.key_map = "openood".into();
        let Some(ImportAnswer::Import { config, spec, out }) = p.answer(&setup) else { panic!("an import") };
        assert_eq!(config.train.normalization.map(|n| n.mean.len()), Some(3));
        assert_eq!((spec.key_map, spec.model, out), (KeyMap::OpenOod, PathBuf::from("/ckpt/resnet18_seed0.pt"), PathBuf::from("/home/u/runs/imported-resnet18_seed0")));
    }
}
