//! The mask explorer: the slider (fine steps at the low end), magnitude/random, and which snapshot;
//! for the current ratio, the masked model's gamma, atypical set, ID accuracy and OOD detection
//! next to the unmasked model's, first as a preview on subsets, then on the complete sets (values
//! interpolated from the sweep show at once while both compute); the sweep's curves; the gamma
//! choice; and the buttons that fine-tune with UM, prune with UMAP, or run the plain-CE control.

use super::{palette, plots};
use super::state::{RunView, SweepView};
use super::Action;
use crate::ood::{Metrics, Score};
use crate::run::{best_by_validation, Phase, ScoreMetrics};
use crate::train::Finetune;
use crate::unleash::GammaSource;
use crate::unleash::{probe, AtypicalSet, Detection, MaskKind};
use crate::worker::Command;
use eframe::egui;
use egui_plot::{HLine, Line, Plot, Points, VLine};

/// Which snapshot the mask explorer masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSnapshot {
    /// The last base epoch (the paper's final stage).
    LastBase,
    /// The best base epoch by validation (the intermediate stage).
    BestByValidation,
    /// Any epoch, fine-tune ends included.
    Epoch(usize),
}

/// The mask explorer's choices: the mask (ratio, kind, snapshot), the detection table's score,
/// where UM's gamma comes from, and the fine-tune's recipe. The UM/UMAP/control buttons live
/// here too, so the snapshot and gamma they use never leave the panel.
pub struct MaskPanel {
    pub ratio: f64,
    pub kind: MaskKind,
    pub snapshot: MaskSnapshot,
    /// The score the masked-detection table shows.
    pub table_score: Score,
    pub gamma_source: GammaSource,
    pub ft_epochs: usize,
    pub ft_lr: f64,
    pub prune_ratio: f64,
    /// The sweep plots' y axes fit the ratios up to `CLIPPED_RATIO` only (the highest ratio,
    /// where the masked model collapses, would flatten the rest); its points lie off the plot.
    pub sweep_clipped: bool,
    /// The last answer drawn with its detection table: drawn greyed while the next computes, so
    /// that the tab keeps its layout during a drag.
    last_shown: Option<Shown>,
}

/// An answer as drawn, with the detection table it had.
#[derive(Clone)]
struct Shown {
    answer: std::sync::Arc<AtypicalSet>,
    detection: Option<std::sync::Arc<Detection>>,
}

/// The highest ratio the clipped sweep view fits its y axes to.
const CLIPPED_RATIO: f64 = 0.6;

impl Default for MaskPanel {
    fn default() -> MaskPanel {
        MaskPanel {
            ratio: 0.5,
            kind: MaskKind::Magnitude,
            snapshot: MaskSnapshot::LastBase,
            table_score: Score::Energy,
            gamma_source: GammaSource::MaskRatio,
            ft_epochs: 10,
            ft_lr: 0.05,
            prune_ratio: 0.2,
            sweep_clipped: false,
            last_shown: None,
        }
    }
}

impl MaskPanel {
    /// Asks for a mask answer when the ratio, kind or snapshot changes, a sweep, or a fine-tune.
    pub fn ui(&mut self, ui: &mut egui::Ui, view: &RunView) -> Option<Action> {
        show(self, ui, view)
    }

    /// The epoch the snapshot choice names, if it exists yet.
    pub fn epoch(&self, view: &RunView) -> Option<usize> {
        match self.snapshot {
            MaskSnapshot::LastBase => view.last_base_epoch(),
            MaskSnapshot::BestByValidation => best_by_validation(&view.records, Score::Energy, Some(Phase::Base)),
            MaskSnapshot::Epoch(e) => (1..=view.records.len()).contains(&e).then_some(e),
        }
    }

    /// gamma for a fine-tune from the chosen snapshot and source (None when not available yet).
    pub fn gamma(&self, view: &RunView) -> Option<f64> {
        match self.gamma_source.from_history(&view.records, &view.loss_rows, self.epoch(view)?) {
            Some(from_history) => from_history.ok(),
            // A preview's gamma is an estimate on a subset, and another ratio's, kind's or
            // snapshot's is another gamma: UM waits for the complete answer to what is on screen.
            None => self.current_answer(view).filter(|m| m.preview.is_none()).map(|m| m.gamma),
        }
    }

    /// The last mask answer, if it answers the ratio, kind and snapshot now chosen.
    fn current_answer<'a>(&self, view: &'a RunView) -> Option<&'a std::sync::Arc<AtypicalSet>> {
        let epoch = self.epoch(view);
        view.mask_result.as_ref().filter(|m| (m.ratio - self.ratio).abs() < 1e-12 && Some(m.epoch) == epoch && m.kind == self.kind)
    }

    /// The sweep of the snapshot and mask kind now chosen, if one has arrived.
    fn current_sweep<'a>(&self, view: &'a RunView) -> Option<&'a SweepView> {
        view.sweep_of(self.epoch(view), self.kind)
    }
}

fn show(panel: &mut MaskPanel, ui: &mut egui::Ui, st: &RunView) -> Option<Action> {
    let has_model = st.data.is_some() && st.last_base_epoch().is_some();
    if !has_model {
        ui.label("Train a model first (or open a run together with its data): masks are applied to one of its snapshots.");
    }
    let mut asked = None;
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        ui.add_enabled_ui(has_model, |ui| {
            asked = controls_row(panel, ui, st);
            answer(panel, ui, st);
            ui.separator();
            gamma_choice(panel, ui, st);
            asked = asked.take().or(finetune_row(panel, ui, st));
        });
        ui.separator();
        sweep_plots(panel, ui, st);
    });
    asked
}

