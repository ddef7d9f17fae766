//! Per-sample loss: a histogram of every training sample's loss at a chosen epoch with gamma drawn,
//! and a data map (mean confidence vs variability across epochs) where a click opens the sample.

use super::state::RunView;
use super::{palette, plots, Action};
use crate::run::{EpochRecord, Phase};
use eframe::egui;
use egui_plot::{Bar, BarChart, LineStyle, Plot, Points, VLine};

/// The epoch the histogram shows.
#[derive(Default)]
pub struct LossesPanel {
    /// 1-based; 0 = the latest.
    pub epoch: usize,
}

impl LossesPanel {
    /// `gamma` is UM's, from the mask explorer's choices (drawn on the histogram of a base
    /// epoch; a fine-tune's epoch draws its own phase's). A click on the data map asks to open
    /// the sample.
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
            let phase = match r.phase {
                Phase::Base => "base phase".to_string(),
                p => format!("{} phase epoch {} from epoch {}", p.name(), r.phase_epoch, r.from_epoch),
            };
            let gamma = match drawn_gamma(Some(r), gamma) {
                Some((g, whose)) => format!("gamma {g:.4} ({whose})"),
                None => "no gamma".to_string(),
            };
            ui.label(format!("{phase}; mean loss {:.4}; {gamma}", r.train_eval_loss));
        }
    });
    let gamma = drawn_gamma(st.records.get(panel.epoch - 1), gamma);
    let row = st.loss_rows[panel.epoch - 1].clone();
    let mut asked = None;
    let atypical: std::collections::HashSet<usize> = st.mask_result.as_ref().map(|m| m.samples.iter().map(|a| a.index).collect()).unwrap_or_default();
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    let h = (ui.available_height() - 30.0).max(200.0);
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            ui.label(egui::RichText::new(format!("Loss of each of the {} training samples (log count)", row.len())).strong());
            let (bars, max, binned) = histogram(&row, 60);
            let mut keys = vec![("training samples".to_string(), palette::FINAL_COLOR, LineStyle::Solid, 6.0)];
            if let Some((g, whose)) = gamma {
                keys.push((gamma_key(g, whose), palette::GAMMA_COLOR, LineStyle::Solid, 2.0));
            }
            palette::key_row(ui, &keys);
            let resp = Plot::new("loss_hist").width(w).height(h - 40.0).x_axis_label("cross-entropy").y_axis_label("log10(1 + count)").y_grid_spacer(plots::nice_grid).y_axis_formatter(plots::tick_label).x_grid_spacer(plots::nice_grid_x).x_axis_formatter(plots::tick_label).show(ui, |pu| {
                pu.bar_chart(BarChart::new("samples", bars).color(palette::FINAL_COLOR).element_formatter(Box::new(|bar, _| format!("loss {:.4}\nlog10(1 + count) {:.3}", bar.argument, bar.value))));
                if let Some((g, whose)) = gamma {
                    pu.vline(VLine::new(gamma_key(g, whose), g.min(max)).color(palette::GAMMA_COLOR).width(2.0));
                }
            });
            // What the bars hold, for screen readers and the kittests.
            let label = format!("plot: histogram of {binned} per-sample losses at epoch {}", panel.epoch);
            resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
        });
        ui.vertical(|ui| {
            ui.label(egui::RichText::new("Data map: mean confidence vs variability across epochs (click a point)").strong());
            if st.loss_rows.len() < 2 {
                // An imported model, or a run's first epoch: every point sits on variability 0.
                ui.label("One epoch so far: every sample's variability is 0. The map needs more epochs (train on, or fine-tune from this one).");
            }
            let (all, picked) = data_map(&st.loss_rows, &atypical);
            let mut keys = vec![("training samples".to_string(), palette::FINAL_COLOR, LineStyle::Solid, 4.0)];
            if !picked.is_empty() {
                keys.push(("atypical (current mask)".to_string(), palette::SLIDER_COLOR, LineStyle::Solid, 4.0));
            }
            palette::key_row(ui, &keys);
            let hover = data_map_hover(&all);
            let resp = Plot::new("data_map").width(w).height(h - 40.0).x_axis_label("variability (sd of p(true class))").y_axis_label("mean p(true class)").y_grid_spacer(plots::nice_grid).y_axis_formatter(plots::tick_label).x_grid_spacer(plots::nice_grid_x).x_axis_formatter(plots::tick_label).label_formatter(hover).show(ui, |pu| {
                pu.points(Points::new("training samples", all.clone()).radius(1.5).color(palette::FINAL_COLOR.gamma_multiply_u8(120)));
                if !picked.is_empty() {
                    pu.points(Points::new("atypical (current mask)", picked).radius(2.5).color(palette::SLIDER_COLOR));
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

/// The legend key and line name of the histogram's gamma.
fn gamma_key(gamma: f64, whose: &str) -> String {
    format!("gamma = {gamma:.4} ({whose})")
}

/// The data map's hover text: the sample under the pointer and its two coordinates (its index is
/// its place among the training samples, as `all` lists them).
fn data_map_hover(all: &[[f64; 2]]) -> impl Fn(&egui_plot::HoverPosition) -> Option<String> + use<> {
    let n = all.len();
    move |pos| match pos {
        egui_plot::HoverPosition::NearDataPoint { plot_name: "training samples", position, index } if *index < n => {
            Some(format!("training sample #{index} (click to open)\nvariability {:.4}\nmean p(true class) {:.4}", position.x, position.y))
        }
        egui_plot::HoverPosition::NearDataPoint { position, .. } | egui_plot::HoverPosition::Elsewhere { position } => Some(format!("variability {:.4}\nmean p(true class) {:.4}", position.x, position.y)),
    }
}

/// The gamma the histogram of `record`'s epoch draws, and whose it is: a UM or UMAP epoch's own
/// (the constraint its phase trained under), none at a CE control epoch (plain CE has none), and
/// at a base epoch the mask explorer's (`slider`: what a UM fine-tune from it would use).
fn drawn_gamma(record: Option<&EpochRecord>, slider: Option<f64>) -> Option<(f64, &'static str)> {
    match record.map(|r| (r.phase, r.gamma)) {
        Some((Phase::Um | Phase::Umap, own)) => own.map(|g| (g, "this phase's own")),
        Some((Phase::Control, _)) => None,
        Some((Phase::Base, _)) | None => slider.map(|g| (g, "the mask slider's")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::training::tests::branched_view;

    #[test]
    fn a_fine_tune_epochs_histogram_draws_its_own_phases_gamma() {
        let view = branched_view();
        let slider = Some(0.5);
        let at = |epoch: usize| drawn_gamma(view.records.get(epoch - 1), slider);
        // Base epochs: the mask slider's (what a UM from there would use).
        assert_eq!(at(5), Some((0.5, "the mask slider's")));
        // Each UM epoch: its own phase's, whatever the slider says.
        assert_eq!(at(7), Some((0.1, "this phase's own")));
        assert_eq!(at(12), Some((0.2, "this phase's own")));
        // The CE control trained without one.
        assert_eq!(at(10), None);
        assert_eq!(drawn_gamma(None, slider), Some((0.5, "the mask slider's")));
    }

    #[test]
    fn the_panel_names_the_gamma_it_draws() {
        let view = branched_view();
        let mut panel = LossesPanel { epoch: 7 };
        let ctx = egui::Context::default();
        ctx.enable_accesskit();
        let mut labels = Vec::new();
        for _ in 0..2 {
            let out = ctx.run_ui(egui::RawInput::default(), |ui| {
                panel.ui(ui, &view, Some(0.5));
            });
            let update = out.platform_output.accesskit_update.expect("accesskit is on");
            labels = update.nodes.iter().flat_map(|(_, n)| [n.label(), n.value()]).flatten().map(str::to_string).collect();
        }
        // The line drawn (a plot item is a node of its own), and the row above the plot.
        assert!(labels.iter().any(|l| l == "gamma = 0.1000 (this phase's own)"), "{labels:?}");
        assert!(labels.iter().any(|l| l == "UM phase epoch 2 from epoch 5; mean loss 1.0700; gamma 0.1000 (this phase's own)"), "{labels:?}");
    }
}
