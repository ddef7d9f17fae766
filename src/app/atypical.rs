//! The atypical-sample browser: thumbnails with label, prediction, full and masked loss; sort by
//! masked loss or by increase; filter by class; pages; a click opens the sample large with its
//! loss across epochs.

use super::state::RunView;
use super::widgets::Thumbnails;
use super::{palette, plots, Action};
use crate::unleash::AtypicalSample;
use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints};

const PAGE: usize = 48;

/// The gallery's sort, class filter and page, the sample opened large, and the thumbnails made.
#[derive(Default)]
pub struct AtypicalPanel {
    pub sort_by_increase: bool,
    pub class: Option<u32>,
    pub page: usize,
    /// The mask answer the page belongs to (by `RunView::mask_answers`): a new answer starts at
    /// page 1.
    paged_answer: u64,
    /// The sample opened in the detail window (from the gallery or the loss tab's data map).
    pub selected_sample: Option<usize>,
    textures: Thumbnails,
}

impl AtypicalPanel {
    /// The gallery; it asks for nothing (a click opens the sample here).
    pub fn ui(&mut self, ui: &mut egui::Ui, view: &RunView) -> Option<Action> {
        show(self, ui, view);
        None
    }
}

fn show(panel: &mut AtypicalPanel, ui: &mut egui::Ui, view: &RunView) {
    if panel.paged_answer != view.mask_answers {
        panel.paged_answer = view.mask_answers;
        panel.page = 0;
    }
    let Some(set) = view.mask_result.clone() else {
        ui.label("No atypical set yet: move the mask-ratio slider (tab \"Mask ratio & UM\") to compute one.");
        return;
    };
    let Some(data) = view.data.clone() else {
        ui.label("The training data is not loaded (this run was opened without its data).");
        return;
    };
    ui.horizontal(|ui| {
        let scope = match set.preview {
            Some(p) => format!(" (preview: among a {}-sample subset of the training set; the complete set follows)", p.train),
            None => String::new(),
        };
        ui.label(format!(
            "{} atypical samples at mask ratio {:.3} ({}) of epoch {}: correct under the full model, wrong under the masked one. gamma = {:.4}{scope}",
            set.samples.len(),
            set.ratio,
            set.kind.key(),
            set.epoch,
            set.gamma
        ));
    });
    let st = view;
    ui.horizontal(|ui| {
        ui.label("Sort by");
        ui.selectable_value(&mut panel.sort_by_increase, false, "masked loss");
        ui.selectable_value(&mut panel.sort_by_increase, true, "loss increase");
        let classes = data.train.num_classes as u32;
        let selected = panel.class.map_or("all classes".to_string(), |c| st.class_name(c));
        egui::ComboBox::from_label("class filter").selected_text(selected).show_ui(ui, |ui| {
            ui.selectable_value(&mut panel.class, None, "all classes");
            for c in 0..classes {
                let name = st.class_name(c);
                ui.selectable_value(&mut panel.class, Some(c), name);
            }
        });
    });
    let mut items: Vec<AtypicalSample> = set.samples.iter().copied().filter(|a| panel.class.is_none_or(|c| a.label == c)).collect();
    if panel.sort_by_increase {
        items.sort_by(|a, b| b.loss_increase().total_cmp(&a.loss_increase()).then(a.index.cmp(&b.index)));
    }
    let pages = items.len().div_ceil(PAGE).max(1);
    panel.page = panel.page.min(pages - 1);
    ui.horizontal(|ui| {
        if ui.add_enabled(panel.page > 0, egui::Button::new("< Prev")).clicked() {
            panel.page -= 1;
        }
        ui.label(page_line(panel.page, pages, items.len(), set.samples.len()));
        if ui.add_enabled(panel.page + 1 < pages, egui::Button::new("Next >")).clicked() {
            panel.page += 1;
        }
    });
    let page: Vec<AtypicalSample> = items.iter().skip(panel.page * PAGE).take(PAGE).copied().collect();
    let scale = 3.0;
    let cell = egui::vec2(data.train.shape.width as f32 * scale + 12.0, data.train.shape.height as f32 * scale + 66.0);
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            for a in page {
                let tex = panel.textures.get(ui.ctx(), &data.train, a.index);
                ui.allocate_ui(cell, |ui| {
                    ui.vertical(|ui| {
                        let size = tex.size_vec2() * scale;
                        let resp = ui.add(egui::Image::new((tex.id(), size)).sense(egui::Sense::click()).alt_text(format!("sample {}", a.index)));
                        if resp.clicked() {
                            panel.selected_sample = Some(a.index);
                        }
                        let name = |c| st.class_name(c);
                        ui.label(egui::RichText::new(format!("#{} {}", a.index, name(a.label))).small().strong());
                        ui.label(egui::RichText::new(format!("masked: {}", name(a.masked_prediction))).small());
                        ui.label(egui::RichText::new(format!("loss {:.3} -> {:.3}", a.full_loss, a.masked_loss)).small());
                    });
                });
            }
        });
    });
}