fn controls_row(panel: &mut MaskPanel, ui: &mut egui::Ui, st: &RunView) -> Option<Action> {
    let mut changed = false;
    let mut asked = None;
    ui.horizontal(|ui| {
        let before = (panel.ratio, panel.kind, panel.snapshot);
        ui.spacing_mut().slider_width = 300.0;
        ui.add(
            egui::Slider::new(&mut panel.ratio, 0.0..=0.95)
                .logarithmic(true)
                .smallest_positive(0.001)
                .fixed_decimals(3)
                .text("mask ratio"),
        );
        ui.radio_value(&mut panel.kind, MaskKind::Magnitude, "magnitude");
        ui.radio_value(&mut panel.kind, MaskKind::Random, "random");
        snapshot_choice(&mut panel.snapshot, st, ui);
        changed = (panel.ratio, panel.kind, panel.snapshot) != before;
        if ui.button("Sweep this snapshot").on_hover_text("gamma, atypical count, masked accuracy and OOD AUROC at 12 ratios, computed in the background").clicked() {
            let epoch = panel.epoch(st);
            let kind = panel.kind;
            asked = Some(Action::Send(Command::Sweep { ratios: probe::default_sweep_ratios(crate::worker::DEFAULT_SWEEP_POINTS), kind, epoch }));
        }
    });
    // Ask on every change: the worker keeps only the latest request.
    if changed {
        asked = Some(Action::RequestMask);
    }
    asked
}

/// Last base epoch, best base epoch by validation, or any epoch (fine-tune ends included).
fn snapshot_choice(snapshot: &mut MaskSnapshot, st: &RunView, ui: &mut egui::Ui) {
    let last = st.last_base_epoch().unwrap_or(0);
    let best = best_by_validation(&st.records, Score::Energy, Some(Phase::Base)).unwrap_or(0);
    let label = |s: MaskSnapshot| match s {
        MaskSnapshot::LastBase => format!("final (epoch {last})"),
        MaskSnapshot::BestByValidation => format!("best by validation (epoch {best})"),
        MaskSnapshot::Epoch(e) => format!("epoch {e}"),
    };
    let current = *snapshot;
    egui::ComboBox::from_label("snapshot").selected_text(label(current)).show_ui(ui, |ui| {
        ui.selectable_value(snapshot, MaskSnapshot::LastBase, label(MaskSnapshot::LastBase));
        ui.selectable_value(snapshot, MaskSnapshot::BestByValidation, label(MaskSnapshot::BestByValidation));
        for r in st.records.iter().filter(|r| r.phase != Phase::Base && r.phase_epoch > 0) {
            // A fine-tune's last epoch.
            let is_end = st.records.get(r.epoch).is_none_or(|next| next.phase_epoch == 1);
            if is_end {
                let e = MaskSnapshot::Epoch(r.epoch);
                ui.selectable_value(snapshot, e, format!("{} end (epoch {})", r.phase.name(), r.epoch));
            }
        }
    });
    if let MaskSnapshot::Epoch(e) = snapshot {
        ui.add(egui::DragValue::new(e).range(1..=st.records.len().max(1)).prefix("epoch "));
    } else if ui.small_button("other epoch...").clicked() {
        *snapshot = MaskSnapshot::Epoch(last.max(1));
    }
}

