//! Image folders: `root/<class>/<image>`, or a flat folder of images (unlabelled; for OOD sets).
//! PNG and JPEG.
//!
//! Rules, as documented in the README:
//! - The classes are the training folder's subfolders, in sorted order. A test or validation
//!   folder is mapped onto them **by name** ([`load_as`]), so it may hold fewer classes or list
//!   them in another order; a class the training folder lacks is an error naming it.
//! - Entries that are not data are skipped and counted in one note: names starting with `.` or
//!   `__` (`__MACOSX/` from a macOS zip, `.DS_Store`, `.ipynb_checkpoints/`, AppleDouble `._*`
//!   files), at the top level and inside class folders.
//! - Files that are not PNG/JPEG by extension are ignored; a PNG/JPEG that cannot be decoded is
//!   skipped and counted in a note; all images must share the first image's width and height (a
//!   mismatch is an error naming the file); channels follow the ID set when given (grayscale or
//!   RGB conversion), else the first image.

use super::{Dataset, ImageShape};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Hidden entries, macOS archive leftovers (`__MACOSX`, AppleDouble `._x.png`), Python caches:
/// never data.
pub fn is_not_data(name: &str) -> bool {
    name.starts_with('.') || name.starts_with("__")
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The entries of `dir` that may be data, sorted; the others are added to `skipped`.
fn data_entries(dir: &Path, skipped: &mut Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    let mut v = Vec::new();
    for entry in rd {
        let path = entry.map_err(|e| Error::io(dir, "list", e))?.path();
        if is_not_data(&file_name(&path)) {
            skipped.push(path);
        } else {
            v.push(path);
        }
    }
    v.sort();
    skipped.sort();
    Ok(v)
}

/// The files a folder set reads, with their labels (subfolder index, or 0 when flat), its class
/// names (empty when flat), and the entries skipped as not data. Listing only: nothing is decoded.
pub struct Listing {
    pub files: Vec<(PathBuf, u32)>,
    pub classes: Vec<String>,
    pub skipped: Vec<PathBuf>,
}

/// Lists a folder set. With `classes` (the training set's), class subfolders are labelled by
/// their names' positions in it, and a name it lacks is an error.
pub fn list(root: &Path, classes: Option<&[String]>) -> Result<Listing> {
    let mut skipped = Vec::new();
    let entries = data_entries(root, &mut skipped)?;
    let class_dirs: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    let mut files = Vec::new();
    let names: Vec<String> = class_dirs.iter().map(|d| file_name(d)).collect();
    if class_dirs.is_empty() {
        files.extend(entries.into_iter().filter(|p| is_image(p)).map(|f| (f, 0)));
        return Ok(Listing { files, classes: Vec::new(), skipped });
    }
    let labels: Vec<u32> = match classes {
        None => (0..class_dirs.len() as u32).collect(),
        Some(known) => {
            let unknown: Vec<&str> = names.iter().filter(|n| !known.contains(n)).map(String::as_str).collect();
            if !unknown.is_empty() {
                return Err(Error::bad_data(
                    root,
                    format!(
                        "class folder(s) {} are not classes of the training set (its classes: {}); a test or validation folder's classes are matched to the training folder's by name",
                        quoted(&unknown),
                        quoted(&known.iter().map(String::as_str).collect::<Vec<_>>())
                    ),
                ));
            }
            names.iter().map(|n| known.iter().position(|k| k == n).expect("checked above") as u32).collect()
        }
    };
    for (dir, &label) in class_dirs.iter().zip(&labels) {
        for f in data_entries(dir, &mut skipped)?.into_iter().filter(|p| is_image(p)) {
            files.push((f, label));
        }
    }
    let classes = classes.map_or(names, <[String]>::to_vec);
    Ok(Listing { files, classes, skipped })
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

/// Loads a folder with its own classes; `channels` forces 1 (grayscale) or 3 (RGB).
pub fn load(root: &Path, channels: Option<usize>) -> Result<Dataset> {
    load_as(root, channels, None)
}

/// Loads a folder; with `classes` (the training set's class names), its class subfolders are
/// labelled by name (see [`list`]).
pub fn load_as(root: &Path, channels: Option<usize>, classes: Option<&[String]>) -> Result<Dataset> {
    let listing = list(root, classes)?;
    if listing.files.is_empty() {
        return Err(Error::bad_data(root, "no PNG or JPEG images found (expected class subfolders or a flat folder of images)"));
    }
    let mut shape: Option<ImageShape> = None;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut unreadable = Vec::new();
    for (file, label) in &listing.files {
        let img = match image::open(file) {
            Ok(img) => img,
            Err(e) => {
                unreadable.push(format!("{}: {e}", file.display()));
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
    let shape = shape.ok_or_else(|| Error::bad_data(root, format!("none of the {} images could be read", listing.files.len())))?;
    let mut notes = Vec::new();
    if !listing.skipped.is_empty() {
        notes.push(skipped_note(root, &listing.skipped));
    }
    if !unreadable.is_empty() {
        notes.push(format!("{}: skipped {} unreadable image(s): {}", root.display(), unreadable.len(), first_few(&unreadable)));
    }
    let labelled = !listing.classes.is_empty();
    Ok(Dataset {
        name: String::new(),
        origin: root.display().to_string(),
        shape,
        pixels,
        labels,
        num_classes: listing.classes.len().max(1),
        labelled,
        class_names: listing.classes,
        notes,
    })
}

/// "skipped 1 folder and 3 files that are not data (...): __MACOSX, .DS_Store, ..."
fn skipped_note(root: &Path, skipped: &[PathBuf]) -> String {
    let folders = skipped.iter().filter(|p| p.is_dir()).count();
    let files = skipped.len() - folders;
    let names: Vec<String> =
        skipped.iter().map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string()).collect();
    format!(
        "{}: skipped {folders} folder(s) and {files} file(s) that are not data (names starting with '.' or '__', such as __MACOSX/ and AppleDouble ._ files): {}",
        root.display(),
        first_few(&names)
    )
}

fn first_few(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", and {} more", items.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(4, 4, image::Luma([value])).save(path).unwrap();
    }

    /// Train: cat/ dog/ frog/ plus a macOS zip's leftovers; test: cat/ frog/ only.
    fn macos_layout() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let (train, test) = (d.path().join("train"), d.path().join("test"));
        for (k, class) in ["cat", "dog", "frog"].iter().enumerate() {
            png(&train.join(class).join("a.png"), 10 * k as u8);
            png(&train.join("__MACOSX").join(class).join("._a.png"), 0);
        }
        png(&train.join("cat").join("._b.png"), 0);
        std::fs::write(train.join(".DS_Store"), b"x").unwrap();
        png(&test.join("frog").join("x.png"), 20);
        png(&test.join("cat").join("y.png"), 0);
        png(&test.join(".hidden").join("z.png"), 0);
        d
    }

    #[test]
    fn test_classes_follow_training_names_and_strays_are_skipped() {
        let d = macos_layout();
        let train = load(&d.path().join("train"), None).unwrap();
        assert_eq!(train.class_names, vec!["cat", "dog", "frog"], "__MACOSX is no class");
        assert_eq!((train.num_classes, train.labels.clone()), (3, vec![0, 1, 2]));
        assert_eq!(train.notes.len(), 1, "{:?}", train.notes);
        let note = &train.notes[0];
        assert!(note.contains("skipped 1 folder(s) and 2 file(s)") && note.contains("__MACOSX"), "{note}");
        let test = load_as(&d.path().join("test"), None, Some(&train.class_names)).unwrap();
        // Sorted: cat (y.png, 0) then frog (x.png, 20); labels by name, not position.
        assert_eq!(test.labels, vec![0, 2]);
        assert_eq!(test.num_classes, 3);
        assert_eq!(test.image(1)[0], 20, "frog's pixels carry frog's label");
    }

    #[test]
    fn a_test_class_training_lacks_is_named() {
        let d = macos_layout();
        png(&d.path().join("test").join("horse").join("h.png"), 0);
        let train = load(&d.path().join("train"), None).unwrap();
        let e = load_as(&d.path().join("test"), None, Some(&train.class_names)).unwrap_err().to_string();
        assert!(e.contains("'horse'") && e.contains("'cat', 'dog', 'frog'") && e.contains("test"), "{e}");
    }
}
