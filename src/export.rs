//! Exports: the model (.bpk and .safetensors), the report (markdown + JSON), the atypical list
//! (CSV) and a contact sheet of atypical samples (PNG). Every file is written atomically.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fsio;
use crate::model::Net;
use crate::ood::Score;
use crate::run::{best_by_validation, EpochRecord, Phase};
use crate::unleash::AtypicalSet;
use std::path::{Path, PathBuf};

/// Writes the model as `<stem>.bpk` and `<stem>.safetensors` beside `path`: both or neither.
pub fn export_model(model: &Net, path: &Path) -> Result<Vec<PathBuf>> {
    export_model_with(model, path, |m, p| m.save_safetensors(p))
}

/// [`export_model`] with the second writer given (tests inject a failing one). Each file is
/// written atomically; when the second fails, the first is put back as it was (removed, or its
/// earlier content restored), so a failed export leaves nothing behind.
fn export_model_with(model: &Net, path: &Path, write_second: impl FnOnce(&Net, &Path) -> Result<()>) -> Result<Vec<PathBuf>> {
    let bpk = path.with_extension("bpk");
    let st = path.with_extension("safetensors");
    let earlier = if bpk.is_file() { Some(std::fs::read(&bpk).map_err(|e| Error::io(&bpk, "read", e))?) } else { None };
    model.save_bpk(&bpk)?;
    if let Err(e) = write_second(model, &st) {
        let undo = match earlier {
            Some(bytes) => crate::fsio::write_atomic(&bpk, &bytes),
            None => std::fs::remove_file(&bpk).map_err(|e| Error::io(&bpk, "remove", e)),
        };
        if let Err(u) = undo {
            return Err(Error::Other(format!("{e}; and {} could not be put back: {u}", bpk.display())));
        }
        return Err(e);
    }
    Ok(vec![bpk, st])
}

/// The report of a run: markdown for people, JSON for programs.
pub fn report_markdown(records: &[EpochRecord], title: &str, device: &str) -> String {
    let mut md = format!("# {title}\n\nDevice: {device}. ID is the positive class; AUROC/FPR95 x100. Validation OOD set selects; test OOD sets are reported only.\n\n");
    let Some(last) = records.last() else {
        md.push_str("No epochs yet.\n");
        return md;
    };
    let mut stages: Vec<(String, &EpochRecord)> =
        crate::run::stages(records).iter().filter_map(|s| records.iter().find(|r| r.epoch == s.epoch).map(|r| (s.title(), r))).collect();
    if stages.is_empty() {
        stages.push((format!("epoch {}", last.epoch), last));
    }
    md.push_str("| stage | ID acc | val AUROC (E) |");
    let sets: Vec<String> = last.ood.keys().cloned().collect();
    for s in &sets {
        md.push_str(&format!(" {s} AUROC / FPR95 (E) |"));
    }
    md.push_str(" mean AUROC MSP / MaxLogit / Energy | mean FPR95 (E) |\n|---|---|---|");
    md.push_str(&"---|".repeat(sets.len() + 2));
    md.push('\n');
    let g = |m: &crate::run::ScoreMetrics, s: Score| m.get(&s).copied();
    for (name, r) in &stages {
        md.push_str(&format!("| {name} | {:.2} | {:.2} |", r.test_acc * 100.0, g(&r.val, Score::Energy).map_or(f64::NAN, |m| m.auroc * 100.0)));
        for s in &sets {
            let m = r.ood.get(s).and_then(|m| g(m, Score::Energy));
            md.push_str(&format!(" {:.2} / {:.2} |", m.map_or(f64::NAN, |m| m.auroc * 100.0), m.map_or(f64::NAN, |m| m.fpr95 * 100.0)));
        }
        let a = |s| g(&r.ood_mean, s).map_or(f64::NAN, |m| m.auroc * 100.0);
        md.push_str(&format!(" {:.2} / {:.2} / {:.2} | {:.2} |\n", a(Score::Msp), a(Score::MaxLogit), a(Score::Energy), g(&r.ood_mean, Score::Energy).map_or(f64::NAN, |m| m.fpr95 * 100.0)));
    }
    md.push_str(&detector_table(&stages));
    md.push_str("\n## Every epoch\n\n| epoch | phase | gamma | train loss | train acc | test acc | val AUROC (E) | mean AUROC (E) | mean FPR95 (E) |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in records {
        md.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            r.epoch,
            r.phase.name(),
            r.gamma.map_or("-".to_string(), |g| format!("{g:.4}")),
            r.train_loss,
            r.train_acc,
            r.test_acc,
            g(&r.val, Score::Energy).map_or(f64::NAN, |m| m.auroc),
            g(&r.ood_mean, Score::Energy).map_or(f64::NAN, |m| m.auroc),
            g(&r.ood_mean, Score::Energy).map_or(f64::NAN, |m| m.fpr95),
        ));
    }
    md
}