fn answer(panel: &mut MaskPanel, ui: &mut egui::Ui, st: &RunView) {
    let mut table_score = panel.table_score;
    let train_samples = st.data.as_ref().map_or(0, |d| d.train.len());
    let current = panel.current_answer(st).cloned();
    let estimate = panel.current_sweep(st).and_then(|s| probe::interpolate(&s.points, panel.ratio));
    let shown = match current {
        Some(a) => {
            let detection = if a.preview.is_some() { a.masked_detection.clone().map(std::sync::Arc::new) } else { st.mask_detection.clone() };
            let fresh = Shown { answer: a, detection };
            ui.label(egui::RichText::new(status_text(&fresh.answer, st)).italics());
            if fresh.detection.is_some() {
                panel.last_shown = Some(fresh.clone());
            }
            Some((fresh, false))
        }
        None => {
            // A run opened or trained since clears the mirror's answer, and the stale one with it.
            let Some(last) = panel.last_shown.clone().filter(|_| st.mask_result.is_some()) else {
                waiting(ui, st, estimate);
                panel.table_score = table_score;
                return;
            };
            let mut status = format!("showing the answer at ratio {:.3} (greyed) until the answer at {:.3} arrives", last.answer.ratio, panel.ratio);
            if let Some(p) = estimate {
                status.push_str(&format!("; from the sweep: gamma ≈ {:.5}, ≈ {} atypical", p.gamma, p.atypical));
            }
            if st.mask_pending {
                status.push_str(&format!(" ({})", pending_text(st)));
            }
            ui.label(egui::RichText::new(status).italics());
            Some((last, true))
        }
    };
    if let Some((shown, stale)) = shown {
        ui.scope(|ui| {
            if stale {
                ui.multiply_opacity(STALE_OPACITY);
            }
            let a = &shown.answer;
            // Masked and full training loss within 25% of each other: the mask hardly changes the model.
            let gentle = a.gamma < 1.25 * a.full_train_loss && a.preview.is_none();
            headline(ui, a.gamma, gentle, a.estimated_atypical(train_samples), a.preview.is_some(), shown.detection.as_deref(), a.full_detection.as_ref(), a.full_test_acc, a.full_train_loss, table_score);
            // The table stays while the complete detection computes: the last one, greyed.
            let table = match (&shown.detection, &panel.last_shown) {
                (Some(d), _) => Some((d.clone(), a.full_detection.clone(), stale)),
                (None, Some(last)) => last.detection.clone().map(|d| (d, last.answer.full_detection.clone(), true)),
                (None, None) => None,
            };
            if let Some((masked, Some(full), greyed)) = table {
                if greyed && !stale {
                    ui.multiply_opacity(STALE_OPACITY);
                }
                detection_table(ui, &masked, &full, &mut table_score);
            }
        });
    }
    // Always drawn, with dashes until both are known: a line that comes and goes would move the
    // tab below it.
    let secs = |d: Option<std::time::Duration>| d.map_or_else(|| "-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    ui.label(egui::RichText::new(format!("last answer: preview after {}, complete after {}", secs(st.last_preview_latency), secs(st.last_mask_latency))).small().weak());
    panel.table_score = table_score;
}

/// How a stale answer is drawn while the next computes.
const STALE_OPACITY: f32 = 0.45;

/// Where the answer on screen stands: a preview, complete, or its detection still computing.
fn status_text(a: &AtypicalSet, st: &RunView) -> String {
    match a.preview {
        Some(p) => format!("preview on subsets (n = {} training, {} ID test, {} per OOD set); the complete answer follows", p.train, p.id_test, p.per_ood_set),
        None if st.mask_detection.is_some() => "complete: every training, test and OOD sample".to_string(),
        None if st.mask_pending => "gamma and atypical set complete; OOD detection on the complete sets computing...".to_string(),
        None => "gamma and atypical set complete (OOD detection skipped: a newer request came first)".to_string(),
    }
}

/// Before the first answer: the sweep's estimate at the slider's ratio, or a wait.
fn waiting(ui: &mut egui::Ui, st: &RunView, estimate: Option<crate::unleash::MaskSweepPoint>) {
    match estimate {
        Some(p) => {
            ui.label(egui::RichText::new("interpolated from the sweep; the exact answer is computing...").italics());
            ui.label(egui::RichText::new(format!("Loss constraint gamma ≈ {:.5}", p.gamma)).size(18.0).strong());
            ui.label(format!("≈ {} atypical samples  |  masked ID test accuracy ≈ {:.4}  |  masked mean test-OOD Energy AUROC ≈ {:.4}", p.atypical, p.masked_test_acc, p.masked_ood_auroc));
        }
        None => {
            let status = if st.mask_pending { pending_text(st) } else { "move the slider, or wait for the answer at this ratio".to_string() };
            ui.label(egui::RichText::new(status).italics());
            ui.label(egui::RichText::new("Loss constraint gamma = (computing)").size(18.0).strong());
        }
    }
}

fn pending_text(st: &RunView) -> String {
    match (&st.busy, &st.evaluating) {
        (Some(crate::worker::Job::Mask { .. }), Some((set, d, t))) => format!("computing {set}: {d}/{t} samples"),
        (Some(job @ (crate::worker::Job::Training(_) | crate::worker::Job::LoadingData | crate::worker::Job::Exporting)), _) => {
            format!("queued: runs when the current job ({}) ends", job.describe())
        }
        _ => "computing...".to_string(),
    }
}

/// gamma (and whether the mask is too `gentle` to flag many samples), atypical count, masked vs
/// full ID accuracy, and the headline detection figure in the score the table shows.
#[allow(clippy::too_many_arguments)]
fn headline(ui: &mut egui::Ui, gamma: f64, gentle: bool, atypical: usize, preview: bool, masked: Option<&Detection>, full: Option<&Detection>, full_test_acc: f64, full_train_loss: f64, score: Score) {
    let approx = if preview { "≈ " } else { "= " };
    // The warning of a gentle mask sits on gamma's line: a line of its own would move everything
    // below it as the slider crosses into the low ratios.
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new(format!("Loss constraint gamma {approx}{gamma:.5}")).size(18.0).strong());
        if gentle {
            ui.colored_label(egui::Color32::from_rgb(230, 150, 40), "barely above the full model's loss: few samples flagged (hover)").on_hover_text(
                "This ratio barely moves the training loss (magnitude masking of a trained model is gentle at low ratios): gamma is close to the full model's loss and flags few samples. Try a higher ratio, or pick gamma by quantile / earlier epoch below.",
            );
        }
    });
    if let (Some(m), Some(f)) = (masked, full) {
        let (ma, fa) = (m.mean_auroc(score), f.mean_auroc(score));
        let text = format!("Mean test-OOD {} AUROC: masked {ma:.4} vs full {fa:.4} ({:+.4})", score.name(), ma - fa);
        let color = if ma >= fa { egui::Color32::from_rgb(80, 190, 120) } else { egui::Color32::from_rgb(230, 110, 80) };
        ui.label(egui::RichText::new(text).size(16.0).color(color));
    } else {
        // The same line while it computes, so that nothing below it moves.
        ui.label(egui::RichText::new(format!("Mean test-OOD {} AUROC: computing on the complete sets...", score.name())).size(16.0).weak());
    }
    let acc = match masked {
        Some(m) => format!("masked ID test accuracy {:.4} (full {:.4}, {:+.4})", m.test_acc, full_test_acc, m.test_acc - full_test_acc),
        None => format!("masked ID test accuracy: computing (full {full_test_acc:.4})"),
    };
    ui.label(format!("{approx}{atypical} atypical samples   |   {acc}   |   full-model train loss {full_train_loss:.5}"));
}

