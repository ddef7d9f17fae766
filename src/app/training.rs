//! Live curves: train/test loss, ID accuracy, and OOD AUROC and FPR95 per score per OOD set
//! (legend entries toggle lines), the best-by-validation epoch marked, fine-tune phases shaded.

use super::palette;
use super::state::RunView;
use crate::ood::{Metrics, Score};
use crate::run::{best_by_validation, phase_blocks, EpochRecord, Phase};
use eframe::egui;
use egui_plot::{GridInput, GridMark, Line, Plot, PlotPoints, PlotUi, Span, VLine};

const SCORE_COLORS: [egui::Color32; 3] = [egui::Color32::from_rgb(90, 160, 230), egui::Color32::from_rgb(230, 150, 60), egui::Color32::from_rgb(80, 190, 120)];

/// Which scores the OOD curves show (MSP, MaxLogit, Energy, ...) and whether per-set lines too.
pub struct TrainingPanel {
    pub plot_scores: [bool; Score::ALL.len()],
    pub plot_per_set: bool,
}

impl Default for TrainingPanel {
    fn default() -> TrainingPanel {
        TrainingPanel { plot_scores: Score::ALL.map(|s| s == Score::Energy), plot_per_set: true }
    }
}

impl TrainingPanel {
    /// The curves; nothing here asks the worker for anything.
    pub fn ui(&mut self, ui: &mut egui::Ui, view: &RunView) {
        show(self, ui, view);
    }
}

fn show(panel: &mut TrainingPanel, ui: &mut egui::Ui, view: &RunView) {
    let records = &view.records;
    if records.is_empty() {
        ui.label("No epochs yet: press Start (left) to train on the selected data, or File > Open run.");
        if let Some(b) = &view.batch {
            ui.label(format!("first epoch running: batch {}/{}, loss {:.4}", b.batch, b.batches, b.loss));
        }
        return;
    }
    let best = best_by_validation(records, Score::Energy, Some(Phase::Base));
    if let Some(b) = best {
        let r = &records[b - 1];
        let last = records.last().expect("non-empty");
        ui.label(format!(
            "Best epoch by validation ({} Energy AUROC): {b} - ID acc {:.4}, mean test-OOD Energy AUROC {:.4}  |  latest epoch {}: ID acc {:.4}, AUROC {:.4}",
            r.val_name,
            r.test_acc,
            energy(r).auroc,
            last.epoch,
            last.test_acc,
            energy(last).auroc
        ));
    }
    ui.horizontal_wrapped(|ui| {
        ui.label("OOD curves for:");
        // The scores the run has (ODIN only when it is on; runs from before the detectors have three).
        let has = |s: &Score| records.last().is_none_or(|r| r.ood_mean.contains_key(s));
        for (k, s) in Score::ALL.iter().enumerate().filter(|(_, s)| has(s)) {
            ui.checkbox(&mut panel.plot_scores[k], s.name());
        }
        ui.checkbox(&mut panel.plot_per_set, "each OOD set (thin lines)");
    });
    let shown: Vec<Score> = Score::ALL.iter().zip(panel.plot_scores).filter(|(_, on)| *on).map(|(s, _)| *s).collect();
    let per_set = panel.plot_per_set;
    let h = ((ui.available_height() - 40.0) / 2.0).max(150.0);
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    ui.horizontal(|ui| {
        let gamma_color = egui::Color32::from_rgb(220, 60, 50);
        let legend = [("train loss", SCORE_COLORS[0]), ("train loss (eval pass)", SCORE_COLORS[2]), ("ID test loss", SCORE_COLORS[1]), ("gamma", gamma_color)];
        curve_plot(ui, "loss", "Loss", &legend, w, h, records, best, |pu, recs| {
            series(pu, "train loss", recs, |r| r.train_loss, SCORE_COLORS[0], |l| l);
            series(pu, "train loss (eval pass)", recs, |r| r.train_eval_loss, SCORE_COLORS[2], |l| l);
            series(pu, "ID test loss", recs, |r| r.test_loss, SCORE_COLORS[1], |l| l);
            if let Some(g) = recs.iter().rev().find_map(|r| r.gamma) {
                pu.hline(egui_plot::HLine::new("gamma", g).color(gamma_color));
            }
        });
        curve_plot(ui, "accuracy", "ID accuracy", &[("train accuracy", SCORE_COLORS[0]), ("ID test accuracy", SCORE_COLORS[1])], w, h, records, best, |pu, recs| {
            series(pu, "train accuracy", recs, |r| r.train_acc, SCORE_COLORS[0], |l| l);
            series(pu, "ID test accuracy", recs, |r| r.test_acc, SCORE_COLORS[1], |l| l);
        });
    });
    ood_legend(ui, records, &shown, per_set);
    ui.horizontal(|ui| {
        curve_plot(ui, "auroc", "OOD AUROC (test sets and validation)", &[], w, h, records, best, |pu, recs| metric_lines(pu, recs, &shown, per_set, |m| m.auroc));
        curve_plot(ui, "fpr95", "OOD FPR95 (lower is better)", &[], w, h, records, best, |pu, recs| metric_lines(pu, recs, &shown, per_set, |m| m.fpr95));
    });
}

