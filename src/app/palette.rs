//! One look for the OOD sets and scores in every view: each set has its own color (by its place
//! among the run's sets, so it is the same in every plot), each score its own line style, and
//! legends live outside the plots so they never cover data.

use crate::ood::Score;
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

/// The color of the `index`-th test OOD set of a run (sets sorted by name, as records hold them).
pub fn set_color(index: usize) -> Color32 {
    SET_COLORS[index % SET_COLORS.len()]
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
            ui.label(egui::RichText::new(name).small());
        }
        if !scores.is_empty() {
            ui.separator();
            let styles: Vec<String> = scores.iter().map(|s| format!("{} {}", style_name(*s), s.name())).collect();
            ui.label(egui::RichText::new(styles.join(", ")).small().weak());
        }
    });
}

/// A short thick line in `color`, as a legend key.
fn swatch(ui: &mut egui::Ui, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(18.0, 10.0), egui::Sense::hover());
    ui.painter().line_segment([rect.left_center(), rect.right_center()], egui::Stroke::new(3.0, color));
}
