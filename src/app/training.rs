//! Live curves: train/test loss, ID accuracy, and OOD AUROC and FPR95 per score per OOD set
//! (legend entries toggle lines), the best-by-validation epoch marked. Each fine-tune is a branch
//! of its own color, drawn from its start snapshot: its phase epoch k at x = from_epoch + k, so
//! that a UM and a CE control from the same snapshot lie over the same epochs, side by side, and
//! no line joins one phase to the next.

use super::{palette, plots};
use super::state::RunView;
use crate::ood::{Metrics, Score};
use crate::run::{best_by_validation, phase_blocks, EpochRecord, Phase};
use eframe::egui;
use egui_plot::{GridInput, GridMark, Line, LineStyle, MarkerShape, Plot, PlotPoints, PlotUi, VLine};

const SCORE_COLORS: [egui::Color32; 3] = [egui::Color32::from_rgb(90, 160, 230), egui::Color32::from_rgb(230, 150, 60), egui::Color32::from_rgb(80, 190, 120)];

/// The line style of each curve of the loss and accuracy plots, the same in every branch (the
/// branch is the color).
const TRAIN_STYLE: LineStyle = LineStyle::Solid;
const EVAL_STYLE: LineStyle = LineStyle::Dashed { length: 10.0 };
const TEST_STYLE: LineStyle = LineStyle::Dotted { spacing: 6.0 };
/// gamma: a wide translucent band at the constraint, over the epochs of the phase that used it.
const GAMMA_WIDTH: f32 = 5.0;
const GAMMA_ALPHA: u8 = 90;

/// A stretch of the curves: the base training, or a fine-tune drawn from its start snapshot (one
/// block of [`phase_blocks`]).
pub(crate) struct Branch<'a> {
    /// The legend's name: the block's label, for a fine-tune where it starts, and whether it was
    /// cut short.
    pub name: String,
    pub phase: Phase,
    pub from_epoch: usize,
    /// The record of the snapshot a fine-tune started from, where the run holds it: the branch's
    /// first point.
    pub start: Option<&'a EpochRecord>,
    pub records: Vec<&'a EpochRecord>,
    /// A fine-tune's own color; None for the base training, whose curves keep their own colors.
    pub color: Option<egui::Color32>,
}

impl Branch<'_> {
    /// Where an epoch of the branch is drawn: its phase epoch, counted from the start snapshot.
    pub fn x(&self, r: &EpochRecord) -> f64 {
        (self.from_epoch + r.phase_epoch) as f64
    }

    /// The records behind the branch's points, in order: the start snapshot's (at x = from_epoch),
    /// then the branch's own.
    pub fn point_records(&self) -> impl Iterator<Item = (f64, &EpochRecord)> {
        let start = self.start.map(|r| (self.from_epoch as f64, r));
        start.into_iter().chain(self.records.iter().map(|r| (self.x(r), *r)))
    }

    /// The gamma line: (x, gamma) over the phase's epochs (from its start snapshot) when it
    /// used one; empty otherwise.
    pub fn gamma_points(&self) -> Vec<[f64; 2]> {
        let Some(g0) = self.records.first().and_then(|r| r.gamma) else { return Vec::new() };
        let start = self.start.is_some().then_some([self.from_epoch as f64, g0]);
        start.into_iter().chain(self.records.iter().filter_map(|r| r.gamma.map(|g| [self.x(r), g]))).collect()
    }

    /// A line's color: the branch's, else the curve's own (`base`).
    fn color_or(&self, base: egui::Color32) -> egui::Color32 {
        self.color.unwrap_or(base)
    }
}

