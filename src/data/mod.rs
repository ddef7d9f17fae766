//! Datasets: readers for IDX, CIFAR-10 binary and image folders, generated noise sets, and the
//! normalisation taken from the ID training set. Every reader checks sizes before it allocates and
//! names the file in its errors.

pub mod cifar;
pub mod classes;
pub mod folder;
pub mod idx;
pub mod noise;
pub mod provenance;
pub mod validation;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Channels x height x width of every image in a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// A set of images (u8, CHW order, one after another) with integer labels.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Short name shown in tables ("mnist", "textures", "gaussian").
    pub name: String,
    /// Where it came from (a path, or "generated: ...").
    pub origin: String,
    pub shape: ImageShape,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    /// Number of classes the labels index into (labels of OOD sets are not used).
    pub num_classes: usize,
    /// False for a set read without labels (a flat folder, an IDX file with no labels file).
    pub labelled: bool,
    /// The class names the set itself gives (an image folder's class subfolders); else empty.
    pub class_names: Vec<String>,
    /// What the reader skipped or worked around, for the user (stray folders, unreadable files).
    pub notes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Checks that labels fit `num_classes` and that the set is not empty.
    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::bad_data(&self.origin, "the set holds no samples"));
        }
        if self.pixels.len() != self.len() * self.shape.len() {
            return Err(Error::bad_data(&self.origin, "pixel count does not match the sample count"));
        }
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|&(_, &l)| l as usize >= self.num_classes) {
            return Err(Error::bad_data(
                &self.origin,
                format!("label {l} of sample {i} is out of range (expected < {} classes)", self.num_classes),
            ));
        }
        Ok(())
    }

    /// Fails unless `other` has this set's image shape (an OOD or test set must match the ID set).
    pub fn check_same_shape(&self, other: &Dataset) -> Result<()> {
        if self.shape != other.shape {
            return Err(Error::Mismatch(format!(
                "{}: images are {} (channels x height x width) but the ID training set {} has {}",
                other.origin, other.shape, self.origin, self.shape
            )));
        }
        Ok(())
    }

    /// The first `n` samples (or all when fewer).
    pub fn truncated(mut self, n: usize) -> Dataset {
        let n = n.min(self.len());
        self.pixels.truncate(n * self.shape.len());
        self.labels.truncate(n);
        self
    }
}

/// Per-channel mean and std of the ID training set's pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    pub fn from_dataset(ds: &Dataset) -> Normalization {
        let c = ds.shape.channels;
        let plane = ds.shape.height * ds.shape.width;
        let mut sum = vec![0f64; c];
        let mut sum_sq = vec![0f64; c];
        for img in ds.pixels.chunks_exact(ds.shape.len()) {
            for (ch, px) in img.chunks_exact(plane).enumerate() {
                for &p in px {
                    let v = f64::from(p) / 255.0;
                    sum[ch] += v;
                    sum_sq[ch] += v * v;
                }
            }
        }
        let count = (ds.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            // A constant channel would divide by zero; 1.0 leaves it merely centred.
            .map(|(sq, m)| ((sq / count - m * m).max(0.0).sqrt()).max(1e-6) as f32)
            .map(|s| if s <= 1e-6 { 1.0 } else { s })
            .collect();
        Normalization { mean: mean.into_iter().map(|m| m as f32).collect(), std }
    }

    /// Normalised f32 values of a run of images (CHW each).
    pub fn apply(&self, shape: ImageShape, pixels: &[u8], out: &mut Vec<f32>) {
        out.clear();
        self.extend(shape, pixels, out);
    }

    /// Appends the normalised f32 values of a run of images (CHW each) to `out`.
    pub fn extend(&self, shape: ImageShape, pixels: &[u8], out: &mut Vec<f32>) {
        let plane = shape.height * shape.width;
        out.reserve(pixels.len());
        for img in pixels.chunks_exact(shape.len()) {
            for (ch, px) in img.chunks_exact(plane).enumerate() {
                let (m, s) = (self.mean[ch], self.std[ch]);
                out.extend(px.iter().map(|&p| (f32::from(p) / 255.0 - m) / s));
            }
        }
    }
}

