//! One look for the OOD sets and scores in every view: each set has its own color (by its place
//! among the run's sets, so it is the same in every plot), each score its own line style, and
//! legends live outside the plots so they never cover data.

use crate::ood::Score;
use crate::run::Phase;
use eframe::egui::{self, Color32};
use egui_plot::LineStyle;

/// Distinct on both the dark and the light theme.
const SET_COLORS: [Color32; 8] = [
    Color32::from_rgb(230, 120, 30),
    Color32::from_rgb(60, 140, 230),
    Color32::from_rgb(60, 180, 100),
    Color32::from_rgb(200, 70, 200),
    Color32::from_rgb(210, 190, 40),
    Color32::from_rgb(40, 190, 200),
    Color32::from_rgb(220, 70, 70),
    Color32::from_rgb(150, 110, 70),
];

/// The mean over the test sets and the validation set have their own, neutral, colors.
pub const MEAN_COLOR: Color32 = Color32::from_rgb(150, 150, 150);
pub const VALIDATION_COLOR: Color32 = Color32::from_rgb(235, 235, 235);

/// The marker lines, each its own color, none a stage's, a set's or another marker's: gamma (the
/// loss constraint) red, the best epoch by validation cyan, the mask slider's ratio gold.
pub const GAMMA_COLOR: Color32 = Color32::from_rgb(220, 60, 50);
pub const BEST_EPOCH_COLOR: Color32 = Color32::from_rgb(0, 215, 215);
pub const SLIDER_COLOR: Color32 = Color32::from_rgb(255, 200, 0);

/// The base training's stages: "final" in the blue of the base training's curves, "best epoch" in
/// the cyan of the best-epoch marker. The fine-tunes' stages take their branch's color
/// ([`branch_color`]).
pub const FINAL_COLOR: Color32 = Color32::from_rgb(90, 160, 230);
pub const BEST_STAGE_COLOR: Color32 = BEST_EPOCH_COLOR;

/// The ID test set in the score histograms (an OOD set takes its [`set_color`]).
pub const ID_COLOR: Color32 = Color32::from_rgb(200, 200, 200);

/// The color of the `index`-th test OOD set of a run (sets sorted by name, as records hold them).
pub fn set_color(index: usize) -> Color32 {
    SET_COLORS[index % SET_COLORS.len()]
}

/// A hue per fine-tune (UM pink, UMAP violet, CE control yellow), in shades so that the `k`-th
/// branch of a phase in a run has its own color. None of them is the blue, orange or green of the
/// base training's curves and of a run's first three OOD sets.
pub fn branch_color(phase: Phase, k: usize) -> Color32 {
    const UM: [Color32; 3] = [Color32::from_rgb(240, 80, 160), Color32::from_rgb(255, 160, 210), Color32::from_rgb(180, 40, 110)];
    const UMAP: [Color32; 3] = [Color32::from_rgb(160, 110, 255), Color32::from_rgb(205, 170, 255), Color32::from_rgb(110, 70, 210)];
    const CONTROL: [Color32; 3] = [Color32::from_rgb(240, 225, 60), Color32::from_rgb(250, 245, 160), Color32::from_rgb(190, 170, 30)];
    let shades = match phase {
        Phase::Um => &UM,
        Phase::Umap => &UMAP,
        Phase::Control | Phase::Base => &CONTROL,
    };
    shades[k % shades.len()]
}

/// Energy solid, MaxLogit dashed, MSP dotted; the feature detectors and ODIN get the other dash
/// and dot spacings (the legend above each plot names them).
pub fn score_style(score: Score) -> LineStyle {
    match score {
        Score::Energy => LineStyle::Solid,
        Score::MaxLogit => LineStyle::dashed_loose(),
        Score::Msp => LineStyle::dotted_loose(),
        Score::Mahalanobis => LineStyle::dashed_dense(),
        Score::Knn => LineStyle::dotted_dense(),
        Score::Vim => LineStyle::Dashed { length: 20.0 },
        Score::React => LineStyle::Dotted { spacing: 12.0 },
        Score::Ash => LineStyle::Dashed { length: 3.0 },
        Score::Dice => LineStyle::Dotted { spacing: 3.0 },
        Score::Odin => LineStyle::Dashed { length: 30.0 },
    }
}

fn style_name(score: Score) -> &'static str {
    match score {
        Score::Energy => "solid",
        Score::MaxLogit => "dashed",
        Score::Msp => "dotted",
        Score::Mahalanobis => "dense dashes",
        Score::Knn => "dense dots",
        Score::Vim => "long dashes",
        Score::React => "sparse dots",
        Score::Ash => "short dashes",
        Score::Dice => "fine dots",
        Score::Odin => "longest dashes",
    }
}

/// A legend row drawn above a plot: a colored swatch per set, then what each line style means.
pub fn legend_row(ui: &mut egui::Ui, sets: &[(String, Color32)], scores: &[Score]) {
    ui.horizontal_wrapped(|ui| {
        for (name, color) in sets {
            swatch(ui, *color);
            ui.label(legend_text(name));
        }
        if !scores.is_empty() {
            ui.separator();
            let styles: Vec<String> = scores.iter().map(|s| format!("{} {}", style_name(*s), s.name())).collect();
            ui.label(legend_text(&styles.join(", ")));
        }
    });
}

/// A legend row of keys drawn as the lines are: (name, color, style, width).
pub fn key_row(ui: &mut egui::Ui, keys: &[(String, Color32, LineStyle, f32)]) {
    ui.horizontal_wrapped(|ui| {
        for (name, color, style, width) in keys {
            styled_swatch(ui, *color, *style, *width);
            ui.label(legend_text(name));
        }
    });
}

/// Legend text: the body size and the strong text color, readable at 1x on the dark theme (the
/// small, weak style was about 9 px of grey on near-black).
fn legend_text(text: &str) -> egui::RichText {
    egui::RichText::new(text).size(13.0).strong()
}

/// A short thick line in `color`, as a legend key.
fn swatch(ui: &mut egui::Ui, color: Color32) {
    styled_swatch(ui, color, LineStyle::Solid, 3.0);
}

/// A short line in `color`, `style` and `width`, as a legend key.
fn styled_swatch(ui: &mut egui::Ui, color: Color32, style: LineStyle, width: f32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(24.0, 10.0), egui::Sense::hover());
    let ends = [rect.left_center(), rect.right_center()];
    let painter = ui.painter();
    match style {
        LineStyle::Solid => {
            painter.line_segment(ends, egui::Stroke::new(width, color));
        }
        LineStyle::Dashed { length } => {
            let length = length.min(8.0);
            painter.extend(egui::Shape::dashed_line(&ends, egui::Stroke::new(width, color), length, length * 0.618));
        }
        LineStyle::Dotted { spacing } => {
            painter.extend(egui::Shape::dotted_line(&ends, color, spacing.min(6.0), width.max(1.0)));
        }
    }
}
