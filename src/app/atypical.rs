//! The atypical-sample browser: thumbnails with label, prediction, full and masked loss; sort by
//! masked loss or by increase; filter by class; pages; a click opens the sample large with its
//! loss across epochs.

use super::UnleashApp;
use crate::unleash::AtypicalSample;
use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints};

const PAGE: usize = 48;

pub fn show(app: &mut UnleashApp, ui: &mut egui::Ui) {
    let Some(set) = app.state.mask_result.clone() else {
        ui.label("No atypical set yet: move the mask-ratio slider (tab \"Mask ratio & UM\") to compute one.");
        return;
    };
    let Some(data) = app.state.data.clone() else {
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
    let st = &mut app.state;
    ui.horizontal(|ui| {
        ui.label("Sort by");
        ui.selectable_value(&mut st.gallery_sort_by_increase, false, "masked loss");
        ui.selectable_value(&mut st.gallery_sort_by_increase, true, "loss increase");
        let classes = data.train.num_classes as u32;
        let selected = st.gallery_class.map_or("all classes".to_string(), |c| st.class_name(c));
        egui::ComboBox::from_label("class filter").selected_text(selected).show_ui(ui, |ui| {
            ui.selectable_value(&mut st.gallery_class, None, "all classes");
            for c in 0..classes {
                let name = st.class_name(c);
                ui.selectable_value(&mut st.gallery_class, Some(c), name);
            }
        });
    });
    let mut items: Vec<AtypicalSample> = set.samples.iter().copied().filter(|a| st.gallery_class.is_none_or(|c| a.label == c)).collect();
    if st.gallery_sort_by_increase {
        items.sort_by(|a, b| b.loss_increase().total_cmp(&a.loss_increase()).then(a.index.cmp(&b.index)));
    }
    let pages = items.len().div_ceil(PAGE).max(1);
    st.gallery_page = st.gallery_page.min(pages - 1);
    ui.horizontal(|ui| {
        if ui.add_enabled(st.gallery_page > 0, egui::Button::new("< Prev")).clicked() {
            st.gallery_page -= 1;
        }
        ui.label(format!("page {} of {pages} ({} shown of {})", st.gallery_page + 1, items.len(), set.samples.len()));
        if ui.add_enabled(st.gallery_page + 1 < pages, egui::Button::new("Next >")).clicked() {
            st.gallery_page += 1;
        }
    });
    let page: Vec<AtypicalSample> = items.iter().skip(st.gallery_page * PAGE).take(PAGE).copied().collect();
    let scale = 3.0;
    let cell = egui::vec2(data.train.shape.width as f32 * scale + 12.0, data.train.shape.height as f32 * scale + 66.0);
    egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            for a in page {
                let tex = app.textures.get(ui.ctx(), &data.train, a.index);
                ui.allocate_ui(cell, |ui| {
                    ui.vertical(|ui| {
                        let size = tex.size_vec2() * scale;
                        let resp = ui.add(egui::Image::new((tex.id(), size)).sense(egui::Sense::click()).alt_text(format!("sample {}", a.index)));
                        if resp.clicked() {
                            app.state.selected_sample = Some(a.index);
                        }
                        let name = |c| app.state.class_name(c);
                        ui.label(egui::RichText::new(format!("#{} {}", a.index, name(a.label))).small().strong());
                        ui.label(egui::RichText::new(format!("masked: {}", name(a.masked_prediction))).small());
                        ui.label(egui::RichText::new(format!("loss {:.3} -> {:.3}", a.full_loss, a.masked_loss)).small());
                    });
                });
            }
        });
    });
}

/// The selected sample, large, with its loss across epochs.
pub fn sample_window(app: &mut UnleashApp, ctx: &egui::Context) {
    let Some(i) = app.state.selected_sample else { return };
    let mut open = true;
    let data = app.state.data.clone();
    egui::Window::new(format!("Training sample #{i}")).open(&mut open).default_size([420.0, 520.0]).show(ctx, |ui| {
        if let Some(data) = &data {
            if i < data.train.len() {
                let tex = app.textures.get(ctx, &data.train, i);
                ui.add(egui::Image::new((tex.id(), tex.size_vec2() * 10.0)).alt_text(format!("sample {i} large")));
                ui.label(format!("label: {}", app.state.class_name(data.train.labels[i])));
            }
        }
        if let Some(a) = app.state.mask_result.as_ref().and_then(|m| m.samples.iter().find(|a| a.index == i)) {
            let name = |c| app.state.class_name(c);
            ui.label(format!("atypical: full prediction {}, masked prediction {}, loss {:.4} -> {:.4}", name(a.full_prediction), name(a.masked_prediction), a.full_loss, a.masked_loss));
        }
        let pts: PlotPoints = app.state.loss_rows.iter().enumerate().filter_map(|(e, r)| r.get(i).map(|&l| [(e + 1) as f64, f64::from(l)])).collect();
        let gamma = app.state.gamma();
        Plot::new("sample_loss").height(180.0).x_axis_label("epoch").y_axis_label("loss").show(ui, |pu| {
            pu.line(Line::new("loss of this sample", pts));
            if let Some(g) = gamma {
                pu.hline(egui_plot::HLine::new("gamma", g).color(egui::Color32::from_rgb(220, 60, 50)));
            }
        });
    });
    if !open {
        app.state.selected_sample = None;
    }
}
