//! PNG plots for reports: mean test-OOD AUROC per epoch, with the fine-tune phases continuing from
//! the base run and shaded. Drawn with plotters; text uses egui's bundled Ubuntu font, so no
//! system fonts are needed.

use crate::error::{Error, Result};
use crate::ood::Score;
use crate::run::{phase_blocks, EpochRecord};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

const COLORS: [RGBColor; 6] = [RGBColor(40, 40, 40), RGBColor(230, 120, 20), RGBColor(30, 120, 220), RGBColor(20, 160, 90), RGBColor(170, 50, 170), RGBColor(200, 40, 40)];

/// AUROC (mean over test OOD sets, Energy score) vs epoch; one line per phase block, averaged over
/// the runs given (seeds). Fine-tunes start at their snapshot's epoch.
/// `labels` names the phase blocks in order (else each block's own label, from the first run).
pub fn auroc_vs_epoch(runs: &[(u64, Vec<EpochRecord>)], labels: Option<&[&str]>, path: &Path) -> Result<()> {
    register_font();
    let err = |e: String| Error::Other(format!("{}: cannot draw the plot: {e}", path.display()));
    let per_run: Vec<Vec<(String, usize, Vec<&EpochRecord>)>> = runs.iter().map(|(_, r)| phase_blocks(r)).collect();
    let Some(first) = per_run.first() else { return Ok(()) };
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1000, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let max_x = first.iter().map(|(_, from, recs)| from + recs.len()).max().unwrap_or(1) as f64;
        let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        let mut ymin: f64 = 1.0;
        for (k, (label, from, recs)) in first.iter().enumerate() {
            let mut pts = Vec::new();
            for (j, _) in recs.iter().enumerate() {
                let vals: Vec<f64> = per_run
                    .iter()
                    .filter_map(|blocks| blocks.get(k).and_then(|b| b.2.get(j)))
                    .filter_map(|r| r.ood_mean.get(&Score::Energy).map(|m| m.auroc))
                    .collect();
                if vals.is_empty() {
                    continue;
                }
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                ymin = ymin.min(mean);
                pts.push(((from + j + 1) as f64, mean));
            }
            // Fine-tunes continue from their starting snapshot's point.
            if *from > 0 {
                if let Some((_, base)) = lines.first() {
                    if let Some(&p) = base.iter().find(|p| p.0 as usize == *from) {
                        pts.insert(0, p);
                    }
                }
            }
            let label = labels.and_then(|l| l.get(k)).map_or_else(|| label.clone(), |l| l.to_string());
            lines.push((label, pts));
        }
        let y0 = (ymin - 0.05).clamp(0.0, 0.95);
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Mean test-OOD Energy AUROC vs epoch (mean of {} seed(s))", runs.len()), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5f64..max_x + 0.5, y0..1.0f64)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("AUROC")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let base_end = first.first().map_or(0, |b| b.2.len()) as f64;
        if max_x > base_end {
            chart
                .draw_series(std::iter::once(Rectangle::new([(base_end + 0.5, y0), (max_x + 0.5, 1.0)], RGBColor(235, 240, 250).filled())))
                .map_err(|e| err(e.to_string()))?
                .label("fine-tune phases")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], RGBColor(220, 228, 245).filled()));
        }
        for (k, (label, pts)) in lines.into_iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "replace", e))
}