/// Per set (validation first), the masked and the full model's AUROC and FPR95 and their
/// differences, for one score (chosen above the table).
fn detection_table(ui: &mut egui::Ui, masked: &Detection, full: &Detection, score: &mut Score) {
    ui.horizontal_wrapped(|ui| {
        ui.label("OOD detection by");
        // The scores this model has (a detector that could not be fitted is left out).
        for s in Score::ALL.into_iter().filter(|s| full.ood_mean.contains_key(s)) {
            ui.radio_value(score, s, s.name());
        }
    });
    for problem in masked.problems.iter().chain(&full.problems) {
        ui.label(egui::RichText::new(problem).weak());
    }
    let score = *score;
    let get = |m: &ScoreMetrics| m.get(&score).copied();
    let mut rows: Vec<(String, egui::Color32, Option<Metrics>, Option<Metrics>)> = vec![(format!("{} (validation)", masked.val_name), palette::VALIDATION_COLOR, get(&masked.val), get(&full.val))];
    for (i, (name, m)) in masked.ood.iter().enumerate() {
        rows.push((name.clone(), palette::set_color(i), get(m), full.ood.get(name).and_then(get)));
    }
    rows.push(("mean of the test sets".into(), palette::MEAN_COLOR, get(&masked.ood_mean), get(&full.ood_mean)));
    egui::Grid::new("masked_detection").striped(true).spacing([14.0, 2.0]).show(ui, |ui| {
        for h in ["OOD set", "AUROC masked", "full", "Δ", "FPR95 masked", "full", "Δ"] {
            ui.label(egui::RichText::new(h).strong());
        }
        ui.end_row();
        for (name, color, m, f) in rows {
            ui.label(egui::RichText::new(name).color(color));
            let metrics: [fn(&Metrics) -> f64; 2] = [|x| x.auroc, |x| x.fpr95];
            for metric in metrics {
                let (mv, fv) = (m.as_ref().map(metric), f.as_ref().map(metric));
                ui.label(fmt(mv));
                ui.label(fmt(fv));
                ui.label(match (mv, fv) {
                    (Some(a), Some(b)) => format!("{:+.4}", a - b),
                    _ => "-".into(),
                });
            }
            ui.end_row();
        }
    });
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn gamma_choice(panel: &mut MaskPanel, ui: &mut egui::Ui, st: &RunView) {
    ui.label(egui::RichText::new("gamma for UM / UMAP").strong());
    let last_epoch = st.records.len().max(1);
    ui.horizontal(|ui| {
        ui.radio_value(&mut panel.gamma_source, GammaSource::MaskRatio, "from the mask ratio");
        let q = if let GammaSource::Quantile(q) = panel.gamma_source { q } else { 0.9 };
        ui.radio_value(&mut panel.gamma_source, GammaSource::Quantile(q), "quantile of the snapshot's losses");
        let e = if let GammaSource::EpochLoss(e) = panel.gamma_source { e } else { 3.min(last_epoch) };
        ui.radio_value(&mut panel.gamma_source, GammaSource::EpochLoss(e), "training loss at epoch");
        let g = if let GammaSource::Manual(g) = panel.gamma_source { g } else { 0.2 };
        ui.radio_value(&mut panel.gamma_source, GammaSource::Manual(g), "manual");
    });
    ui.horizontal(|ui| {
        match &mut panel.gamma_source {
            GammaSource::Quantile(q) => {
                ui.add(egui::Slider::new(q, 0.5..=0.999).text("quantile"));
            }
            GammaSource::EpochLoss(e) => {
                ui.add(egui::Slider::new(e, 1..=last_epoch).text("epoch"));
            }
            GammaSource::Manual(g) => {
                ui.add(egui::Slider::new(g, 0.0..=3.0).logarithmic(true).smallest_positive(0.0001).text("gamma value"));
            }
            GammaSource::MaskRatio => {}
        }
        match panel.gamma(st) {
            Some(g) => ui.label(format!("-> gamma = {g:.5}")),
            None => ui.label("-> gamma not available yet (waiting for the complete answer)"),
        };
    });
}

fn finetune_row(panel: &mut MaskPanel, ui: &mut egui::Ui, st: &RunView) -> Option<Action> {
    ui.horizontal(|ui| {
        let l = ui.label("epochs");
        ui.add(egui::DragValue::new(&mut panel.ft_epochs).range(1..=500)).labelled_by(l.id);
        let l = ui.label("lr");
        ui.add(egui::DragValue::new(&mut panel.ft_lr).range(1e-5..=1.0).speed(0.001).max_decimals(5)).labelled_by(l.id);
        let l = ui.label("UMAP prune ratio");
        ui.add(egui::DragValue::new(&mut panel.prune_ratio).range(0.0..=0.99).speed(0.01)).labelled_by(l.id);
    });
    let mut asked = None;
    ui.horizontal(|ui| {
        let gamma = panel.gamma(st);
        let idle = !st.is_busy();
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
            let from_epoch = panel.epoch(st);
            let cmd = Command::Finetune { kind, gamma: gamma.unwrap_or(0.0), epochs: panel.ft_epochs, lr: panel.ft_lr, prune_ratio: panel.prune_ratio, from_epoch };
            asked = Some(Action::Finetune(cmd));
        }
        ui.label(egui::RichText::new("(fine-tunes start from the snapshot chosen above)").small().weak());
    });
    asked
}