/// "48 shown (page 1 of 9) of 399": the samples on this page, the page, and the whole set; a
/// class filter adds how many of the set it keeps.
fn page_line(page: usize, pages: usize, filtered: usize, total: usize) -> String {
    let on_page = filtered.saturating_sub(page * PAGE).min(PAGE);
    let of = if filtered == total { format!("{total}") } else { format!("{filtered} in this class, {total} in all") };
    format!("{on_page} shown (page {} of {pages}) of {of}", page + 1)
}

impl AtypicalPanel {
    /// The selected sample, large, with its loss across epochs and UM's `gamma`.
    pub fn sample_window(&mut self, ctx: &egui::Context, view: &RunView, gamma: Option<f64>) {
        sample_window(self, ctx, view, gamma);
    }
}

fn sample_window(panel: &mut AtypicalPanel, ctx: &egui::Context, st: &RunView, gamma: Option<f64>) {
    let Some(i) = panel.selected_sample else { return };
    let mut open = true;
    let data = st.data.clone();
    // At the window's right edge, clear of the setup panel on the left (egui puts a new window at
    // the top left, over the sidebar).
    let right_top = ctx.content_rect().right_top() + egui::vec2(-16.0, 48.0);
    egui::Window::new(format!("Training sample #{i}")).open(&mut open).default_size([420.0, 520.0]).pivot(egui::Align2::RIGHT_TOP).default_pos(right_top).show(ctx, |ui| {
        if let Some(data) = &data {
            if i < data.train.len() {
                let tex = panel.textures.get(ctx, &data.train, i);
                ui.add(egui::Image::new((tex.id(), tex.size_vec2() * 10.0)).alt_text(format!("sample {i} large")));
                ui.label(format!("label: {}", st.class_name(data.train.labels[i])));
            }
        }
        if let Some(a) = st.mask_result.as_ref().and_then(|m| m.samples.iter().find(|a| a.index == i)) {
            let name = |c| st.class_name(c);
            ui.label(format!("atypical: full prediction {}, masked prediction {}, loss {:.4} -> {:.4}", name(a.full_prediction), name(a.masked_prediction), a.full_loss, a.masked_loss));
        }
        let pts: Vec<[f64; 2]> = st.loss_rows.iter().enumerate().filter_map(|(e, r)| r.get(i).map(|&l| [(e + 1) as f64, f64::from(l)])).collect();
        let mut keys = vec![("loss of this sample".to_string(), palette::FINAL_COLOR, egui_plot::LineStyle::Solid, 2.0)];
        if let Some(g) = gamma {
            keys.push((format!("gamma = {g:.4} (the mask slider's)"), palette::GAMMA_COLOR, egui_plot::LineStyle::Solid, 2.0));
        }
        palette::key_row(ui, &keys);
        let hover: plots::HoverLines = vec![("loss".to_string(), pts.clone())];
        Plot::new("sample_loss")
            .height(180.0)
            .x_axis_label("epoch")
            .y_axis_label("loss")
            .y_grid_spacer(plots::nice_grid)
            .y_axis_formatter(plots::tick_label)
            .x_grid_spacer(plots::nice_grid_x)
            .x_axis_formatter(plots::tick_label)
            .label_formatter(move |pos| plots::hover_text(&hover, pos, "epoch", |x| x))
            .show(ui, |pu| {
                pu.line(Line::new("loss of this sample", PlotPoints::from(pts)).color(palette::FINAL_COLOR).width(2.0));
                if let Some(g) = gamma {
                    pu.hline(egui_plot::HLine::new("gamma", g).color(palette::GAMMA_COLOR));
                }
            });
    });
    if !open {
        panel.selected_sample = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::state::tests::answer;
    use crate::worker::WorkerEvent;

    fn draw(panel: &mut AtypicalPanel, view: &RunView) {
        let _ = egui::Context::default().run_ui(egui::RawInput::default(), |ui| {
            panel.ui(ui, view);
        });
    }

    #[test]
    fn the_page_line_counts_the_samples_on_the_page() {
        assert_eq!(page_line(0, 9, 399, 399), "48 shown (page 1 of 9) of 399");
        assert_eq!(page_line(8, 9, 399, 399), "15 shown (page 9 of 9) of 399");
        assert_eq!(page_line(0, 1, 30, 399), "30 shown (page 1 of 1) of 30 in this class, 399 in all");
        assert_eq!(page_line(0, 1, 0, 0), "0 shown (page 1 of 1) of 0");
    }

    #[test]
    fn a_new_mask_answer_starts_the_gallery_at_its_first_page() {
        let mut view = RunView::new();
        let mut panel = AtypicalPanel { page: 3, ..Default::default() };
        draw(&mut panel, &view);
        assert_eq!(panel.page, 3, "no new answer: the page stays");
        let id = view.next_mask_request();
        view.sent(&crate::worker::Command::Mask(crate::worker::MaskRequest { id, ratio: 0.5, kind: crate::unleash::MaskKind::Magnitude, epoch: Some(1), score: crate::ood::Score::Energy }));
        view.apply(WorkerEvent::MaskAnswer { request: id, answer: answer(0.5, 1.0, false) });
        draw(&mut panel, &view);
        assert_eq!(panel.page, 0);
    }
}
