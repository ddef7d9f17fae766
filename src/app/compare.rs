//! Compare two stages (best epoch by validation, final, CE control, UM, UMAP): score histograms of
//! ID vs an OOD set, ROC curves, and the metric tables side by side. Scores come from the run
//! folder's per-epoch score arrays, so this works on any reopened run; the worker's reader reads
//! them, off the UI thread.

use super::state::{RunView, StageScores};
use super::{palette, plots, Action};
use crate::ood::{metrics, Score};
use crate::run::EpochRecord;
use crate::worker::ScoresRequest;
use eframe::egui;
use egui_plot::{Bar, BarChart, Line, LineStyle, Plot};

/// Named stages of a run and their epochs.
pub fn stages(records: &[EpochRecord]) -> Vec<(String, usize)> {
    crate::run::stages(records).iter().map(|s| (s.name(), s.epoch)).collect()
}

/// The two stages compared (by name), the OOD set (by position) and the score.
pub struct ComparePanel {
    pub stages: [String; 2],
    pub set: usize,
    pub score: Score,
}

impl Default for ComparePanel {
    fn default() -> ComparePanel {
        ComparePanel { stages: ["best epoch".into(), "final".into()], set: 0, score: Score::Energy }
    }
}

impl ComparePanel {
    /// Asks for the score arrays it shows that the mirror does not hold yet.
    pub fn ui(&mut self, ui: &mut egui::Ui, view: &RunView) -> Option<Action> {
        show(self, ui, view)
    }
}