/// Where a set comes from: a file or folder on disk, or a generated noise set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataSource {
    /// IDX images file; labels file found beside it (images -> labels, idx3 -> idx1).
    Idx { images: PathBuf, labels: Option<PathBuf> },
    /// One or more CIFAR-10 binary batch files.
    Cifar { files: Vec<PathBuf> },
    /// A folder of PNG/JPEG images: one subfolder per class, or flat (unlabelled, for OOD).
    Folder { path: PathBuf },
    /// Seeded noise with the ID set's shape.
    Noise { noise: noise::NoiseKind, count: usize, seed: u64 },
    /// Patch-shuffled held-out ID images (see [`validation`]): the default validation OOD family.
    PatchShuffle { count: usize, seed: u64 },
}

impl DataSource {
    /// Reads a path given on the command line or picked in a dialog: `gaussian[:N]` / `uniform[:N]`
    /// for noise, a folder, a `.bin` CIFAR batch (comma-separate several), else an IDX file.
    pub fn parse(spec: &str) -> Result<DataSource> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::config("data path", "empty"));
        }
        if let Some(noise) = noise::NoiseKind::parse_spec(spec)? {
            return Ok(noise);
        }
        if let Some(shuffled) = validation::parse_spec(spec)? {
            return Ok(shuffled);
        }
        let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
        if parts.iter().all(|p| p.ends_with(".bin")) {
            return Ok(DataSource::Cifar { files: parts.iter().map(PathBuf::from).collect() });
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            return Ok(DataSource::Folder { path });
        }
        Ok(DataSource::Idx { images: path, labels: None })
    }

    /// A short name for tables: the file stem without IDX suffixes, or the noise kind.
    pub fn short_name(&self) -> String {
        fn stem(p: &Path) -> String {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let name = name.trim_end_matches(".gz");
            let cut = ["-images-idx3-ubyte", "-idx3-ubyte", "-images", ".idx3", ".bin"]
                .iter()
                .find_map(|s| name.find(s))
                .unwrap_or(name.len());
            let stem = &name[..cut];
            // "mnist-t10k" -> "mnist": the split suffix says nothing about the set.
            let stem = ["-t10k", "-train", "-test"].iter().find_map(|s| stem.strip_suffix(s)).unwrap_or(stem);
            stem.to_string()
        }
        // A name that says only its split ("t10k-images-idx3-ubyte.gz") is named by its folder.
        let name = |p: &Path| provenance::folder_name_if_split_only(p).unwrap_or_else(|| stem(p));
        match self {
            DataSource::Idx { images, .. } => name(images),
            DataSource::Cifar { files } => files.first().map(|f| name(f)).unwrap_or_default(),
            DataSource::Folder { path } => name(path),
            DataSource::Noise { noise, .. } => noise.key().to_string(),
            DataSource::PatchShuffle { .. } => validation::PATCH_SHUFFLE.to_string(),
        }
    }

    /// The generator family: sets of one family are copies of one distribution (two seeds of one
    /// noise, two splits of one dataset), so a validation set must not share a test set's. A
    /// dataset on disk is its folder plus its name without the split word (see
    /// [`provenance::identity`]): `mnist/train-images-idx3-ubyte.gz` and
    /// `mnist/t10k-images-idx3-ubyte.gz` are one family, `mnist/t10k-...` and `kmnist/t10k-...` two.
    pub fn family(&self) -> String {
        match self {
            DataSource::Noise { noise, .. } => format!("{} noise", noise.key()),
            DataSource::PatchShuffle { .. } => format!("{} of ID images", validation::PATCH_SHUFFLE),
            DataSource::Idx { images, .. } => provenance::identity(images),
            DataSource::Cifar { files } => files.first().map(|f| provenance::identity(f)).unwrap_or_default(),
            DataSource::Folder { path } => provenance::identity(path),
        }
    }

    /// Whether the set is read from disk (not generated from a seed).
    pub fn is_on_disk(&self) -> bool {
        matches!(self, DataSource::Idx { .. } | DataSource::Cifar { .. } | DataSource::Folder { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            DataSource::Idx { images, .. } => images.display().to_string(),
            DataSource::Cifar { files } => {
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(",")
            }
            DataSource::Folder { path } => path.display().to_string(),
            DataSource::Noise { noise, count, seed } => format!("{}:{count} (seed {seed})", noise.key()),
            DataSource::PatchShuffle { count, seed } => format!("{}:{count} (seed {seed})", validation::PATCH_SHUFFLE),
        }
    }

    /// Loads the set. `like` is an ID set: noise takes its shape, folders its channel count, and
    /// patch-shuffle its images (the ID validation split, when there is one).
    pub fn load(&self, like: Option<&Dataset>) -> Result<Dataset> {
        self.load_with_classes(like, None)
    }

    /// Loads an ID test set labelled as `train` is: an image folder's classes are matched to the
    /// training folder's by name (each split numbering its own subfolders would mislabel it).
    pub fn load_labelled_like(&self, train: &Dataset) -> Result<Dataset> {
        let classes = (!train.class_names.is_empty()).then_some(train.class_names.as_slice());
        self.load_with_classes(Some(train), classes)
    }

    fn load_with_classes(&self, like: Option<&Dataset>, classes: Option<&[String]>) -> Result<Dataset> {
        let mut ds = match self {
            DataSource::Idx { images, labels } => idx::load_pair(images, labels.as_deref())?,
            DataSource::Cifar { files } => cifar::load_files(files)?,
            DataSource::Folder { path } => folder::load_as(path, like.map(|d| d.shape.channels), classes)?,
            DataSource::Noise { noise, count, seed } => {
                let like = like.ok_or_else(|| {
                    Error::config("data", "a noise set needs an ID set to take its image shape from")
                })?;
                noise::generate(*noise, like.shape, *count, *seed)
            }
            DataSource::PatchShuffle { count, seed } => {
                let like = like.ok_or_else(|| Error::config("data", "patch-shuffle needs ID images to shuffle"))?;
                validation::patch_shuffle(like, *count, *seed)?
            }
        };
        ds.name = self.short_name();
        ds.validate()?;
        Ok(ds)
    }
}