/// gamma, atypical count, masked ID accuracy and masked mean OOD AUROC against the ratio (log
/// scale), with the slider's ratio marked and the unmasked model's values as horizontal lines.
fn sweep_plots(panel: &mut MaskPanel, ui: &mut egui::Ui, st: &RunView) {
    let Some(sweep) = panel.current_sweep(st) else {
        let msg = match &st.background {
            Some(job) => format!("The sweep is computing in the background ({}).", job.describe()),
            None => "No sweep of this snapshot yet: press \"Sweep this snapshot\".".to_string(),
        };
        ui.label(msg);
        return;
    };
    if sweep.points.is_empty() {
        ui.label(format!("The sweep of epoch {} is computing in the background (12 ratios, between your requests).", sweep.epoch));
        return;
    }
    let full = st.mask_result.as_ref().and_then(|m| m.full_detection.as_ref()).filter(|_| st.mask_result.as_ref().is_some_and(|m| m.epoch == sweep.epoch && m.preview.is_none()));
    let full_acc = st.mask_result.as_ref().filter(|m| m.epoch == sweep.epoch).map(|m| m.full_test_acc);
    let state = if sweep.complete { String::new() } else { format!(" ({} of {} ratios so far)", sweep.points.len(), crate::worker::DEFAULT_SWEEP_POINTS) };
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new(format!("Sweep of epoch {}, {} masks{state}; x axis: mask ratio (log scale)", sweep.epoch, sweep.kind.key())).strong());
        ui.checkbox(&mut panel.sweep_clipped, format!("fit y to ratios up to {CLIPPED_RATIO}"))
            .on_hover_text("The highest ratios collapse the masked model and flatten the rest of each curve: fit the y axes to the ratios up to 0.6, and leave the higher points off the plot");
    });
    // A fixed height, whatever the answer above shows: the plots keep their place and their
    // tick labels during a drag (the tab scrolls when the window is small).
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    let plot = SweepPlot { sweep, ratio: panel.ratio, w, h: SWEEP_PLOT_HEIGHT, clip: panel.sweep_clipped.then_some(CLIPPED_RATIO) };
    let full_auroc = full.map(|f| f.mean_auroc(Score::Energy));
    ui.horizontal(|ui| {
        plot.show(ui, "sweep_gamma", "gamma (log scale)", |p| p.gamma.max(1e-6).log10(), None, true);
        plot.show(ui, "sweep_atypical", "atypical samples", |p| p.atypical as f64, None, false);
    });
    ui.horizontal(|ui| {
        plot.show(ui, "sweep_acc", "masked ID test accuracy", |p| p.masked_test_acc, full_acc, false);
        plot.show(ui, "sweep_auroc", "masked mean test-OOD Energy AUROC", |p| p.masked_ood_auroc, full_auroc, false);
    });
}

/// Each sweep plot's height, points.
const SWEEP_PLOT_HEIGHT: f32 = 230.0;

/// Grid marks of a log10(ratio) axis at 1, 2 and 5 times the powers of ten (0.01, 0.02, 0.05, 0.1,
/// ...), the decades thicker.
fn ratio_grid(input: egui_plot::GridInput) -> Vec<egui_plot::GridMark> {
    let (lo, hi) = input.bounds;
    let mut marks = Vec::new();
    for decade in (lo.floor() as i32 - 1)..=(hi.ceil() as i32) {
        for (k, m) in [1.0f64, 2.0, 5.0].into_iter().enumerate() {
            let v = (m * 10f64.powi(decade)).log10();
            if (lo..=hi).contains(&v) {
                marks.push(egui_plot::GridMark { value: v, step_size: if k == 0 { 1.0 } else { 0.3 } });
            }
        }
    }
    marks
}

/// Grid marks of a log10(value) axis: at 1, 2 and 5 times the powers of ten where at least two
/// fall in view, else (a narrow range, such as gamma's over the low ratios) at evenly spaced
/// values, so that the axis always has labels.
fn log_value_grid(input: egui_plot::GridInput) -> Vec<egui_plot::GridMark> {
    let bounds = input.bounds;
    let marks = ratio_grid(input);
    if marks.len() >= 2 {
        return marks;
    }
    let (lo, hi) = (10f64.powf(bounds.0), 10f64.powf(bounds.1));
    let step = plots::nice_step((hi - lo) / 5.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).filter(|k| *k > 0).map(|k| egui_plot::GridMark { value: (k as f64 * step).log10(), step_size: 1.0 }).collect()
}

fn three_places(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What the four sweep plots share: the sweep, the slider's ratio, their size, and the ratio the
/// y axes fit up to (None: all).
struct SweepPlot<'a> {
    sweep: &'a SweepView,
    ratio: f64,
    w: f32,
    h: f32,
    clip: Option<f64>,
}