fn show(panel: &mut ComparePanel, ui: &mut egui::Ui, st: &RunView) -> Option<Action> {
    let stages = stages(&st.records);
    let Some(run) = st.run_dir.clone() else {
        ui.label("No run yet.");
        return None;
    };
    if stages.is_empty() {
        ui.label("Stages appear after the first epoch.");
        return None;
    }
    // A stage this run does not have (an imported run has neither best epoch nor final, another
    // run's fine-tune): the run's first stages stand in, so no label names a stage not shown.
    for (k, name) in panel.stages.iter_mut().enumerate() {
        if !stages.iter().any(|(n, _)| n == name) {
            *name = stages[k.min(stages.len() - 1)].0.clone();
        }
    }
    let sets: Vec<String> = st.records.last().map(|r| r.ood.keys().cloned().collect()).unwrap_or_default();
    if sets.is_empty() {
        ui.label("This run has no test OOD sets.");
        return None;
    }
    panel.set = panel.set.min(sets.len() - 1);
    let epoch_of = |name: &str| stages.iter().find(|(n, _)| n == name).map(|(_, e)| *e).unwrap_or(stages[0].1);
    ui.horizontal(|ui| {
        for (k, label) in ["stage A", "stage B"].iter().enumerate() {
            let selected = stage_text(st, &panel.stages[k], epoch_of(&panel.stages[k]));
            egui::ComboBox::from_label(*label).selected_text(selected).show_ui(ui, |ui| {
                for (name, e) in &stages {
                    ui.selectable_value(&mut panel.stages[k], name.clone(), stage_text(st, name, *e));
                }
            });
        }
        egui::ComboBox::from_label("OOD set").selected_text(sets[panel.set].clone()).show_ui(ui, |ui| {
            for (i, s) in sets.iter().enumerate() {
                ui.selectable_value(&mut panel.set, i, s);
            }
        });
        egui::ComboBox::from_label("score").selected_text(panel.score.name()).show_ui(ui, |ui| {
            for s in Score::ALL.into_iter().filter(|s| st.records.last().is_some_and(|r| r.ood_mean.contains_key(s))) {
                ui.selectable_value(&mut panel.score, s, s.name());
            }
        });
    });
    let picked: Vec<(String, usize)> = panel.stages.iter().map(|n| (n.clone(), epoch_of(n))).collect();
    let set = sets[panel.set].clone();
    let score = panel.score;
    let mut loaded = Vec::new();
    let mut to_read = Vec::new();
    for (name, e) in &picked {
        let [id, ood] = ["id_test", set.as_str()].map(|s| {
            let request = ScoresRequest { run: run.clone(), epoch: *e, set: s.to_string() };
            let known = st.stage_scores.get(&request).cloned();
            if known.is_none() && !to_read.contains(&request) {
                to_read.push(request);
            }
            known
        });
        match (id, ood) {
            (Some(StageScores::Loaded(i)), Some(StageScores::Loaded(o))) => match (i.get(&score), o.get(&score)) {
                (Some(i), Some(o)) => loaded.push((stage_text(st, name, *e), *e, i.clone(), o.clone())),
                _ => {
                    ui.label(format!("{name}: epoch {e} has no {} scores", score.name()));
                }
            },
            (Some(StageScores::Missing(why)), _) | (_, Some(StageScores::Missing(why))) => {
                ui.label(format!("{name}: score arrays of epoch {e} cannot be read: {why}"));
            }
            _ => {
                ui.label(format!("{name}: reading the score arrays of epoch {e}..."));
            }
        }
    }
    let asked = (!to_read.is_empty()).then_some(Action::ReadScores(to_read));
    if loaded.is_empty() {
        return asked;
    }
    let w = (ui.available_width() / 3.0 - 8.0).max(180.0);
    let h = (ui.available_height() * 0.62).max(180.0);
    let set_color = palette::set_color(panel.set);
    let arrays: Vec<(&[f32], &[f32])> = loaded.iter().map(|(_, _, id, ood)| (id.as_slice(), ood.as_slice())).collect();
    let (histograms, bounds) = shared_histograms(&arrays, 40);
    ui.horizontal(|ui| {
        for ((name, e, _, _), (bi, bo)) in loaded.iter().zip(histograms) {
            ui.vertical(|ui| {
                ui.horizontal(|ui| {
                    stage_swatch(ui, st, *e);
                    ui.label(egui::RichText::new(format!("{name}: {} ID test vs {set}", score.name())).strong());
                });
                palette::key_row(ui, &[("ID test".to_string(), palette::ID_COLOR, LineStyle::Solid, 6.0), (set.clone(), set_color, LineStyle::Solid, 6.0)]);
                let resp = Plot::new(format!("hist-{name}"))
                    .width(w)
                    .height(h - 20.0)
                    .include_x(bounds[0])
                    .include_x(bounds[1])
                    .include_y(0.0)
                    .include_y(bounds[2])
                    .y_grid_spacer(plots::nice_grid).y_axis_formatter(plots::tick_label)
                    .x_grid_spacer(plots::nice_grid_x).x_axis_formatter(plots::tick_label)
                    .x_axis_label(score.name())
                    .y_axis_label("share")
                    .show(ui, |pu| {
                        let fmt = |who: String| Box::new(move |bar: &Bar, _: &BarChart| format!("{who}\nscore {:.4}: share {:.4}", bar.argument, bar.value));
                        pu.bar_chart(BarChart::new("ID test", bi).color(palette::ID_COLOR.gamma_multiply_u8(160)).element_formatter(fmt("ID test".into())));
                        pu.bar_chart(BarChart::new(set.clone(), bo).color(set_color.gamma_multiply_u8(160)).element_formatter(fmt(set.clone())));
                    });
                // The axes drawn, for screen readers and the kittests (A and B share them).
                let b = resp.transform.bounds();
                let label = format!("plot: score histogram of {name}: x {:.4} to {:.4}, y {:.4} to {:.4}", b.min()[0], b.max()[0], b.min()[1], b.max()[1]);
                resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
            });
        }
        ui.vertical(|ui| {
            ui.label(egui::RichText::new(format!("ROC ({set}, ID positive)")).strong());
            let curves: Vec<(&String, egui::Color32, Vec<[f64; 2]>)> = loaded.iter().filter_map(|(name, e, id, ood)| Some((name, stage_color(st, *e), roc_line(id, ood)?))).collect();
            let mut keys: Vec<(String, egui::Color32, LineStyle, f32)> = curves.iter().map(|(name, color, _)| ((*name).clone(), *color, LineStyle::Solid, 2.0)).collect();
            keys.push(("chance".to_string(), egui::Color32::GRAY, LineStyle::Solid, 1.0));
            palette::key_row(ui, &keys);
            let hover: plots::HoverLines = curves.iter().map(|(name, _, points)| ((*name).clone(), points.clone())).collect();
            let resp = Plot::new("roc")
                .width(w)
                .height(h - 20.0)
                .include_x(0.0)
                .include_x(1.0)
                .include_y(0.0)
                .include_y(1.0)
                .y_grid_spacer(plots::nice_grid).y_axis_formatter(plots::tick_label)
                .x_grid_spacer(plots::nice_grid_x).x_axis_formatter(plots::tick_label)
                .label_formatter(move |pos| roc_hover(&hover, pos))
                .x_axis_label("FPR")
                .y_axis_label("TPR")
                .show(ui, |pu| {
                    for (name, color, points) in &curves {
                        pu.line(Line::new((*name).clone(), points.clone()).color(*color).width(2.0));
                    }
                    pu.line(Line::new("chance", vec![[0.0, 0.0], [1.0, 1.0]]).color(egui::Color32::GRAY));
                });
            // The curves drawn, for screen readers and the kittests.
            let drawn: Vec<String> = curves.iter().map(|(name, _, points)| format!("{name}: {} points", points.len())).collect();
            let label = format!("plot: ROC curves ({set}): {}", drawn.join("; "));
            resp.response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, label.clone()));
        });
    });
    table(ui, &st.records, &picked);
    asked
}