/// The run's branches, one per block of [`phase_blocks`]: the base training, then each fine-tune
/// from its start snapshot, in its own color; a fine-tune that ended before the epochs it was
/// asked for (as far as this session saw, see [`RunView::cut_short`]) is named incomplete.
pub(crate) fn branches(view: &RunView) -> Vec<Branch<'_>> {
    let mut of_phase: std::collections::HashMap<Phase, usize> = Default::default();
    phase_blocks(&view.records)
        .into_iter()
        .filter_map(|(label, from_epoch, records)| {
            let first = *records.first()?;
            let phase = first.phase;
            if phase == Phase::Base {
                return Some(Branch { name: label, phase, from_epoch, start: None, records, color: None });
            }
            let k = of_phase.entry(phase).or_default();
            let color = palette::branch_color(phase, *k);
            *k += 1;
            let mut name = format!("{label} from epoch {from_epoch}");
            if let Some((done, asked)) = view.cut_short(first.epoch) {
                name.push_str(&format!(", incomplete: {done} of {asked} epochs"));
            }
            let start = from_epoch.checked_sub(1).and_then(|i| view.records.get(i)).filter(|r| r.epoch == from_epoch);
            Some(Branch { name, phase, from_epoch, start, records, color: Some(color) })
        })
        .collect()
}

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
    let branches = branches(view);
    branch_legend(ui, &branches);
    // Two rows of plots and the OOD legend between them fill what is left.
    let h = ((ui.available_height() - 30.0) / 2.0).max(150.0);
    let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
    ui.horizontal(|ui| {
        let mut legend = vec![("train loss", SCORE_COLORS[0], TRAIN_STYLE, 2.0), ("train loss (eval pass)", SCORE_COLORS[2], EVAL_STYLE, 2.0), ("ID test loss", SCORE_COLORS[1], TEST_STYLE, 2.0)];
        if branches.iter().any(|b| !b.gamma_points().is_empty()) {
            legend.push(("gamma (over the phase that used it)", palette::MEAN_COLOR.gamma_multiply_u8(GAMMA_ALPHA), LineStyle::Solid, GAMMA_WIDTH));
        }
        let mut lines = loss_lines(&branches);
        lines.extend(gamma_lines(&branches));
        curve_plot(ui, "loss", "Loss", &legend, w, h, best, lines);
        let legend = [("train accuracy", SCORE_COLORS[0], TRAIN_STYLE, 2.0), ("ID test accuracy", SCORE_COLORS[1], TEST_STYLE, 2.0)];
        curve_plot(ui, "accuracy", "ID accuracy", &legend, w, h, best, accuracy_lines(&branches));
    });
    ood_legend(ui, records, &shown, per_set);
    ui.horizontal(|ui| {
        curve_plot(ui, "auroc", "OOD AUROC (test sets and validation)", &[], w, h, best, metric_lines(&branches, &shown, per_set, |m| m.auroc));
        curve_plot(ui, "fpr95", "OOD FPR95 (lower is better)", &[], w, h, best, metric_lines(&branches, &shown, per_set, |m| m.fpr95));
    });
}

/// One line of a plot, as drawn: what it is, how it looks, its points, and the epochs behind them.
pub(crate) struct PlotLine {
    pub name: String,
    pub color: egui::Color32,
    pub style: LineStyle,
    pub width: f32,
    pub points: Vec<[f64; 2]>,
    /// The record of each point (a fine-tune's first is its start snapshot's): what the tests
    /// check lines by.
    #[cfg_attr(not(test), allow(dead_code))]
    pub epochs: Vec<usize>,
    /// The markers at the points: circles on the base training, diamonds on a fine-tune, none on
    /// the gamma band.
    pub markers: Option<MarkerShape>,
}

/// A line of `branch`: `f` of each of its points, named after the curve and (for a fine-tune) the
/// branch, in the branch's color or the curve's own (`base_color`, for the base training).
fn branch_line(branch: &Branch, curve: &str, base_color: egui::Color32, style: LineStyle, width: f32, f: impl Fn(&EpochRecord) -> f64) -> PlotLine {
    let name = if branch.phase == Phase::Base { curve.to_string() } else { format!("{curve}, {}", branch.name) };
    let (points, epochs) = branch.point_records().map(|(x, r)| ([x, f(r)], r.epoch)).unzip();
    let markers = Some(if branch.phase == Phase::Base { MarkerShape::Circle } else { MarkerShape::Diamond });
    PlotLine { name, color: branch.color_or(base_color), style, width, points, epochs, markers }
}

/// The loss plot's lines: train loss, its eval pass and ID test loss, per branch.
pub(crate) fn loss_lines(branches: &[Branch]) -> Vec<PlotLine> {
    let mut lines = Vec::new();
    for b in branches {
        lines.push(branch_line(b, "train loss", SCORE_COLORS[0], TRAIN_STYLE, 1.5, |r| r.train_loss));
        lines.push(branch_line(b, "train loss (eval pass)", SCORE_COLORS[2], EVAL_STYLE, 1.5, |r| r.train_eval_loss));
        lines.push(branch_line(b, "ID test loss", SCORE_COLORS[1], TEST_STYLE, 1.5, |r| r.test_loss));
    }
    lines
}