/// The sets one experiment uses.
#[derive(Debug, Clone)]
pub struct DataBundle {
    pub train: Dataset,
    pub test: Dataset,
    pub norm: Normalization,
    /// Validation OOD set: chooses the best epoch and gamma; never a test set.
    pub val_ood: Dataset,
    /// Test OOD sets: reported only.
    pub ood: Vec<Dataset>,
    /// The ID validation split held out of the training file (empty when the fraction is 0):
    /// the ID side of every validation metric. `train` is what remains.
    pub id_val: Dataset,
    pub id_val_split: validation::IdValSplit,
    /// Things the user should know (a 0 split), to print before training.
    pub warnings: Vec<String>,
}

impl DataBundle {
    /// One line for each test set (ID test, test OOD) that shares images with the validation OOD
    /// set, byte for byte, naming both and how many.
    pub fn val_test_shared_images(&self) -> Vec<String> {
        std::iter::once(("ID test set", &self.test))
            .chain(self.ood.iter().map(|d| ("test OOD set", d)))
            .filter_map(|(role, test)| {
                let (count, first) = provenance::shared_images(&self.val_ood, test);
                first.map(|i| {
                    format!(
                        "the validation OOD set {} shares {count} of its {} images with the {role} {} (the first is its image {i})",
                        self.val_ood.origin,
                        self.val_ood.len(),
                        test.origin
                    )
                })
            })
            .collect()
    }
}

/// The name events.jsonl gives the ID side of validation when there is no split.
pub const VALIDATION_ID_FALLBACK: &str = "train (no ID validation split)";

impl DataBundle {
    /// The ID side of every validation metric: the ID validation split, or (fraction 0) the
    /// training samples. Never the ID test set.
    pub fn validation_id(&self) -> &Dataset {
        if self.id_val.is_empty() { &self.train } else { &self.id_val }
    }

    /// Its name, as events.jsonl records it.
    pub fn validation_id_name(&self) -> &str {
        if self.id_val.is_empty() { VALIDATION_ID_FALLBACK } else { "id_val" }
    }

    /// Loads everything with no ID validation split (see [`DataBundle::load_split`]).
    pub fn load(
        train: &DataSource,
        test: &DataSource,
        val_ood: &DataSource,
        ood: &[DataSource],
        train_limit: Option<usize>,
    ) -> Result<DataBundle> {
        DataBundle::load_split(train, test, val_ood, ood, train_limit, 0.0, 0)
    }