/// A stage as the menu and the plots name it: "UM (epoch 8)", and where its fine-tune ended before
/// the epochs asked (as far as this session saw, see [`RunView::cut_short`]) "UM (epoch 7,
/// incomplete: 1 of 3 epochs)".
fn stage_text(st: &RunView, name: &str, epoch: usize) -> String {
    match st.cut_short(epoch) {
        Some((done, asked)) => format!("{name} (epoch {epoch}, incomplete: {done} of {asked} epochs)"),
        None => format!("{name} (epoch {epoch})"),
    }
}

/// The ROC curve the view draws, as plot points (FPR, TPR) from (0, 0) to (1, 1); None when the
/// scores give no curve (an empty or non-finite set).
fn roc_line(id: &[f32], ood: &[f32]) -> Option<Vec<[f64; 2]>> {
    let curve = metrics::roc_curve(id, ood).ok()?;
    Some(curve.into_iter().map(|(fpr, tpr)| [fpr, tpr]).collect())
}

/// The ROC plot's hover text: each curve's TPR at the FPR nearest the pointer.
fn roc_hover(curves: &plots::HoverLines, pos: &egui_plot::HoverPosition) -> Option<String> {
    let (egui_plot::HoverPosition::NearDataPoint { position, .. } | egui_plot::HoverPosition::Elsewhere { position }) = pos;
    let mut text = format!("FPR {:.4}", position.x.clamp(0.0, 1.0));
    for (name, points) in curves {
        // The highest TPR reached at this FPR: the curve's step at x.
        let tpr = points.iter().filter(|p| p[0] <= position.x).map(|p| p[1]).fold(f64::NAN, f64::max);
        if tpr.is_finite() {
            text.push_str(&format!("\n{name}: TPR {tpr:.4}"));
        }
    }
    Some(text)
}

/// A stage's color, the same as its curves' in the training tab: a fine-tune's is its branch's,
/// the base training's "final" and "best epoch" each their own.
fn stage_color(st: &RunView, epoch: usize) -> egui::Color32 {
    let branches = super::training::branches(st);
    let branch = branches.iter().find(|b| b.records.iter().any(|r| r.epoch == epoch));
    match branch.and_then(|b| b.color) {
        Some(c) => c,
        None if crate::run::best_by_validation(&st.records, Score::Energy, Some(crate::run::Phase::Base)) == Some(epoch) && st.last_base_epoch() != Some(epoch) => palette::BEST_STAGE_COLOR,
        None => palette::FINAL_COLOR,
    }
}

