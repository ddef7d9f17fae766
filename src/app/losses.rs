//! Per-sample loss: a histogram of every training sample's loss at a chosen epoch with gamma drawn,
//! and a data map (mean confidence vs variability across epochs) where a click opens the sample.

use super::state::RunView;
use super::Action;
use eframe::egui;
use egui_plot::{Bar, BarChart, Legend, Plot, Points, VLine};

/// The epoch the histogram shows.
#[derive(Default)]
pub struct LossesPanel {
    /// 1-based; 0 = the latest.
    pub epoch: usize,
}

impl LossesPanel {
    /// `gamma` is UM's, from the mask explorer's choices (drawn on the histogram). A click on
    /// the data map asks to open the sample.
    pub fn ui(&mut self, ui: &mut egui::Ui, view: &RunView, gamma: Option<f64>) -> Option<Action> {
        show(self, ui, view, gamma)
    }
}

fn show(panel: &mut LossesPanel, ui: &mut egui::Ui, st: &RunView, gamma: Option<f64>) -> Option<Action> {
    let n_epochs = st.loss_rows.len();
    if n_epochs == 0 {
        ui.label("Per-sample losses appear after the first epoch.");
        return None;
    }
    if panel.epoch == 0 || panel.epoch > n_epochs {
        panel.epoch = n_epochs;
    }
    ui.horizontal(|ui| {
        ui.add(egui::Slider::new(&mut panel.epoch, 1..=n_epochs).text("epoch"));
        if let Some(r) = st.records.get(panel.epoch - 1) {
            ui.label(format!("{} phase; mean loss {:.4}", r.phase.name(), r.train_eval_loss));
        }
    });
    let row = st.loss_rows[panel.epoch - 1].clone();
    let mut asked = None;
    let atypical: std::collections::HashSet<usize> = st.mask_result.as_ref().map(|m| m.samples.iter().map(|a| a.index).collect()).unwrap_or_default();
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    let h = (ui.available_height() - 30.0).max(200.0);
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            ui.label(egui::RichText::new(format!("Loss of each of the {} training samples (log count)", row.len())).strong());
            let (bars, max, binned) = histogram(&row, 60);
            let resp = Plot::new("loss_hist").width(w).height(h - 20.0).legend(Legend::default()).x_axis_label("cross-entropy").y_axis_label("log10(1 + count)").show(ui, |pu| {
                pu.bar_chart(BarChart::new("samples", bars).color(egui::Color32::from_rgb(90, 160, 230)));
                if let Some(g) = gamma {
                    pu.vline(VLine::new(format!("gamma = {g:.4}"), g.min(max)).color(egui::Color32::from_rgb(220, 60, 50)).width(2.0));
                }
            });
            // What the bars hold, for screen readers and the kittests.
            let label = format!("plot: histogram of {binned} per-sample losses at epoch {}", panel.epoch);
            resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
        });
        ui.vertical(|ui| {
            ui.label(egui::RichText::new("Data map: mean confidence vs variability across epochs (click a point)").strong());
            let (all, picked) = data_map(&st.loss_rows, &atypical);
            let resp = Plot::new("data_map").width(w).height(h - 20.0).legend(Legend::default()).x_axis_label("variability (sd of p(true class))").y_axis_label("mean p(true class)").show(ui, |pu| {
                pu.points(Points::new("training samples", all.clone()).radius(1.5).color(egui::Color32::from_rgba_unmultiplied(90, 160, 230, 120)));
                if !picked.is_empty() {
                    pu.points(Points::new("atypical (current mask)", picked).radius(2.5).color(egui::Color32::from_rgb(220, 60, 50)));
                }
                pu.pointer_coordinate()
            });
            if resp.response.clicked() {
                if let Some(p) = resp.inner {
                    // Nearest point in screen space.
                    let to_screen = |q: [f64; 2]| resp.transform.position_from_point(&egui_plot::PlotPoint::new(q[0], q[1]));
                    let click = to_screen([p.x, p.y]);
                    let nearest = all.iter().enumerate().min_by(|a, b| to_screen(*a.1).distance(click).total_cmp(&to_screen(*b.1).distance(click)));
                    if let Some((i, q)) = nearest {
                        if to_screen(*q).distance(click) < 12.0 {
                            asked = Some(Action::ShowSample(i));
                        }
                    }
                }
            }
        });
    });
    asked
}

/// Bars over [0, max] (max = the 99.9th percentile, so one huge loss does not squash the rest);
/// heights are log10(1 + count) so the long tail stays visible. Also returns how many values the
/// bars count (the finite ones).
fn histogram(values: &[f32], bins: usize) -> (Vec<Bar>, f64, usize) {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f32::total_cmp);
    let max = f64::from(sorted.get(((sorted.len() as f64) * 0.999) as usize).copied().or(sorted.last().copied()).unwrap_or(1.0)).max(1e-3);
    let width = max / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in &sorted {
        let b = ((f64::from(v) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let bars = counts.iter().enumerate().map(|(i, &c)| Bar::new((i as f64 + 0.5) * width, (1.0 + c as f64).log10()).width(width)).collect();
    (bars, max, counts.iter().sum())
}

/// (variability, mean confidence) per sample, and the atypical samples' points.
fn data_map(rows: &[std::sync::Arc<Vec<f32>>], atypical: &std::collections::HashSet<usize>) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let n = rows.first().map_or(0, |r| r.len());
    let e = rows.len() as f64;
    let mut all = Vec::with_capacity(n);
    let mut picked = Vec::new();
    for i in 0..n {
        let (mut s, mut s2) = (0.0, 0.0);
        for r in rows {
            let c = (-f64::from(r[i])).exp();
            s += c;
            s2 += c * c;
        }
        let mean = s / e;
        let p = [(s2 / e - mean * mean).max(0.0).sqrt(), mean];
        if atypical.contains(&i) {
            picked.push(p);
        }
        all.push(p);
    }
    (all, picked)
}
