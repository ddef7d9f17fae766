//! Small shared pieces: the thumbnail texture cache.

use crate::data::Dataset;
use eframe::egui;
use std::collections::HashMap;

/// Textures of training samples, made once each (NEAREST filtering: pixel-exact upscale).
#[derive(Default)]
pub struct Thumbnails {
    textures: HashMap<usize, egui::TextureHandle>,
    /// Which dataset the cache belongs to (pointer identity of its pixels).
    owner: usize,
}

impl Thumbnails {
    pub fn get(&mut self, ctx: &egui::Context, ds: &Dataset, index: usize) -> egui::TextureHandle {
        let owner = ds.pixels.as_ptr() as usize;
        if owner != self.owner {
            self.textures.clear();
            self.owner = owner;
        }
        self.textures
            .entry(index)
            .or_insert_with(|| {
                let (w, h) = (ds.shape.width, ds.shape.height);
                let rgb = crate::export::sample_rgb(ds, index);
                let img = egui::ColorImage::from_rgb([w, h], &rgb);
                ctx.load_texture(format!("sample-{index}"), img, egui::TextureOptions::NEAREST)
            })
            .clone()
    }
}