/// A swatch of the stage's color, before its name.
fn stage_swatch(ui: &mut egui::Ui, st: &RunView, epoch: usize) {
    palette::key_row(ui, &[(String::new(), stage_color(st, epoch), LineStyle::Solid, 4.0)]);
}

/// A stage's ID and OOD histogram bars.
type TwinBars = (Vec<Bar>, Vec<Bar>);

/// The histograms of each stage's ID and OOD scores on the same bins, and the bounds they share
/// ([x min, x max, largest share]): stages A and B are drawn on the same axes, so that their
/// shapes compare at a glance.
fn shared_histograms(stages: &[(&[f32], &[f32])], bins: usize) -> (Vec<TwinBars>, [f64; 3]) {
    let all = || stages.iter().flat_map(|(a, b)| a.iter().chain(b.iter())).copied().filter(|v| v.is_finite());
    let lo = all().fold(f32::INFINITY, f32::min) as f64;
    let hi = all().fold(f32::NEG_INFINITY, f32::max) as f64;
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let bars = |v: &[f32]| {
        let mut c = vec![0usize; bins];
        for &x in v.iter().filter(|x| x.is_finite()) {
            c[(((f64::from(x) - lo) / width) as usize).min(bins - 1)] += 1;
        }
        c.iter().enumerate().map(|(i, &n)| Bar::new(lo + (i as f64 + 0.5) * width, n as f64 / v.len().max(1) as f64).width(width)).collect::<Vec<_>>()
    };
    let histograms: Vec<TwinBars> = stages.iter().map(|(a, b)| (bars(a), bars(b))).collect();
    let top = histograms.iter().flat_map(|(a, b)| a.iter().chain(b)).map(|bar| bar.value).fold(0.0, f64::max);
    (histograms, [lo, hi.max(lo + width), top])
}

