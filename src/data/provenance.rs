//! What a data source *is*, beyond the path it was given:
//! - its **identity** (the family rule): two splits of one dataset are one family, whatever the
//!   split is called, and two datasets that happen to share a file name are not;
//! - **shared images**: a validation set read from disk may hold no image of any test set;
//! - its **fingerprint**: sizes and SHA-256 of the files a run was made from, so that every later
//!   job on the run can tell when the data on disk is no longer that data.

use super::{folder, idx, DataSource, Dataset};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Words that name a split rather than a dataset (`train-images-idx3-ubyte.gz`,
/// `t10k-images-idx3-ubyte.gz`, `cifar10_test/`, `val/`).
const SPLIT_WORDS: [&str; 9] = ["train", "training", "t10k", "test", "testing", "val", "valid", "validation", "dev"];

/// The name of a data file or folder with its split words (and CIFAR's `data_batch_N` /
/// `test_batch`) removed, as lowercase words joined by '-': `mnist-t10k-images-idx3-ubyte.gz`
/// -> `mnist-images-idx3-ubyte`, `t10k-images-idx3-ubyte.gz` -> `images-idx3-ubyte`,
/// `data_batch_3.bin` -> `batch`, `train/` -> ``.
pub fn name_without_split(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix(".gz").unwrap_or(&lower);
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut kept = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        // CIFAR's batches: data_batch_1..5 and test_batch are splits of one dataset.
        if matches!(words[i], "data" | "test") && words.get(i + 1) == Some(&"batch") {
            kept.push("batch");
            i += 2;
            if words.get(i).is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit())) {
                i += 1;
            }
            continue;
        }
        if !SPLIT_WORDS.contains(&words[i]) {
            kept.push(words[i]);
        }
        i += 1;
    }
    kept.join("-")
}

/// A dataset's identity: its folder (resolved, so `./data` and `/abs/data` agree) plus its name
/// without the split word. For a file or folder whose whole name is a split word (`train/`,
/// `data_batch_1.bin` beside `test_batch.bin`), the folder alone names the dataset.
pub fn identity(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    let stem = name_without_split(&name);
    if stem.is_empty() {
        format!("dataset in {}", dir.display())
    } else {
        format!("dataset '{stem}' in {}", dir.display())
    }
}