/// The gamma of each branch that used one, over that branch's epochs only.
pub(crate) fn gamma_lines(branches: &[Branch]) -> Vec<PlotLine> {
    branches
        .iter()
        .filter_map(|b| {
            let points = b.gamma_points();
            if points.is_empty() {
                return None;
            }
            let epochs = b.point_records().map(|(_, r)| r.epoch).collect();
            let color = b.color_or(palette::MEAN_COLOR).gamma_multiply_u8(GAMMA_ALPHA);
            Some(PlotLine { name: format!("gamma, {}", b.name), color, style: LineStyle::Solid, width: GAMMA_WIDTH, points, epochs, markers: None })
        })
        .collect()
}

/// The accuracy plot's lines: train and ID test accuracy, per branch.
pub(crate) fn accuracy_lines(branches: &[Branch]) -> Vec<PlotLine> {
    let mut lines = Vec::new();
    for b in branches {
        lines.push(branch_line(b, "train accuracy", SCORE_COLORS[0], TRAIN_STYLE, 1.5, |r| r.train_acc));
        lines.push(branch_line(b, "ID test accuracy", SCORE_COLORS[1], TEST_STYLE, 1.5, |r| r.test_acc));
    }
    lines
}

/// Draws lines with small markers (so that a single epoch already shows).
fn draw(pu: &mut PlotUi, lines: Vec<PlotLine>) {
    for l in lines {
        if let Some(shape) = l.markers {
            let radius = if shape == MarkerShape::Circle { 2.0 } else { 3.5 };
            pu.points(egui_plot::Points::new(l.name.clone(), l.points.clone()).shape(shape).radius(radius).color(l.color));
        }
        pu.line(Line::new(l.name, PlotPoints::from(l.points)).color(l.color).style(l.style).width(l.width));
    }
}

/// The fine-tunes' legend, above the plots: a swatch of each branch's color and its name.
fn branch_legend(ui: &mut egui::Ui, branches: &[Branch]) {
    let entries: Vec<(String, egui::Color32)> = branches.iter().filter_map(|b| Some((b.name.clone(), b.color?))).collect();
    if entries.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label(egui::RichText::new("Fine-tunes, each drawn from its start snapshot (in the OOD plots: its mean of the test sets):").strong());
        palette::legend_row(ui, &entries, &[]);
    });
}

fn energy(r: &EpochRecord) -> Metrics {
    r.ood_mean.get(&Score::Energy).copied().unwrap_or(Metrics { auroc: f64::NAN, fpr95: f64::NAN, aupr_in: f64::NAN, aupr_out: f64::NAN })
}