fn table(ui: &mut egui::Ui, records: &[EpochRecord], picked: &[(String, usize)]) {
    egui::ScrollArea::vertical().id_salt("compare_table").show(ui, |ui| {
        egui::Grid::new("compare_grid").striped(true).num_columns(2 + picked.len() * 2).show(ui, |ui| {
            ui.label("OOD set");
            ui.label("score");
            for (name, e) in picked {
                ui.label(format!("{name} ({e}) AUROC"));
                ui.label("FPR95");
            }
            ui.end_row();
            let Some(r0) = records.get(picked[0].1 - 1) else { return };
            let mut names: Vec<String> = r0.ood.keys().cloned().collect();
            names.push("mean".into());
            names.push(format!("{} (validation)", r0.val_name));
            for set in &names {
                // Scores the first stage has (runs from before the detectors have three).
                for s in Score::ALL.into_iter().filter(|s| r0.ood_mean.contains_key(s)) {
                    ui.label(set);
                    ui.label(s.name());
                    for (_, e) in picked {
                        let r = &records[e - 1];
                        let m = if set == "mean" { r.ood_mean.get(&s) } else if set.ends_with("(validation)") { r.val.get(&s) } else { r.ood.get(set).and_then(|m| m.get(&s)) };
                        ui.label(m.map_or("-".into(), |m| format!("{:.4}", m.auroc)));
                        ui.label(m.map_or("-".into(), |m| format!("{:.4}", m.fpr95)));
                    }
                    ui.end_row();
                }
            }
            ui.label("ID test acc");
            ui.label("");
            for (_, e) in picked {
                ui.label(format!("{:.4}", records[e - 1].test_acc));
                ui.label("");
            }
            ui.end_row();
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` scores on a grid of `levels` values (ties when n > levels), from a fixed-seed LCG.
    fn scores(seed: u64, n: usize, levels: u64, shift: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) % levels) as f32 / 4.0 + shift
            })
            .collect()
    }

    #[test]
    fn the_drawn_roc_points_give_the_metrics_auroc_and_fpr95() {
        // (ID, OOD, grid levels): few ties, heavy ties, large sets, a tiny set.
        let sizes = [(20, 30, 1000), (100, 57, 9), (333, 1000, 200), (7, 3, 2), (40, 40, 1000), (400, 300, 37)];
        let mut cases: Vec<(Vec<f32>, Vec<f32>)> = sizes.iter().enumerate().map(|(k, &(p, n, levels))| (scores(2 * k as u64 + 1, p, levels, 1.0), scores(2 * k as u64 + 2, n, levels, 0.0))).collect();
        // A drawn point at TPR exactly 0.95 (19 of 20 ID samples, FPR 1/4), the next at FPR 2/4.
        cases.push(((2..=21).map(|v| v as f32).collect(), vec![5.5, 2.5, 1.0, 0.0]));
        for (k, (id, ood)) in cases.iter().enumerate() {
            let (id, ood) = (id.as_slice(), ood.as_slice());
            let points = roc_line(id, ood).unwrap();
            let m = metrics::compute(id, ood).unwrap();
            assert_eq!((points.first(), points.last()), (Some(&[0.0, 0.0]), Some(&[1.0, 1.0])), "case {k}");
            assert!(points.windows(2).all(|w| w[1][0] >= w[0][0] && w[1][1] >= w[0][1]), "case {k}: the curve goes back");
            let area: f64 = points.windows(2).map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0).sum();
            assert!((area - m.auroc).abs() < 1e-9, "case {k}: area under the drawn points {area}, AUROC {}", m.auroc);
            let fpr95 = points.iter().find(|q| q[1] >= 0.95).map(|q| q[0]).unwrap();
            assert_eq!(fpr95, m.fpr95, "case {k}: FPR at the first drawn point with TPR >= 0.95");
        }
        assert!(roc_line(&[], &[1.0]).is_none() && roc_line(&[f32::NAN], &[1.0]).is_none());
    }
}

#[cfg(test)]
mod panel_tests {
    use super::*;
    use crate::app::state::AppState;
    use crate::run::tests::record;
    use crate::worker::WorkerEvent;

    fn draw(panel: &mut ComparePanel, view: &RunView) -> Option<Action> {
        let mut asked = None;
        let _ = egui::Context::default().run_ui(egui::RawInput::default(), |ui| asked = panel.ui(ui, view));
        asked
    }

    #[test]
    fn the_panel_asks_once_for_the_score_arrays_the_mirror_lacks() {
        let mut view = AppState::new();
        let mut records = vec![record(1), record(2)];
        for r in &mut records {
            r.ood.insert("uniform".into(), crate::run::ScoreMetrics::new());
        }
        view.apply(WorkerEvent::RunLoaded { dir: "run".into(), records, loss_rows: Vec::new(), config: Box::new(crate::config::ExperimentConfig { data: crate::config::DataConfig::sample(), train: Default::default(), detectors: Default::default() }) });
        let mut panel = ComparePanel::default();
        let Some(Action::ReadScores(asked)) = draw(&mut panel, &view) else { panic!("no score arrays asked for") };
        let stages = stages(&view.records);
        let mut expected: Vec<ScoresRequest> = Vec::new();
        for name in &panel.stages {
            let epoch = stages.iter().find(|(n, _)| n == name).map_or(stages[0].1, |(_, e)| *e);
            for set in ["id_test", "uniform"] {
                let request = ScoresRequest { run: "run".into(), epoch, set: set.into() };
                if !expected.contains(&request) {
                    expected.push(request);
                }
            }
        }
        assert_eq!(asked, expected);
        for request in asked {
            view.scores_asked(request, true);
        }
        assert!(draw(&mut panel, &view).is_none(), "asked again while loading");
    }

    /// The x and y bounds a score histogram's label reports.
    fn bounds_of(label: &str) -> String {
        label.split_once(": x ").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    #[test]
    fn stages_a_and_b_share_their_histograms_axes_and_the_table_is_in_fractions() {
        use egui_kittest::kittest::{NodeT, Queryable};
        let mut view = AppState::new();
        // Epoch 1 is the best by validation, epoch 2 the final one: two stages, far apart scores.
        let mut records = vec![record(1), record(2)];
        for (r, val) in records.iter_mut().zip([0.9, 0.6]) {
            r.ood.insert("uniform".into(), crate::run::ScoreMetrics::new());
            r.val.insert(Score::Energy, crate::ood::Metrics { auroc: val, fpr95: 0.5, aupr_in: 0.5, aupr_out: 0.5 });
            r.ood_mean.insert(Score::Energy, crate::ood::Metrics { auroc: 0.8125, fpr95: 0.25, aupr_in: 0.5, aupr_out: 0.5 });
        }
        view.apply(WorkerEvent::RunLoaded { dir: "run".into(), records, loss_rows: Vec::new(), config: Box::new(crate::config::ExperimentConfig { data: crate::config::DataConfig::sample(), train: Default::default(), detectors: Default::default() }) });
        let arrays = |lo: f32, n: usize| -> std::sync::Arc<crate::worker::ScoreArrays> { std::sync::Arc::new([(Score::Energy, (0..n).map(|i| lo + i as f32 / n as f32).collect())].into()) };
        for (epoch, id, ood) in [(1, arrays(0.0, 50), arrays(-1.0, 20)), (2, arrays(3.0, 80), arrays(1.0, 10))] {
            for (set, scores) in [("id_test", id), ("uniform", ood)] {
                let request = ScoresRequest { run: "run".into(), epoch, set: set.into() };
                view.scores_asked(request.clone(), true);
                view.apply(WorkerEvent::Scores { request, scores: Ok(scores) });
            }
        }
        let mut h = egui_kittest::Harness::builder().with_size([1400.0, 900.0]).build_ui_state(
            |ui, (panel, view): &mut (ComparePanel, AppState)| {
                panel.ui(ui, view);
            },
            (ComparePanel::default(), view),
        );
        h.run_steps(3);
        let label = |name: &str| h.get_by_label_contains(&format!("plot: score histogram of {name}")).accesskit_node().label().unwrap_or_default();
        let (a, b) = (label("best epoch"), label("final"));
        assert!(!bounds_of(&a).is_empty(), "{a}");
        assert_eq!(bounds_of(&a), bounds_of(&b), "A and B on different axes");
        // Both reach from the lowest score of either stage (-1) to the highest (about 4).
        let x_lo: f64 = bounds_of(&a).split(' ').next().unwrap().parse().unwrap();
        let x_hi: f64 = bounds_of(&a).split(" to ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(x_lo <= -1.0 && x_hi >= 3.98, "{a}");
        // The table: fractions, as everywhere else in the app.
        assert!(h.get_all_by_label("0.8125").count() >= 2);
        assert!(h.query_by_label("81.25").is_none());
    }
}

#[cfg(test)]
mod branch_tests {
    use super::*;
    use crate::app::training::tests::branched_view;

    #[test]
    fn a_stage_of_a_fine_tune_cut_short_is_marked_incomplete() {
        let view = branched_view();
        let menu: Vec<String> = stages(&view.records).iter().map(|(name, e)| stage_text(&view, name, *e)).collect();
        assert_eq!(menu, ["best epoch (epoch 5)", "final (epoch 5)", "CE control (epoch 11)", "UM (epoch 12, incomplete: 1 of 3 epochs)"]);
    }

    #[test]
    fn each_stage_has_one_colour_the_same_as_its_branch_in_the_training_tab() {
        let view = branched_view();
        let branches = crate::app::training::branches(&view);
        let branch_color = |epoch: usize| branches.iter().find(|b| b.records.iter().any(|r| r.epoch == epoch)).and_then(|b| b.color);
        let colors: Vec<egui::Color32> = stages(&view.records).iter().map(|(_, e)| stage_color(&view, *e)).collect();
        // best epoch and final are both epoch 5 here: one stage, the base training's blue.
        assert_eq!(colors, [palette::FINAL_COLOR, palette::FINAL_COLOR, branch_color(11).unwrap(), branch_color(12).unwrap()]);
        assert_ne!(colors[2], colors[3]);
        assert!(colors[2..].iter().all(|c| *c != palette::FINAL_COLOR && *c != palette::BEST_STAGE_COLOR));
    }
}
