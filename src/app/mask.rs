//! Mask ratio: the slider (fine steps at the low end) and magnitude/random switch; gamma, the
//! atypical count and masked accuracy as it moves (computed in the worker, coalesced); the
//! gamma-vs-ratio curve; the gamma choice; and the buttons that fine-tune with UM, prune with
//! UMAP, or run the plain-CE control, continuing the live curves.

use super::state::GammaSource;
use super::UnleashApp;
use crate::commands::Finetune;
use crate::unleash::MaskKind;
use crate::worker::Command;
use eframe::egui;
use egui_plot::{Legend, Line, Plot, Points, VLine};

/// Ratios of the gamma-vs-ratio curve: dense where magnitude masking starts to bite.
pub const SWEEP: [f64; 12] = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

pub fn show(app: &mut UnleashApp, ui: &mut egui::Ui) {
    let has_model = app.state.data.is_some() && app.state.last_base_epoch().is_some();
    if !has_model {
        ui.label("Train a model first (or open a run together with its data): masks are applied to its last base snapshot.");
    }
    ui.add_enabled_ui(has_model, |ui| {
        slider_row(app, ui);
        result_rows(app, ui);
        ui.separator();
        gamma_choice(app, ui);
        ui.separator();
        finetune_row(app, ui);
    });
    ui.separator();
    sweep_plot(app, ui);
}

fn slider_row(app: &mut UnleashApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let st = &mut app.state;
        let before = (st.mask_ratio, st.mask_kind);
        ui.spacing_mut().slider_width = 320.0;
        let resp = ui.add(
            egui::Slider::new(&mut st.mask_ratio, 0.0..=0.95)
                .logarithmic(true)
                .smallest_positive(0.001)
                .fixed_decimals(3)
                .text("mask ratio"),
        );
        ui.radio_value(&mut st.mask_kind, MaskKind::Magnitude, "magnitude");
        ui.radio_value(&mut st.mask_kind, MaskKind::Random, "random");
        let changed = (st.mask_ratio, st.mask_kind) != before;
        // Ask on every change: the worker keeps only the latest queued request.
        if changed || (resp.drag_stopped() && st.mask_result.as_ref().is_none_or(|m| m.ratio != st.mask_ratio)) {
            app.request_mask();
        }
        if ui.button("Compute gamma curve").on_hover_text("gamma, atypical count and masked accuracy at 12 ratios").clicked() {
            let kind = app.state.mask_kind;
            app.send(Command::Sweep { ratios: SWEEP.to_vec(), kind, epoch: None });
        }
    });
}

fn result_rows(app: &mut UnleashApp, ui: &mut egui::Ui) {
    let st = &app.state;
    match &st.mask_result {
        Some(m) => {
            ui.label(egui::RichText::new(format!("Loss constraint gamma = {:.5}", m.gamma)).size(18.0).strong());
            ui.label(format!(
                "atypical samples: {}   |   masked ID test accuracy {} (full {:.4})   |   full-model train loss {:.5}   |   ratio {:.3}, {}, epoch {}",
                m.samples.len(),
                match (m.masked_test_acc, &st.busy) {
                    (Some(a), _) => format!("{a:.4}"),
                    (None, Some(_)) => "(computing...)".to_string(),
                    // The worker skipped the test pass because another command was waiting.
                    (None, None) => "(not computed)".to_string(),
                },
                m.full_test_acc,
                m.full_train_loss,
                m.ratio,
                m.kind.key(),
                m.epoch
            ));
            if m.gamma < 2.0 * m.full_train_loss {
                ui.colored_label(
                    egui::Color32::from_rgb(230, 150, 40),
                    "This ratio barely moves the training loss (magnitude masking of a trained model is gentle at low ratios): gamma is tiny and flags few samples. Try a higher ratio, or pick gamma by quantile / earlier epoch below.",
                );
            }
        }
        None => {
            ui.label("Loss constraint gamma = (move the slider)");
        }
    }
    if st.mask_pending {
        let msg = match (&st.busy, &st.evaluating) {
            (_, Some((set, d, t))) if set.starts_with("mask") => format!("computing: {d}/{t} samples"),
            (Some(b), _) if !b.starts_with("mask") => format!("queued: runs when the current job ({b}) ends"),
            _ => "computing...".to_string(),
        };
        ui.label(msg);
    } else if let Some(l) = st.last_mask_latency {
        ui.label(egui::RichText::new(format!("last update took {:.2} s", l.as_secs_f64())).small());
    }
}