/// A name for tables when a file's own name says only its split (`t10k-images-idx3-ubyte.gz` ->
/// its folder's name, `fashion-mnist`); None when the name says more.
pub fn folder_name_if_split_only(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name_without_split(&name);
    let generic = ["", "batch", "images-idx3-ubyte", "images", "idx3-ubyte", "bin", "batch-bin"];
    if !generic.contains(&stem.as_str()) {
        return None;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    dir.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// How many of `a`'s images are also in `b` (byte for byte), and the first such index in `a`.
pub fn shared_images(a: &Dataset, b: &Dataset) -> (usize, Option<usize>) {
    if a.shape != b.shape || a.is_empty() || b.is_empty() {
        return (0, None);
    }
    let seen: std::collections::HashSet<&[u8]> = (0..b.len()).map(|i| b.image(i)).collect();
    let mut first = None;
    let mut count = 0;
    for i in 0..a.len() {
        if seen.contains(a.image(i)) {
            count += 1;
            first.get_or_insert(i);
        }
    }
    (count, first)
}

/// Size and content hash of one file, or of a folder set (then `files` counts the images it
/// reads, and `sha256` hashes their relative paths, sizes and hashes in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileFingerprint {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
}

/// The fingerprint of one data source of a run: `role` is its field in the experiment's `[data]`
/// (`train`, `test`, `val_ood`, `ood[2]`); generated sets (noise, patch-shuffle) have no files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    pub role: String,
    pub spec: String,
    pub files: Vec<FileFingerprint>,
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok((bytes, hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_fingerprint(path: &Path) -> Result<FileFingerprint> {
    let (bytes, sha256) = sha256_file(path)?;
    Ok(FileFingerprint { path: path.to_path_buf(), bytes, sha256, files: None })
}

/// The images a folder set reads (as [`folder::list`] finds them, strays skipped), as one entry.
fn folder_fingerprint(root: &Path) -> Result<FileFingerprint> {
    let listing = folder::list(root, None)?;
    let mut h = Sha256::new();
    let mut total = 0u64;
    for (file, _) in &listing.files {
        let (bytes, sha) = sha256_file(file)?;
        let rel = file.strip_prefix(root).unwrap_or(file);
        h.update(format!("{}\t{bytes}\t{sha}\n", rel.display()).as_bytes());
        total += bytes;
    }
    Ok(FileFingerprint { path: root.to_path_buf(), bytes: total, sha256: hex(&h.finalize()), files: Some(listing.files.len()) })
}

impl DataSource {
    /// The files this source reads (an IDX images file and the labels file found beside it,
    /// CIFAR batches, a folder), fingerprinted. Empty for generated sets.
    pub fn fingerprint_files(&self) -> Result<Vec<FileFingerprint>> {
        match self {
            DataSource::Idx { images, labels } => {
                let labels = labels.clone().or_else(|| idx::labels_path_for(images).filter(|p| p.exists()));
                std::iter::once(images).chain(labels.as_ref()).map(|p| file_fingerprint(p)).collect()
            }
            DataSource::Cifar { files } => files.iter().map(|p| file_fingerprint(p)).collect(),
            DataSource::Folder { path } => Ok(vec![folder_fingerprint(path)?]),
            DataSource::Noise { .. } | DataSource::PatchShuffle { .. } => Ok(Vec::new()),
        }
    }
}

/// Fingerprints of every source of an experiment's data, in `[data]` order.
pub fn fingerprints(data: &crate::config::DataConfig) -> Result<Vec<SourceFingerprint>> {
    let roles = [("train".to_string(), &data.train), ("test".to_string(), &data.test), ("val_ood".to_string(), &data.val_ood)]
        .into_iter()
        .chain(data.ood.iter().enumerate().map(|(i, s)| (format!("ood[{i}]"), s)));
    roles
        .map(|(role, spec)| {
            let files = DataSource::parse(spec)?.fingerprint_files()?;
            Ok(SourceFingerprint { role, spec: spec.clone(), files })
        })
        .collect()
}

/// What differs between the data a run recorded and the data on disk now: one line per changed
/// file, naming the source and what changed. Empty when all is as recorded.
pub fn changes(recorded: &[SourceFingerprint], now: &[SourceFingerprint]) -> Vec<String> {
    let now_by_role: HashMap<&str, &SourceFingerprint> = now.iter().map(|s| (s.role.as_str(), s)).collect();
    let mut out = Vec::new();
    for rec in recorded {
        let Some(cur) = now_by_role.get(rec.role.as_str()) else {
            out.push(format!("the {} '{}' is no longer in the run's configuration", role_name(&rec.role), rec.spec));
            continue;
        };
        for (i, f) in rec.files.iter().enumerate() {
            let what = format!("{} of the {} '{}'", f.path.display(), role_name(&rec.role), rec.spec);
            match cur.files.get(i) {
                None => out.push(format!("{what}: is gone (it was {})", describe(f))),
                Some(c) if c.path != f.path => out.push(format!("{what}: the source now reads {} instead", c.path.display())),
                Some(c) if c.files != f.files || c.bytes != f.bytes => {
                    out.push(format!("{what}: is now {} (it was {} when the run was made)", describe(c), describe(f)))
                }
                Some(c) if c.sha256 != f.sha256 => out.push(format!(
                    "{what}: its content changed (same size, {} bytes; SHA-256 {} then, {} now)",
                    c.bytes,
                    &f.sha256[..12.min(f.sha256.len())],
                    &c.sha256[..12.min(c.sha256.len())]
                )),
                Some(_) => {}
            }
        }
        for c in cur.files.iter().skip(rec.files.len()) {
            out.push(format!("{} of the {} '{}': is read now but was not when the run was made", c.path.display(), role_name(&rec.role), rec.spec));
        }
    }
    out
}

fn describe(f: &FileFingerprint) -> String {
    match f.files {
        Some(n) => format!("{n} image files, {} bytes", f.bytes),
        None => format!("{} bytes", f.bytes),
    }
}

fn role_name(role: &str) -> &str {
    match role {
        "train" => "training set",
        "test" => "ID test set",
        "val_ood" => "validation OOD set",
        _ => "test OOD set",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_are_removed_from_standard_names() {
        for (name, stem) in [
            ("train-images-idx3-ubyte.gz", "images-idx3-ubyte"),
            ("t10k-images-idx3-ubyte.gz", "images-idx3-ubyte"),
            ("mnist-t10k-images-idx3-ubyte.gz", "mnist-images-idx3-ubyte"),
            ("fashion-train-images-idx3-ubyte.gz", "fashion-images-idx3-ubyte"),
            ("data_batch_3.bin", "batch-bin"),
            ("test_batch.bin", "batch-bin"),
            ("train", ""),
            ("cifar10_test", "cifar10"),
            ("textures-images-idx3-ubyte.gz", "textures-images-idx3-ubyte"),
        ] {
            assert_eq!(name_without_split(name), stem, "{name}");
        }
    }

    #[test]
    fn identity_is_folder_plus_name_without_split() {
        let d = tempfile::tempdir().unwrap();
        for sub in ["mnist", "kmnist", "cifar", "imgs"] {
            std::fs::create_dir(d.path().join(sub)).unwrap();
        }
        let id = |rel: &str| identity(&d.path().join(rel));
        // Standard names: one dataset's splits are one family...
        assert_eq!(id("mnist/train-images-idx3-ubyte.gz"), id("mnist/t10k-images-idx3-ubyte.gz"));
        assert_eq!(id("cifar/data_batch_1.bin"), id("cifar/test_batch.bin"));
        assert_eq!(id("imgs/train"), id("imgs/test"));
        // ...and two datasets that share a file name are not.
        assert_ne!(id("mnist/t10k-images-idx3-ubyte.gz"), id("kmnist/t10k-images-idx3-ubyte.gz"));
        // Prefixed names in one folder (the sample data's layout) keep their prefix.
        assert_eq!(id("mnist/mnist-train-images-idx3-ubyte.gz"), id("mnist/mnist-t10k-images-idx3-ubyte.gz"));
        assert_ne!(id("mnist/fashion-t10k-images-idx3-ubyte.gz"), id("mnist/mnist-t10k-images-idx3-ubyte.gz"));
        // A relative path names the same folder as an absolute one.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(identity(Path::new("src/x-train.gz")), identity(&cwd.join("src").join("x-t10k.gz")));
    }

    #[test]
    fn shared_images_are_counted_byte_for_byte() {
        let shape = super::super::ImageShape { channels: 1, height: 1, width: 2 };
        let set = |px: Vec<u8>| Dataset { shape, labels: vec![0; px.len() / 2], pixels: px, num_classes: 1, ..Dataset::default() };
        let a = set(vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(shared_images(&a, &set(vec![9, 9, 5, 6])), (1, Some(2)));
        assert_eq!(shared_images(&a, &set(vec![2, 1, 4, 3])), (0, None));
    }

    #[test]
    fn a_changed_file_is_named_with_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x-images-idx3-ubyte");
        std::fs::write(&f, b"abcd").unwrap();
        let src = DataSource::Idx { images: f.clone(), labels: None };
        let fp = |s: &DataSource| vec![SourceFingerprint { role: "train".into(), spec: "x".into(), files: s.fingerprint_files().unwrap() }];
        let before = fp(&src);
        assert!(changes(&before, &fp(&src)).is_empty());
        std::fs::write(&f, b"abce").unwrap();
        let c = changes(&before, &fp(&src));
        assert!(c.len() == 1 && c[0].contains("content changed (same size, 4 bytes") && c[0].contains("training set"), "{c:?}");
        std::fs::write(&f, b"abc").unwrap();
        let c = changes(&before, &fp(&src));
        assert!(c[0].contains("is now 3 bytes (it was 4 bytes"), "{c:?}");
        // A folder: an image removed changes its count.
        let root = d.path().join("imgs");
        for n in ["a", "b"] {
            std::fs::create_dir_all(root.join("c")).unwrap();
            image::GrayImage::from_pixel(2, 2, image::Luma([7])).save(root.join("c").join(format!("{n}.png"))).unwrap();
        }
        let folder = DataSource::Folder { path: root.clone() };
        let before = fp(&folder);
        std::fs::remove_file(root.join("c").join("b.png")).unwrap();
        let c = changes(&before, &fp(&folder));
        assert!(c[0].contains("is now 1 image files") && c[0].contains("it was 2 image files"), "{c:?}");
    }
}