/// Each score in its own line style. The base training: each OOD set in its own color (the same in
/// every view), the mean over the test sets thick and grey, the validation set in its own color.
/// A fine-tune: the mean over the test sets, thick, in the branch's color.
pub(crate) fn metric_lines(branches: &[Branch], shown: &[Score], per_set: bool, f: fn(&Metrics) -> f64) -> Vec<PlotLine> {
    let last = branches.last().and_then(|b| b.records.last());
    let sets: Vec<String> = if per_set { last.map(|r| r.ood.keys().cloned().collect()).unwrap_or_default() } else { Vec::new() };
    let val = last.map(|r| r.val_name.clone()).unwrap_or_default();
    let mut lines = Vec::new();
    for &score in shown {
        let style = palette::score_style(score);
        for b in branches {
            lines.push(branch_line(b, &format!("{} mean", score.name()), palette::MEAN_COLOR, style, 2.5, |r| r.ood_mean.get(&score).map_or(f64::NAN, f)));
            if b.phase != Phase::Base {
                continue;
            }
            for (i, set) in sets.iter().enumerate() {
                lines.push(branch_line(b, &format!("{} {set}", score.name()), palette::set_color(i), style, 1.2, |r| r.ood.get(set).and_then(|m| m.get(&score)).map_or(f64::NAN, f)));
            }
            lines.push(branch_line(b, &format!("{} {val} (validation)", score.name()), palette::VALIDATION_COLOR, style, 1.5, |r| r.val.get(&score).map_or(f64::NAN, f)));
        }
    }
    lines
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

/// The legend key of the best-epoch marker line.
pub(crate) fn best_epoch_key(best: usize) -> String {
    format!("best epoch by validation ({best})")
}

/// A plot of `lines` over epochs, its legend above it (the curves' keys, then the best-epoch
/// marker's), labelled ticks that fit the data's range, and on hover the epoch and each line's
/// value there.
#[allow(clippy::too_many_arguments)]
fn curve_plot(ui: &mut egui::Ui, id: &str, title: &str, legend: &[(&str, egui::Color32, LineStyle, f32)], w: f32, h: f32, best: Option<usize>, lines: Vec<PlotLine>) {
    ui.vertical(|ui| {
        // The legend wraps within the plot's width (a long one would push the next plot off).
        ui.set_max_width(w);
        ui.label(egui::RichText::new(title).strong());
        let mut keys: Vec<(String, egui::Color32, LineStyle, f32)> = legend.iter().map(|(n, c, s, w)| (n.to_string(), *c, *s, *w)).collect();
        if let Some(b) = best {
            keys.push((best_epoch_key(b), palette::BEST_EPOCH_COLOR, LineStyle::Solid, 1.5));
        }
        palette::key_row(ui, &keys);
        let hover: plots::HoverLines = lines.iter().map(|l| (l.name.clone(), l.points.clone())).collect();
        // The plot takes what the title and the legend above leave of `h`: every row of plots is
        // `h` tall however its legend wraps.
        let plot_h = (h - ui.min_rect().height() - ui.spacing().item_spacing.y).max(100.0);
        let resp = Plot::new(id)
            .width(w)
            .height(plot_h)
            .x_axis_label("epoch")
            .x_grid_spacer(epoch_grid)
            .y_grid_spacer(plots::nice_grid).y_axis_formatter(plots::tick_label)
            .y_axis_min_width(40.0)
            .label_formatter(move |pos| plots::hover_text(&hover, pos, "epoch", |x| x))
            .show(ui, |pu| {
                if let Some(b) = best {
                    pu.vline(VLine::new(best_epoch_key(b), b as f64).color(palette::BEST_EPOCH_COLOR).width(1.5));
                }
                draw(pu, lines);
            });
        resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, format!("plot: {title}")));
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::app::state::AppState;
    use crate::events::Event;
    use crate::run::tests::record;
    use crate::worker::WorkerEvent;
    use std::sync::Arc;

    /// Epoch `epoch` of `phase`: its phase epoch, start snapshot and gamma; every value it plots
    /// differs from every other epoch's.
    pub(crate) fn epoch_of(epoch: usize, phase: Phase, phase_epoch: usize, from_epoch: usize, gamma: Option<f64>) -> EpochRecord {
        let mut r = record(epoch);
        (r.phase, r.phase_epoch, r.from_epoch, r.gamma) = (phase, phase_epoch, from_epoch, gamma);
        let v = epoch as f64 / 100.0;
        (r.train_eval_loss, r.test_loss, r.train_acc, r.test_acc) = (1.0 + v, 2.0 + v, v, 0.5 + v);
        let m = Metrics { auroc: 0.5 + v, fpr95: 0.9 - v, aupr_in: 0.5, aupr_out: 0.5 };
        r.ood_mean.insert(Score::Energy, m);
        r.val.insert(Score::Energy, m);
        r.ood.insert("uniform".into(), [(Score::Energy, m)].into());
        r
    }

    /// The run: base 1-5, UM 6-8 from 5 (gamma 0.1), CE control 9-11 from 5, all read from
    /// disk; then, in this session, UM again from 5 (gamma 0.2), asked for 3 epochs and stopped
    /// after 1 (epoch 12).
    pub(crate) fn branched_view() -> AppState {
        let mut records: Vec<EpochRecord> = (1..=5).map(|e| epoch_of(e, Phase::Base, e, 0, None)).collect();
        records.extend((1..=3).map(|k| epoch_of(5 + k, Phase::Um, k, 5, Some(0.1))));
        records.extend((1..=3).map(|k| epoch_of(8 + k, Phase::Control, k, 5, None)));
        let mut view = AppState::new();
        let config = Box::new(crate::config::ExperimentConfig { data: crate::config::DataConfig::sample(), train: Default::default(), detectors: Default::default() });
        let loss_rows = (1..=11).map(|e| Arc::new(vec![0.1 * e as f32, 3.0])).collect();
        view.apply(WorkerEvent::RunLoaded { dir: "run".into(), records, loss_rows, config });
        view.apply(WorkerEvent::Engine(Event::PhaseStarted { phase: Phase::Um, first_epoch: 12, epochs: 3, batches: 1, samples: 2 }));
        view.apply(WorkerEvent::Engine(Event::EpochDone { record: Box::new(epoch_of(12, Phase::Um, 1, 5, Some(0.2))), per_sample_loss: Arc::new(vec![0.5, 0.1]) }));
        view.apply(WorkerEvent::Engine(Event::PhaseDone { phase: Phase::Um, stopped: true }));
        view
    }

    /// Every line of every plot of the training tab.
    fn all_lines(branches: &[Branch]) -> Vec<PlotLine> {
        let mut lines = loss_lines(branches);
        lines.extend(gamma_lines(branches));
        lines.extend(accuracy_lines(branches));
        for f in [|m: &Metrics| m.auroc, |m: &Metrics| m.fpr95] {
            lines.extend(metric_lines(branches, &[Score::Energy], true, f));
        }
        lines
    }

    #[test]
    fn each_fine_tune_is_a_branch_from_its_start_snapshot_and_no_line_joins_two_phases() {
        let view = branched_view();
        let branches = branches(&view);
        let names: Vec<&str> = branches.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["base training", "UM (gamma 0.100) from epoch 5", "CE control from epoch 5", "UM (gamma 0.200) from epoch 5, incomplete: 1 of 3 epochs"]);
        // Each fine-tune in its own color.
        let colors: Vec<_> = branches.iter().filter_map(|b| b.color).collect();
        assert_eq!(colors.len(), 3);
        assert!(colors.iter().enumerate().all(|(i, c)| !colors[..i].contains(c)), "{colors:?}");

        // The block of each epoch, as run::phase_blocks cuts them.
        let block_of = |epoch: usize| phase_blocks(&view.records).iter().position(|(_, _, b)| b.iter().any(|r| r.epoch == epoch)).unwrap();
        let lines = all_lines(&branches);
        for b in branches.iter().filter(|b| b.color.is_some()) {
            let of_branch: Vec<&PlotLine> = lines.iter().filter(|l| l.name.ends_with(&b.name)).collect();
            assert!(of_branch.len() >= 4, "{}: {} lines", b.name, of_branch.len());
        }
        for l in &lines {
            let xs: Vec<f64> = l.points.iter().map(|p| p[0]).collect();
            assert!(xs.windows(2).all(|w| w[1] > w[0]), "{}: x goes back: {xs:?}", l.name);
            // A fine-tune's first point is its start snapshot, on the base training.
            let own = if l.name.contains("from epoch") { &l.epochs[1..] } else { &l.epochs[..] };
            let blocks: Vec<usize> = own.iter().map(|&e| block_of(e)).collect();
            assert!(blocks.windows(2).all(|w| w[0] == w[1]), "{}: joins epochs of two phases: {:?}", l.name, l.epochs);
        }
        // The UM and control branches start at the start snapshot's x, with its values, and lie
        // over the phase epochs after it.
        let find = |name: &str| lines.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no line {name}"));
        let um = find("ID test loss, UM (gamma 0.100) from epoch 5");
        assert_eq!((um.epochs.clone(), um.points.clone()), (vec![5, 6, 7, 8], vec![[5.0, 2.05], [6.0, 2.06], [7.0, 2.07], [8.0, 2.08]]));
        let control = find("Energy mean, CE control from epoch 5");
        assert_eq!((control.epochs.clone(), control.points.clone()), (vec![5, 9, 10, 11], vec![[5.0, 0.55], [6.0, 0.59], [7.0, 0.60], [8.0, 0.61]]));
        let again = find("ID test accuracy, UM (gamma 0.200) from epoch 5, incomplete: 1 of 3 epochs");
        assert_eq!((again.epochs.clone(), again.points.clone()), (vec![5, 12], vec![[5.0, 0.55], [6.0, 0.62]]));
        let base = find("train accuracy");
        assert_eq!(base.epochs, [1, 2, 3, 4, 5]);
        assert_eq!(base.points.iter().map(|p| p[0]).collect::<Vec<_>>(), [1.0, 2.0, 3.0, 4.0, 5.0]);
        // Per-set and validation lines: the base training's only.
        assert!(lines.iter().filter(|l| l.name.contains("uniform") || l.name.contains("validation")).all(|l| l.epochs == [1, 2, 3, 4, 5]));
    }

    #[test]
    fn the_gamma_line_covers_only_the_phases_that_used_it() {
        let view = branched_view();
        let lines = gamma_lines(&branches(&view));
        let drawn: Vec<(&str, Vec<[f64; 2]>)> = lines.iter().map(|l| (l.name.as_str(), l.points.clone())).collect();
        assert_eq!(
            drawn,
            [
                ("gamma, UM (gamma 0.100) from epoch 5", vec![[5.0, 0.1], [6.0, 0.1], [7.0, 0.1], [8.0, 0.1]]),
                ("gamma, UM (gamma 0.200) from epoch 5, incomplete: 1 of 3 epochs", vec![[5.0, 0.2], [6.0, 0.2]]),
            ]
        );
    }

    #[test]
    fn only_a_fine_tune_seen_ending_short_is_incomplete() {
        let mut view = branched_view();
        // The same stop in a reopened run: the records do not say what was asked.
        let records = view.records.clone();
        let config = Box::new(crate::config::ExperimentConfig { data: crate::config::DataConfig::sample(), train: Default::default(), detectors: Default::default() });
        view.apply(WorkerEvent::RunLoaded { dir: "run".into(), records, loss_rows: Vec::new(), config });
        assert!(branches(&view).iter().all(|b| !b.name.contains("incomplete")));
        // A fine-tune still running is not incomplete; one that ends with every epoch asked is not.
        view.apply(WorkerEvent::Engine(Event::PhaseStarted { phase: Phase::Control, first_epoch: 13, epochs: 2, batches: 1, samples: 2 }));
        view.apply(WorkerEvent::Engine(Event::EpochDone { record: Box::new(epoch_of(13, Phase::Control, 1, 5, None)), per_sample_loss: Arc::new(vec![0.5, 0.1]) }));
        assert_eq!(branches(&view).last().map(|b| b.name.clone()), Some("CE control from epoch 5".into()));
        view.apply(WorkerEvent::Engine(Event::EpochDone { record: Box::new(epoch_of(14, Phase::Control, 2, 5, None)), per_sample_loss: Arc::new(vec![0.5, 0.1]) }));
        view.apply(WorkerEvent::Engine(Event::PhaseDone { phase: Phase::Control, stopped: false }));
        assert_eq!(branches(&view).last().map(|b| b.name.clone()), Some("CE control from epoch 5".into()));
        // A failed one (an error, no PhaseDone) after one of its two epochs is.
        view.apply(WorkerEvent::Engine(Event::PhaseStarted { phase: Phase::Umap, first_epoch: 15, epochs: 2, batches: 1, samples: 2 }));
        view.apply(WorkerEvent::Engine(Event::EpochDone { record: Box::new(epoch_of(15, Phase::Umap, 1, 8, Some(0.3))), per_sample_loss: Arc::new(vec![0.5, 0.1]) }));
        view.apply(WorkerEvent::Engine(Event::Error("diverged".into())));
        assert_eq!(branches(&view).last().map(|b| b.name.clone()), Some("UMAP (gamma 0.300) from epoch 8, incomplete: 1 of 2 epochs".into()));
    }

    type Tab = (TrainingPanel, AppState);

    fn harness(view: AppState) -> egui_kittest::Harness<'static, Tab> {
        egui_kittest::Harness::builder().with_size([1400.0, 900.0]).build_ui_state(|ui, (panel, view): &mut Tab| panel.ui(ui, view), (TrainingPanel::default(), view))
    }

    #[test]
    fn every_plot_names_its_best_epoch_marker_and_hover_reads_the_epoch_and_each_value() {
        use egui_kittest::kittest::{NodeT, Queryable};
        let mut h = harness(branched_view());
        h.run_steps(2);
        // The best base epoch by validation is 5; each of the four plots has its key above it.
        assert_eq!(h.get_all_by_label("best epoch by validation (5)").count(), 4);
        // The gamma band of the loss plot is in its legend too.
        h.get_by_label("gamma (over the phase that used it)");
        assert!(h.query_by_label_contains("\nID test loss: ").is_none(), "hover text before any hover");
        // Hovering the loss plot: the epoch under the pointer and each line's value there.
        h.get_by_label("plot: Loss").hover();
        h.run_steps(2);
        let node = h.get_by_label_contains("\nID test loss: ");
        let text = node.accesskit_node().label().or(node.value()).unwrap_or_default();
        assert!(text.starts_with("epoch "), "{text}");
        let epoch: usize = text.lines().next().unwrap()["epoch ".len()..].parse().unwrap();
        // The base training's ID test loss at that epoch (2 + epoch/100), as the record holds it.
        assert!(text.contains(&format!("\nID test loss: {:.4}", 2.0 + epoch as f64 / 100.0)), "{text}");
    }
}