/// Each score's mean test-OOD AUROC / FPR95 at each stage: does a stage help every detector?
fn detector_table(stages: &[(String, &EpochRecord)]) -> String {
    let mut md = String::from("\n## Every detector\n\nMean over the test OOD sets, AUROC / FPR95 x100.\n\n| score |");
    for (name, _) in stages {
        md.push_str(&format!(" {name} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(stages.len()));
    md.push('\n');
    for score in Score::ALL.into_iter().filter(|s| stages.iter().any(|(_, r)| r.ood_mean.contains_key(s))) {
        md.push_str(&format!("| {} |", score.name()));
        for (_, r) in stages {
            let cell = r.ood_mean.get(&score).map_or("-".to_string(), |m| format!("{:.2} / {:.2}", m.auroc * 100.0, m.fpr95 * 100.0));
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md
}

pub fn export_report(records: &[EpochRecord], device: &str, path: &Path) -> Result<Vec<PathBuf>> {
    let md = path.with_extension("md");
    let json = path.with_extension("json");
    fsio::write_atomic(&md, report_markdown(records, "unleash report", device).as_bytes())?;
    let body = serde_json::json!({"device": device, "best_epoch_by_validation": best_by_validation(records, Score::Energy, Some(Phase::Base)), "epochs": records});
    fsio::write_atomic(&json, serde_json::to_string_pretty(&body).map_err(|e| Error::Other(e.to_string()))?.as_bytes())?;
    Ok(vec![md, json])
}

pub fn export_atypical_csv(set: &AtypicalSet, path: &Path) -> Result<Vec<PathBuf>> {
    let p = path.with_extension("csv");
    fsio::write_atomic(&p, set.to_csv().as_bytes())?;
    Ok(vec![p])
}

/// RGB pixels (HWC) of sample `i` of a set, for thumbnails and contact sheets.
pub fn sample_rgb(ds: &Dataset, i: usize) -> Vec<u8> {
    let img = ds.image(i);
    let plane = ds.shape.height * ds.shape.width;
    (0..plane)
        .flat_map(|p| {
            if ds.shape.channels >= 3 {
                [img[p], img[plane + p], img[2 * plane + p]]
            } else {
                [img[p]; 3]
            }
        })
        .collect()
}

/// A grid of the first `max` atypical samples, each upscaled `scale`x (nearest), with a coloured
/// bar under each: its masked loss relative to the largest.
pub fn contact_sheet(ds: &Dataset, set: &AtypicalSet, max: usize, scale: u32) -> Result<image::RgbImage> {
    let n = set.samples.len().min(max);
    if n == 0 {
        return Err(Error::Other(format!("no atypical samples at mask ratio {} to draw", set.ratio)));
    }
    let (w, h) = (ds.shape.width as u32 * scale, ds.shape.height as u32 * scale);
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let (cw, ch) = (w + 4, h + 8);
    let mut sheet = image::RgbImage::from_pixel(cols * cw, rows * ch, image::Rgb([255, 255, 255]));
    let max_loss = set.samples.iter().take(n).map(|a| a.masked_loss).fold(f32::MIN, f32::max).max(1e-6);
    for (k, a) in set.samples.iter().take(n).enumerate() {
        let (cx, cy) = ((k as u32 % cols) * cw + 2, (k as u32 / cols) * ch + 2);
        let rgb = sample_rgb(ds, a.index);
        for y in 0..h {
            for x in 0..w {
                let p = ((y / scale) as usize * ds.shape.width + (x / scale) as usize) * 3;
                sheet.put_pixel(cx + x, cy + y, image::Rgb([rgb[p], rgb[p + 1], rgb[p + 2]]));
            }
        }
        let bar = ((a.masked_loss / max_loss) * w as f32).round() as u32;
        for x in 0..bar.min(w) {
            for y in 0..3 {
                sheet.put_pixel(cx + x, cy + h + 1 + y, image::Rgb([220, 60, 40]));
            }
        }
    }
    Ok(sheet)
}

pub fn export_contact_sheet(ds: &Dataset, set: &AtypicalSet, path: &Path) -> Result<Vec<PathBuf>> {
    let p = path.with_extension("png");
    let sheet = contact_sheet(ds, set, 400, 3)?;
    let mut bytes = Vec::new();
    sheet
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::Other(format!("{}: cannot encode PNG: {e}", p.display())))?;
    fsio::write_atomic(&p, &bytes)?;
    Ok(vec![p])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_model() -> Net {
        let shape = crate::data::ImageShape { channels: 1, height: 8, width: 8 };
        Net::new(crate::config::ModelKind::Mlp, shape, 2, &crate::device::cpu().device).unwrap()
    }

    #[test]
    fn a_failing_second_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let model = tiny_model();
        let fail = |_: &Net, p: &Path| Err(Error::io(p, "write", std::io::Error::other("disk full (injected)")));
        let e = export_model_with(&model, &path, fail).unwrap_err().to_string();
        assert!(e.contains("injected"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
        // Over an earlier export, its files stay as they were.
        export_model(&model, &path).unwrap();
        let before = std::fs::read(path.with_extension("bpk")).unwrap();
        let other = tiny_model();
        assert!(export_model_with(&other, &path, fail).is_err());
        assert_eq!(std::fs::read(path.with_extension("bpk")).unwrap(), before);
        assert!(path.with_extension("safetensors").exists());
    }
}