fn energy(r: &EpochRecord) -> Metrics {
    r.ood_mean.get(&Score::Energy).copied().unwrap_or(Metrics { auroc: f64::NAN, fpr95: f64::NAN, aupr_in: f64::NAN, aupr_out: f64::NAN })
}

/// A line with small markers (so that a single epoch already shows), styled by `style`.
fn series(pu: &mut PlotUi, name: &str, recs: &[EpochRecord], f: impl Fn(&EpochRecord) -> f64, color: egui::Color32, style: impl FnOnce(Line<'static>) -> Line<'static>) {
    let points: Vec<[f64; 2]> = recs.iter().map(|r| [r.epoch as f64, f(r)]).collect();
    pu.line(style(Line::new(name.to_string(), PlotPoints::from(points.clone())).color(color)));
    pu.points(egui_plot::Points::new(name.to_string(), points).radius(2.0).color(color));
}

/// Each OOD set in its own color (the same in every view), each score in its own line style; the
/// mean over the test sets thick and grey, the validation set in its own color.
fn metric_lines(pu: &mut PlotUi, recs: &[EpochRecord], shown: &[Score], per_set: bool, f: fn(&Metrics) -> f64) {
    let sets: Vec<String> = if per_set { recs.last().map(|r| r.ood.keys().cloned().collect()).unwrap_or_default() } else { Vec::new() };
    for &score in shown {
        let style = palette::score_style(score);
        series(pu, &format!("{} mean", score.name()), recs, |r| r.ood_mean.get(&score).map_or(f64::NAN, f), palette::MEAN_COLOR, |l| l.width(2.5).style(style));
        for (i, set) in sets.iter().enumerate() {
            series(pu, &format!("{} {set}", score.name()), recs, |r| r.ood.get(set).and_then(|m| m.get(&score)).map_or(f64::NAN, f), palette::set_color(i), |l| l.width(1.2).style(style));
        }
        let val = recs.last().map(|r| r.val_name.clone()).unwrap_or_default();
        series(pu, &format!("{} {val} (validation)", score.name()), recs, |r| r.val.get(&score).map_or(f64::NAN, f), palette::VALIDATION_COLOR, |l| l.width(1.5).style(style));
    }
}

/// The legend of the OOD plots, above them (a legend inside would cover curves).
fn ood_legend(ui: &mut egui::Ui, recs: &[EpochRecord], shown: &[Score], per_set: bool) {
    let mut entries = vec![("mean of the test sets".to_string(), palette::MEAN_COLOR)];
    if per_set {
        let names = recs.last().map(|r| r.ood.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        entries.extend(names.into_iter().enumerate().map(|(i, n)| (n, palette::set_color(i))));
    }
    let val = recs.last().map(|r| format!("{} (validation)", r.val_name)).unwrap_or_default();
    entries.push((val, palette::VALIDATION_COLOR));
    palette::legend_row(ui, &entries, shown);
}

/// Grid lines at whole epochs, spaced so that about eight carry labels at any zoom.
fn epoch_grid(input: GridInput) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    let span = (hi - lo).max(1.0);
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0].into_iter().find(|s| span / s <= 8.0).unwrap_or(1000.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| GridMark { value: k as f64 * step, step_size: step }).collect()
}

#[allow(clippy::too_many_arguments)]
fn curve_plot(ui: &mut egui::Ui, id: &str, title: &str, legend: &[(&str, egui::Color32)], w: f32, h: f32, recs: &[EpochRecord], best: Option<usize>, draw: impl FnOnce(&mut PlotUi, &[EpochRecord])) {
    ui.vertical(|ui| {
        ui.label(egui::RichText::new(title).strong());
        if !legend.is_empty() {
            let entries: Vec<(String, egui::Color32)> = legend.iter().map(|(n, c)| (n.to_string(), *c)).collect();
            palette::legend_row(ui, &entries, &[]);
        }
        let resp = Plot::new(id)
            .width(w)
            .height(h - 20.0)
            .x_axis_label("epoch")
            .x_grid_spacer(epoch_grid)
            .y_axis_min_width(40.0)
            .show(ui, |pu| {
                for (label, _, block) in phase_blocks(recs) {
                    let (Some(first), Some(last)) = (block.first(), block.last()) else { continue };
                    if first.phase != Phase::Base {
                        let color = match first.phase {
                            Phase::Um => egui::Color32::from_rgba_unmultiplied(60, 160, 90, 40),
                            Phase::Umap => egui::Color32::from_rgba_unmultiplied(170, 60, 170, 40),
                            _ => egui::Color32::from_rgba_unmultiplied(200, 140, 40, 35),
                        };
                        pu.span(Span::new(label, first.epoch as f64 - 0.5..=last.epoch as f64 + 0.5).fill(color));
                    }
                }
                if let Some(b) = best {
                    pu.vline(VLine::new("best epoch (validation)", b as f64).color(egui::Color32::from_rgb(220, 60, 50)));
                }
                draw(pu, recs);
            });
        resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, format!("plot: {title}")));
    });
}