    /// Loads everything and checks that the sets fit together, before any training starts. The
    /// training file (its first `train_limit` samples) is split into training and a class-
    /// stratified ID validation split of `id_val_fraction`, drawn with `id_val_seed`.
    pub fn load_split(
        train: &DataSource,
        test: &DataSource,
        val_ood: &DataSource,
        ood: &[DataSource],
        train_limit: Option<usize>,
        id_val_fraction: f64,
        id_val_seed: u64,
    ) -> Result<DataBundle> {
        let mut train = train.load(None)?;
        for ds in [&train] {
            if !ds.labelled {
                return Err(Error::bad_data(&ds.origin, "the ID training set needs labels"));
            }
        }
        if let Some(n) = train_limit {
            train = train.truncated(n);
        }
        let (train, id_val, id_val_split) = validation::split_id_validation(train, id_val_fraction, id_val_seed)?;
        let mut warnings = Vec::new();
        if id_val.is_empty() {
            warnings.push(
                "warning: no ID validation split (fraction 0): the ID side of validation falls back to the training samples, which the model has seen; the ID test set is still never used to select".to_string(),
            );
        }
        let test = test.load_labelled_like(&train)?;
        if !test.labelled {
            return Err(Error::bad_data(&test.origin, "the ID test set needs labels"));
        }
        train.check_same_shape(&test)?;
        if test.num_classes > train.num_classes {
            return Err(Error::Mismatch(format!(
                "{}: test labels use {} classes but the training set {} has {}",
                test.origin, test.num_classes, train.origin, train.num_classes
            )));
        }
        // Generated validation sets draw from the held-out ID images, not the trained-on ones.
        let val_source = if id_val.is_empty() { &train } else { &id_val };
        let mut val_ood = val_ood.load(Some(val_source))?;
        // Its own name, so it is never mistaken for a test set of the same kind.
        val_ood.name = format!("{}-val", val_ood.name);
        train.check_same_shape(&val_ood)?;
        let mut ood_sets = Vec::with_capacity(ood.len());
        for src in ood {
            let ds = src.load(Some(&train))?;
            train.check_same_shape(&ds)?;
            ood_sets.push(ds);
        }
        let mut names = std::collections::HashSet::new();
        for ds in &mut ood_sets {
            // Two sets with one name would collide in tables and file names.
            let base = ds.name.clone();
            let mut k = 2;
            while !names.insert(ds.name.clone()) {
                ds.name = format!("{base}-{k}");
                k += 1;
            }
        }
        for ds in std::iter::once(&train).chain([&test, &val_ood]).chain(&ood_sets) {
            warnings.extend(ds.notes.iter().map(|n| format!("warning: {n}")));
        }
        let norm = Normalization::from_dataset(&train);
        Ok(DataBundle { train, test, norm, val_ood, ood: ood_sets, id_val, id_val_split, warnings })
    }
}

/// The bundled sample data folder: `sample_data/` next to the executable's crate, or in the
/// working directory.
pub fn sample_data_dir() -> PathBuf {
    // Absolute, so that a run's config.json names files that open from any working directory.
    let cwd = std::env::current_dir().unwrap_or_default().join("sample_data");
    if cwd.is_dir() {
        return cwd;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample_data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(shape: ImageShape, pixels: Vec<u8>, labels: Vec<u32>) -> Dataset {
        Dataset { name: "t".into(), origin: "t".into(), shape, pixels, labels, num_classes: 2, labelled: true, ..Dataset::default() }
    }

    #[test]
    fn normalization_centres_and_scales() {
        let shape = ImageShape { channels: 1, height: 1, width: 2 };
        let ds = tiny(shape, vec![0, 255, 0, 255], vec![0, 1]);
        let norm = Normalization::from_dataset(&ds);
        assert!((norm.mean[0] - 0.5).abs() < 1e-6);
        assert!((norm.std[0] - 0.5).abs() < 1e-6);
        let mut out = Vec::new();
        norm.apply(shape, &ds.pixels, &mut out);
        assert_eq!(out, vec![-1.0, 1.0, -1.0, 1.0]);
    }

    #[test]
    fn label_out_of_range_is_named() {
        let shape = ImageShape { channels: 1, height: 1, width: 1 };
        let err = tiny(shape, vec![0, 0], vec![0, 5]).validate().unwrap_err().to_string();
        assert!(err.contains("label 5 of sample 1"), "{err}");
    }

    #[test]
    fn parse_specs() {
        assert!(matches!(DataSource::parse("gaussian:100").unwrap(), DataSource::Noise { count: 100, .. }));
        assert!(matches!(DataSource::parse("a.bin,b.bin").unwrap(), DataSource::Cifar { files } if files.len() == 2));
        let idx = DataSource::parse("sample_data/mnist-t10k-images-idx3-ubyte.gz").unwrap();
        assert_eq!(idx.short_name(), "mnist");
    }
}