fn gamma_choice(app: &mut UnleashApp, ui: &mut egui::Ui) {
    let st = &mut app.state;
    ui.label(egui::RichText::new("gamma for UM / UMAP").strong());
    let last_epoch = st.records.len().max(1);
    ui.horizontal(|ui| {
        ui.radio_value(&mut st.gamma_source, GammaSource::Mask, "from the mask ratio");
        let q = if let GammaSource::Quantile(q) = st.gamma_source { q } else { 0.9 };
        ui.radio_value(&mut st.gamma_source, GammaSource::Quantile(q), "quantile of final losses");
        let e = if let GammaSource::Epoch(e) = st.gamma_source { e } else { 3.min(last_epoch) };
        ui.radio_value(&mut st.gamma_source, GammaSource::Epoch(e), "training loss at epoch");
        let g = if let GammaSource::Manual(g) = st.gamma_source { g } else { 0.2 };
        ui.radio_value(&mut st.gamma_source, GammaSource::Manual(g), "manual");
    });
    ui.horizontal(|ui| {
        match &mut st.gamma_source {
            GammaSource::Quantile(q) => {
                ui.add(egui::Slider::new(q, 0.5..=0.999).text("quantile"));
            }
            GammaSource::Epoch(e) => {
                ui.add(egui::Slider::new(e, 1..=last_epoch).text("epoch"));
            }
            GammaSource::Manual(g) => {
                ui.add(egui::Slider::new(g, 0.0..=3.0).logarithmic(true).smallest_positive(0.0001).text("gamma value"));
            }
            GammaSource::Mask => {}
        }
        match st.gamma() {
            Some(g) => ui.label(format!("-> gamma = {g:.5}")),
            None => ui.label("-> gamma not available yet"),
        };
    });
}

fn finetune_row(app: &mut UnleashApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let st = &mut app.state;
        let l = ui.label("epochs");
        ui.add(egui::DragValue::new(&mut st.ft_epochs).range(1..=500)).labelled_by(l.id);
        let l = ui.label("lr");
        ui.add(egui::DragValue::new(&mut st.ft_lr).range(1e-5..=1.0).speed(0.001).max_decimals(5)).labelled_by(l.id);
        let l = ui.label("UMAP prune ratio");
        ui.add(egui::DragValue::new(&mut st.prune_ratio).range(0.0..=0.99).speed(0.01)).labelled_by(l.id);
    });
    ui.horizontal(|ui| {
        let gamma = app.state.gamma();
        let idle = !app.state.is_busy();
        let mut go = None;
        if ui.add_enabled(idle && gamma.is_some(), egui::Button::new("Fine-tune with UM")).clicked() {
            go = Some(Finetune::Um);
        }
        if ui.add_enabled(idle && gamma.is_some(), egui::Button::new("Prune with UMAP")).clicked() {
            go = Some(Finetune::Umap);
        }
        if ui.add_enabled(idle, egui::Button::new("CE control")).on_hover_text("Plain cross-entropy fine-tune of the same length, for comparison").clicked() {
            go = Some(Finetune::Control);
        }
        if let Some(kind) = go {
            let st = &app.state;
            let cmd = Command::Finetune { kind, gamma: gamma.unwrap_or(0.0), epochs: st.ft_epochs, lr: st.ft_lr, prune_ratio: st.prune_ratio, from_epoch: None };
            app.state.busy = Some("starting fine-tune".into());
            app.state.tab = super::state::Tab::Training;
            app.send(cmd);
        }
    });
}

fn sweep_plot(app: &mut UnleashApp, ui: &mut egui::Ui) {
    let st = &app.state;
    if st.sweep.is_empty() && st.mask_result.is_none() {
        ui.label("Press \"Compute gamma curve\" to see how gamma and the atypical set grow with the mask ratio.");
        return;
    }
    let h = (ui.available_height() - 30.0).max(160.0);
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    let current = st.mask_result.as_ref().map(|m| (m.ratio, m.gamma, m.samples.len()));
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            ui.label(egui::RichText::new("gamma vs mask ratio (log10)").strong());
            Plot::new("gamma_curve").width(w).height(h).legend(Legend::default()).x_axis_label("mask ratio").y_axis_label("log10 gamma").show(ui, |pu| {
                let g: Vec<[f64; 2]> = st.sweep.iter().map(|p| [p.ratio, p.gamma.max(1e-6).log10()]).collect();
                if !g.is_empty() {
                    pu.line(Line::new("gamma", g.clone()).width(2.0).color(egui::Color32::from_rgb(90, 160, 230)));
                    pu.points(Points::new("gamma", g).radius(3.0).color(egui::Color32::from_rgb(90, 160, 230)));
                }
                if let Some((r, g, _)) = current {
                    pu.points(Points::new("current ratio", vec![[r, g.max(1e-6).log10()]]).radius(6.0).color(egui::Color32::from_rgb(220, 60, 50)));
                }
                pu.vline(VLine::new("slider", st.mask_ratio).color(egui::Color32::GRAY));
            });
        });
        ui.vertical(|ui| {
            ui.label(egui::RichText::new("atypical samples vs mask ratio").strong());
            Plot::new("atypical_curve").width(w).height(h).legend(Legend::default()).x_axis_label("mask ratio").y_axis_label("atypical samples").show(ui, |pu| {
                let a: Vec<[f64; 2]> = st.sweep.iter().map(|p| [p.ratio, p.atypical as f64]).collect();
                if !a.is_empty() {
                    pu.line(Line::new("atypical", a.clone()).width(2.0).color(egui::Color32::from_rgb(230, 150, 60)));
                    pu.points(Points::new("atypical", a).radius(3.0).color(egui::Color32::from_rgb(230, 150, 60)));
                }
                if let Some((r, _, n)) = current {
                    pu.points(Points::new("current ratio", vec![[r, n as f64]]).radius(6.0).color(egui::Color32::from_rgb(220, 60, 50)));
                }
                pu.vline(VLine::new("slider", st.mask_ratio).color(egui::Color32::GRAY));
            });
        });
    });
}
