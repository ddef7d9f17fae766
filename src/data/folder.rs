//! Image folders: `root/<class>/<image>` (classes in sorted order), or a flat folder of images
//! (unlabelled; for OOD sets). PNG and JPEG.
//!
//! Rules, as documented in the README: files that are not PNG/JPEG by extension are ignored;
//! a PNG/JPEG that cannot be decoded is skipped with a warning (the count is reported); all images
//! must share the first image's width and height (a mismatch is an error naming the file); channels
//! follow the ID set when given (grayscale or RGB conversion), else the first image.

use super::{Dataset, ImageShape};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Loads a folder; `channels` forces 1 (grayscale) or 3 (RGB).
pub fn load(root: &Path, channels: Option<usize>) -> Result<Dataset> {
    let entries = sorted_entries(root)?;
    let class_dirs: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    let labelled = !class_dirs.is_empty();
    if labelled {
        for (class, dir) in class_dirs.iter().enumerate() {
            for f in sorted_entries(dir)?.into_iter().filter(|p| is_image(p)) {
                files.push((f, class as u32));
            }
        }
    } else {
        files.extend(entries.into_iter().filter(|p| is_image(p)).map(|f| (f, 0)));
    }
    if files.is_empty() {
        return Err(Error::bad_data(root, "no PNG or JPEG images found (expected class subfolders or a flat folder of images)"));
    }
    let mut shape: Option<ImageShape> = None;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut skipped = Vec::new();
    for (file, label) in &files {
        let img = match image::open(file) {
            Ok(img) => img,
            Err(e) => {
                skipped.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let ch = channels.unwrap_or_else(|| if img.color().has_color() { 3 } else { 1 });
        let this = ImageShape { channels: ch, height: img.height() as usize, width: img.width() as usize };
        let expected = *shape.get_or_insert(this);
        if this != expected {
            return Err(Error::bad_data(
                file,
                format!("image is {}x{} but earlier images in {} are {}x{}; all images must have one size", this.width, this.height, root.display(), expected.width, expected.height),
            ));
        }
        if ch == 1 {
            pixels.extend_from_slice(img.to_luma8().as_raw());
        } else {
            let rgb = img.to_rgb8();
            // HWC -> CHW
            for c in 0..3 {
                pixels.extend(rgb.as_raw().iter().skip(c).step_by(3));
            }
        }
        labels.push(*label);
    }
    for s in &skipped {
        eprintln!("warning: skipped unreadable image {s}");
    }
    let shape = shape.ok_or_else(|| Error::bad_data(root, format!("none of the {} images could be read", files.len())))?;
    Ok(Dataset {
        name: String::new(),
        origin: root.display().to_string(),
        shape,
        pixels,
        labels,
        num_classes: class_dirs.len().max(1),
        labelled,
    })
}
