//! Live curves: train/test loss, ID accuracy, and OOD AUROC and FPR95 per score per OOD set
//! (legend entries toggle lines), the best-by-validation epoch marked, fine-tune phases shaded.

use super::UnleashApp;
use crate::ood::{Metrics, Score};
use crate::plot::phase_blocks;
use crate::run::{best_by_validation, EpochRecord, Phase};
use eframe::egui;
use egui_plot::{Corner, Legend, Line, Plot, PlotPoints, PlotUi, Span, VLine};

const SCORE_COLORS: [egui::Color32; 3] = [egui::Color32::from_rgb(90, 160, 230), egui::Color32::from_rgb(230, 150, 60), egui::Color32::from_rgb(80, 190, 120)];

pub fn show(app: &mut UnleashApp, ui: &mut egui::Ui) {
    let records = &app.state.records;
    if records.is_empty() {
        ui.label("No epochs yet: press Start (left) to train on the selected data, or File > Open run.");
        if let Some(b) = &app.state.batch {
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
    ui.horizontal(|ui| {
        ui.label("OOD curves for:");
        for (k, s) in Score::ALL.iter().enumerate() {
            ui.checkbox(&mut app.state.plot_scores[k], s.name());
        }
        ui.checkbox(&mut app.state.plot_per_set, "each OOD set (thin lines)");
    });
    let shown: Vec<Score> = Score::ALL.iter().zip(app.state.plot_scores).filter(|(_, on)| *on).map(|(s, _)| *s).collect();
    let per_set = app.state.plot_per_set;
    let records = &app.state.records;
    let h = ((ui.available_height() - 40.0) / 2.0).max(150.0);
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    ui.horizontal(|ui| {
        curve_plot(ui, "loss", "Loss", w, h, records, best, |pu, recs| {
            series(pu, "train loss", recs, |r| r.train_loss, SCORE_COLORS[0], |l| l);
            series(pu, "train loss (eval pass)", recs, |r| r.train_eval_loss, SCORE_COLORS[2], |l| l);
            series(pu, "ID test loss", recs, |r| r.test_loss, SCORE_COLORS[1], |l| l);
            if let Some(g) = recs.iter().rev().find_map(|r| r.gamma) {
                pu.hline(egui_plot::HLine::new("gamma", g).color(egui::Color32::from_rgb(220, 60, 50)));
            }
        });
        curve_plot(ui, "accuracy", "ID accuracy", w, h, records, best, |pu, recs| {
            series(pu, "train accuracy", recs, |r| r.train_acc, SCORE_COLORS[0], |l| l);
            series(pu, "ID test accuracy", recs, |r| r.test_acc, SCORE_COLORS[1], |l| l);
        });
    });
    ui.horizontal(|ui| {
        curve_plot(ui, "auroc", "OOD AUROC (test sets; dashed = validation)", w, h, records, best, |pu, recs| metric_lines(pu, recs, &shown, per_set, |m| m.auroc));
        curve_plot(ui, "fpr95", "OOD FPR95 (lower is better)", w, h, records, best, |pu, recs| metric_lines(pu, recs, &shown, per_set, |m| m.fpr95));
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

fn metric_lines(pu: &mut PlotUi, recs: &[EpochRecord], shown: &[Score], per_set: bool, f: fn(&Metrics) -> f64) {
    let sets: Vec<String> = if per_set { recs.last().map(|r| r.ood.keys().cloned().collect()).unwrap_or_default() } else { Vec::new() };
    for score in shown {
        let color = SCORE_COLORS[Score::ALL.iter().position(|s| s == score).unwrap_or(0)];
        series(pu, &format!("{} mean", score.name()), recs, |r| r.ood_mean.get(score).map_or(f64::NAN, f), color, |l| l.width(2.5));
        for set in &sets {
            series(pu, &format!("{} {set}", score.name()), recs, |r| r.ood.get(set).and_then(|m| m.get(score)).map_or(f64::NAN, f), color.gamma_multiply(0.55), |l| l.width(1.0));
        }
        let val = recs.last().map(|r| r.val_name.clone()).unwrap_or_default();
        series(pu, &format!("{} {val} (validation)", score.name()), recs, |r| r.val.get(score).map_or(f64::NAN, f), color, |l| l.style(egui_plot::LineStyle::dashed_loose()));
    }
}

#[allow(clippy::too_many_arguments)]
fn curve_plot(ui: &mut egui::Ui, id: &str, title: &str, w: f32, h: f32, recs: &[EpochRecord], best: Option<usize>, draw: impl FnOnce(&mut PlotUi, &[EpochRecord])) {
    ui.vertical(|ui| {
        ui.label(egui::RichText::new(title).strong());
        let resp = Plot::new(id)
            .width(w)
            .height(h - 20.0)
            .legend(Legend::default().position(Corner::LeftBottom).background_alpha(0.6))
            .x_axis_label("epoch")
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