impl SweepPlot<'_> {
    /// One plot of `f` against the ratio; `log_y`: `f` is a log10, and the ticks and hover show
    /// its value.
    fn show(&self, ui: &mut egui::Ui, id: &str, title: &str, f: impl Fn(&crate::unleash::MaskSweepPoint) -> f64, full: Option<f64>, log_y: bool) {
        let color = palette::FINAL_COLOR;
        let pts: Vec<[f64; 2]> = self.sweep.points.iter().filter(|p| p.ratio > 0.0).map(|p| [p.ratio.log10(), f(p)]).filter(|p| p[1].is_finite()).collect();
        let drawn = pts.len();
        let y_shown = move |y: f64| if log_y { 10f64.powf(y) } else { y };
        let mut keys = vec![(title.to_string(), color, egui_plot::LineStyle::Solid, 2.0)];
        if full.is_some_and(f64::is_finite) {
            keys.push(("unmasked model".to_string(), palette::MEAN_COLOR, egui_plot::LineStyle::dashed_loose(), 1.5));
        }
        if self.ratio > 0.0 {
            keys.push((format!("slider ({})", three_places(self.ratio)), palette::SLIDER_COLOR, egui_plot::LineStyle::Solid, 1.5));
        }
        let fitted = self.clip.and_then(|c| y_range(&pts, full, c.log10()));
        let hover: plots::HoverLines = vec![(title.to_string(), pts.iter().map(|p| [p[0], y_shown(p[1])]).collect())];
        ui.vertical(|ui| {
            palette::key_row(ui, &keys);
            let mut plot = Plot::new(id)
                .width(self.w)
                .height(self.h - 22.0)
                .x_axis_formatter(|mark, _| three_places(10f64.powf(mark.value)))
                .x_grid_spacer(ratio_grid)
                .y_axis_min_width(48.0)
                .label_formatter(move |pos| plots::hover_text(&hover, pos, "mask ratio", |x| 10f64.powf(x)));
            // A log axis is marked at 1, 2 and 5 times the powers of ten, as the ratio axis is.
            plot = if log_y {
                plot.y_grid_spacer(log_value_grid).y_axis_formatter(move |mark, _| format!("{:.4}", y_shown(mark.value)).trim_end_matches('0').trim_end_matches('.').to_string())
            } else {
                plot.y_grid_spacer(plots::nice_grid).y_axis_formatter(plots::tick_label)
            };
            if let Some((lo, hi)) = fitted {
                plot = plot.default_y_bounds(lo, hi);
            }
            let resp = plot.show(ui, |pu| {
                if let Some((lo, hi)) = fitted {
                    pu.set_plot_bounds_y(lo..=hi);
                }
                pu.line(Line::new(title.to_string(), pts.clone()).width(2.0).color(color));
                pu.points(Points::new(title.to_string(), pts).radius(3.0).color(color));
                if let Some(v) = full.filter(|v| v.is_finite()) {
                    pu.hline(HLine::new("unmasked model", v).color(palette::MEAN_COLOR).style(egui_plot::LineStyle::dashed_loose()));
                }
                if self.ratio > 0.0 {
                    pu.vline(VLine::new("slider", self.ratio.log10()).color(palette::SLIDER_COLOR));
                }
            });
            let b = resp.transform.bounds();
            let label = format!("plot: {title}, {drawn} points, y {:.4} to {:.4}", b.min()[1], b.max()[1]);
            resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
        });
    }
}

/// The y range of the points at log10(ratio) up to `max_x` and of the unmasked line, with a 5%
/// margin; None when no point is that low.
fn y_range(pts: &[[f64; 2]], full: Option<f64>, max_x: f64) -> Option<(f64, f64)> {
    let ys = pts.iter().filter(|p| p[0] <= max_x + 1e-12).map(|p| p[1]).chain(full.filter(|v| v.is_finite()));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() {
        return None;
    }
    let margin = ((hi - lo) * 0.05).max(1e-6);
    Some((lo - margin, hi + margin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::state::tests::answer;
    use crate::app::state::AppState;
    use crate::run::tests::record;
    use crate::worker::WorkerEvent;

    /// Two base epochs and a UM epoch, as the mirror holds them after events.
    fn view() -> AppState {
        let mut view = AppState::new();
        let um = crate::run::EpochRecord { phase: Phase::Um, phase_epoch: 1, from_epoch: 2, ..record(3) };
        view.apply(WorkerEvent::RunLoaded { dir: "run".into(), records: vec![record(1), record(2), um], loss_rows: vec![std::sync::Arc::new(vec![0.1, 0.2, 0.3]); 3], config: Box::new(crate::config::ExperimentConfig { data: crate::config::DataConfig::sample(), train: Default::default(), detectors: Default::default() }) });
        view
    }

    #[test]
    fn the_snapshot_choice_names_an_epoch_of_the_mirror() {
        let view = view();
        let mut panel = MaskPanel::default();
        assert_eq!(panel.epoch(&view), Some(2), "the last base epoch, not the UM epoch after it");
        panel.snapshot = MaskSnapshot::Epoch(3);
        assert_eq!(panel.epoch(&view), Some(3));
        panel.snapshot = MaskSnapshot::Epoch(4);
        assert_eq!(panel.epoch(&view), None, "an epoch the run does not have");
    }

    #[test]
    fn gamma_from_the_mask_ratio_waits_for_the_complete_answer() {
        let mut view = view();
        // The answers of `answer()` are of epoch 1.
        let mut panel = MaskPanel { snapshot: MaskSnapshot::Epoch(1), ..MaskPanel::default() };
        let id = view.next_mask_request();
        view.sent(&Command::Mask(crate::worker::MaskRequest { id, ratio: 0.5, kind: MaskKind::Magnitude, epoch: Some(1), score: crate::ood::Score::Energy }));
        view.apply(WorkerEvent::MaskAnswer { request: id, answer: answer(0.5, 1.5, true) });
        assert_eq!(panel.gamma(&view), None, "a preview's gamma is an estimate");
        view.apply(WorkerEvent::MaskAnswer { request: id, answer: answer(0.5, 1.75, false) });
        assert_eq!(panel.gamma(&view), Some(1.75));
        // The slider moved (the request for 0.2 failed, or the worker has not reported busy yet):
        // the 0.5 answer's gamma must not fine-tune at 0.2. Nor at another kind or snapshot.
        panel.ratio = 0.2;
        assert_eq!(panel.gamma(&view), None, "another ratio's gamma");
        panel.ratio = 0.5;
        panel.kind = MaskKind::Random;
        assert_eq!(panel.gamma(&view), None, "another mask kind's gamma");
        panel.kind = MaskKind::Magnitude;
        panel.snapshot = MaskSnapshot::LastBase;
        assert_eq!(panel.gamma(&view), None, "another snapshot's gamma");
        panel.snapshot = MaskSnapshot::Epoch(1);
        assert_eq!(panel.gamma(&view), Some(1.75));
        panel.gamma_source = GammaSource::EpochLoss(1);
        assert_eq!(panel.gamma(&view), Some(record(1).train_eval_loss));
    }

    /// Detection figures where each score has its own AUROC (Energy `energy`, KNN `knn`).
    fn detection(energy: f64, knn: f64) -> Detection {
        let m = |auroc| Metrics { auroc, fpr95: 0.3, aupr_in: 0.5, aupr_out: 0.5 };
        let scores: ScoreMetrics = [(Score::Energy, m(energy)), (Score::Knn, m(knn))].into();
        Detection { test_acc: 0.8, val_name: "val".into(), val: scores.clone(), ood: [("uniform".to_string(), scores.clone())].into(), ood_mean: scores, problems: Vec::new(), pending: Vec::new() }
    }

    /// An answer at `ratio` with the full model's detection; a preview carries its own masked one.
    fn answer_with_detection(ratio: f64, gamma: f64, preview: bool) -> std::sync::Arc<AtypicalSet> {
        let mut a = (*answer(ratio, gamma, preview)).clone();
        a.full_detection = Some(detection(0.70, 0.60));
        if preview {
            a.masked_detection = Some(detection(0.72, 0.65));
        }
        std::sync::Arc::new(a)
    }

    type Tab = (MaskPanel, AppState);

    fn harness(panel: MaskPanel, view: AppState) -> egui_kittest::Harness<'static, Tab> {
        egui_kittest::Harness::builder().with_size([1400.0, 1400.0]).build_ui_state(|ui, (panel, view): &mut Tab| {
            panel.ui(ui, view);
        }, (panel, view))
    }

    /// Asks for the mask at `ratio`, as the app does when the slider moves.
    fn ask(h: &mut egui_kittest::Harness<'static, Tab>, ratio: f64) -> u64 {
        let (panel, view) = h.state_mut();
        panel.ratio = ratio;
        let id = view.next_mask_request();
        view.sent(&Command::Mask(crate::worker::MaskRequest { id, ratio, kind: MaskKind::Magnitude, epoch: Some(1), score: crate::ood::Score::Energy }));
        id
    }

    /// Where the parts below the answer sit: the gamma choice's heading and the sweep plot.
    fn layout(h: &egui_kittest::Harness<'static, Tab>) -> Vec<egui::Rect> {
        use egui_kittest::kittest::Queryable;
        vec![h.get_by_label("gamma for UM / UMAP").rect(), h.get_by_label_contains("plot: masked ID test accuracy").rect()]
    }

    fn sweep_point(ratio: f64) -> crate::unleash::MaskSweepPoint {
        crate::unleash::MaskSweepPoint { ratio, gamma: 0.1 + ratio, atypical: (ratio * 1000.0) as usize, masked_test_acc: 0.9 - ratio / 2.0, masked_ood_auroc: 0.8 - ratio / 4.0 }
    }

    /// The tab on snapshot 1 with a 5-point sweep and a complete answer at ratio 0.5, drawn.
    fn tab_with_a_sweep_and_an_answer() -> egui_kittest::Harness<'static, Tab> {
        let mut view = view();
        view.apply(WorkerEvent::Sweep { epoch: 1, kind: MaskKind::Magnitude, points: [0.01, 0.05, 0.2, 0.5, 0.95].map(sweep_point).to_vec(), complete: true });
        let panel = MaskPanel { snapshot: MaskSnapshot::Epoch(1), ..MaskPanel::default() };
        let mut h = harness(panel, view);
        let id = ask(&mut h, 0.5);
        h.state_mut().1.apply(WorkerEvent::MaskAnswer { request: id, answer: answer_with_detection(0.5, 1.5, false) });
        h.state_mut().1.apply(WorkerEvent::MaskDetection { request: id, detection: std::sync::Arc::new(detection(0.75, 0.55)) });
        h.run_steps(3);
        h
    }

    #[test]
    fn the_tab_holds_still_across_a_drag_and_the_last_answer_stays_greyed() {
        use egui_kittest::kittest::Queryable;
        let mut h = tab_with_a_sweep_and_an_answer();
        let before = layout(&h);
        h.get_by_label("AUROC masked");
        h.get_by_label_contains("complete: every training");

        // The slider moves: the 0.5 answer stays, greyed, with its table, until 0.2's arrives.
        let id = ask(&mut h, 0.2);
        h.run_steps(2);
        h.get_by_label_contains("showing the answer at ratio 0.500 (greyed) until the answer at 0.200 arrives");
        h.get_by_label("AUROC masked");
        assert_eq!(layout(&h), before, "the tab reflowed while the answer computed");
        // Its preview, its complete answer (the table greyed until its detection), its detection.
        let steps: [WorkerEvent; 3] = [
            WorkerEvent::MaskAnswer { request: id, answer: answer_with_detection(0.2, 1.2, true) },
            WorkerEvent::MaskAnswer { request: id, answer: answer_with_detection(0.2, 1.25, false) },
            WorkerEvent::MaskDetection { request: id, detection: std::sync::Arc::new(detection(0.74, 0.5)) },
        ];
        for (k, event) in steps.into_iter().enumerate() {
            h.state_mut().1.apply(event);
            h.run_steps(2);
            h.get_by_label("AUROC masked");
            assert_eq!(layout(&h), before, "the tab reflowed at answer {k}");
        }
        h.get_by_label_contains("complete: every training");
        // A ratio so low that gamma is barely above the full model's loss (0.1): warned, in place.
        let id = ask(&mut h, 0.01);
        h.state_mut().1.apply(WorkerEvent::MaskAnswer { request: id, answer: answer_with_detection(0.01, 0.11, false) });
        h.state_mut().1.apply(WorkerEvent::MaskDetection { request: id, detection: std::sync::Arc::new(detection(0.7, 0.6)) });
        h.run_steps(2);
        h.get_by_label_contains("barely above the full model's loss");
        assert_eq!(layout(&h), before, "the tab reflowed at a gentle mask's warning");
    }

    #[test]
    fn a_narrow_log_axis_still_gets_marks() {
        let marks = |lo: f64, hi: f64| -> Vec<f64> { log_value_grid(egui_plot::GridInput { bounds: (lo.log10(), hi.log10()), base_step_size: 0.01 }).iter().map(|m| (10f64.powf(m.value) * 1e6).round() / 1e6).collect() };
        assert_eq!(marks(0.27, 0.4), [0.3, 0.35, 0.4]);
        // A wide one: 1, 2 and 5 times the powers of ten.
        assert_eq!(marks(0.15, 3.0), [0.2, 0.5, 1.0, 2.0]);
    }

    #[test]
    fn the_headline_uses_the_score_the_table_shows() {
        use egui_kittest::kittest::Queryable;
        let panel = MaskPanel { snapshot: MaskSnapshot::Epoch(1), table_score: Score::Knn, ..MaskPanel::default() };
        let mut h = harness(panel, view());
        let id = ask(&mut h, 0.5);
        h.state_mut().1.apply(WorkerEvent::MaskAnswer { request: id, answer: answer_with_detection(0.5, 1.5, false) });
        h.state_mut().1.apply(WorkerEvent::MaskDetection { request: id, detection: std::sync::Arc::new(detection(0.75, 0.55)) });
        h.run_steps(3);
        // KNN: masked 0.55 against the full model's 0.60.
        h.get_by_label(&format!("Mean test-OOD {} AUROC: masked 0.5500 vs full 0.6000 (-0.0500)", Score::Knn.name()));
    }

    /// The tick labels egui_plot painted left of `plot` (its y axis).
    fn y_tick_labels(h: &egui_kittest::Harness<'static, Tab>, plot: egui::Rect) -> Vec<String> {
        let mut labels = Vec::new();
        for clipped in &h.output().shapes {
            if let egui::epaint::Shape::Text(t) = &clipped.shape {
                let r = t.visual_bounding_rect();
                if r.right() <= plot.left() + 1.0 && r.left() >= plot.left() - 80.0 && r.center().y >= plot.top() && r.center().y <= plot.bottom() && t.galley.text().parse::<f64>().is_ok() {
                    labels.push(t.galley.text().to_string());
                }
            }
        }
        labels
    }

    #[test]
    fn the_sweep_plots_keep_their_y_labels_while_the_table_shows_and_clip_on_request() {
        use egui_kittest::kittest::{NodeT, Queryable};
        let mut h = tab_with_a_sweep_and_an_answer();
        h.get_by_label("AUROC masked");
        for title in ["gamma (log scale)", "atypical samples", "masked ID test accuracy", "masked mean test-OOD Energy AUROC"] {
            let plot = h.get_by_label_contains(&format!("plot: {title}, 5 points")).rect();
            let labels = y_tick_labels(&h, plot);
            assert!(labels.len() >= 3, "{title}: y tick labels {labels:?}");
        }
        // The full view fits the 0.95 point (950 atypical); the clipped one the ratios up to 0.6.
        let top = |h: &egui_kittest::Harness<'static, Tab>| {
            let label = h.get_by_label_contains("plot: atypical samples").accesskit_node().label().unwrap_or_default();
            label.rsplit(" to ").next().unwrap().parse::<f64>().unwrap()
        };
        assert!(top(&h) >= 950.0, "{}", top(&h));
        h.get_by_label("fit y to ratios up to 0.6").click();
        h.run_steps(3);
        assert!(top(&h) < 600.0 && top(&h) >= 500.0, "{}", top(&h));
    }
}
