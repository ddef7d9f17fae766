//! The validation sets: what selects the best epoch and gamma, kept apart from every test set.
//!
//! - The **ID side** is a seeded, class-stratified split held out from the training set (10% by
//!   default). Training uses the rest; the ID test set is for reporting only.
//! - The **OOD side** defaults to `patch-shuffle`: held-out ID images cut into a 4x4 grid of
//!   patches and put back in a seeded random order. It keeps the ID set's pixel statistics and
//!   local strokes and edges but destroys the global shape, a family that none of the test sets
//!   (MNIST digits, textures, Gaussian and uniform noise) shares, and it needs no extra data.

use super::{DataSource, Dataset};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The spec key of the patch-shuffled family.
pub const PATCH_SHUFFLE: &str = "patch-shuffle";
/// Patches per side.
pub const GRID: usize = 4;
/// Default size and seed of the validation OOD set.
pub const DEFAULT_COUNT: usize = 2000;
pub const DEFAULT_SEED: u64 = 2;
/// Default fraction of the training set held out as the ID validation split.
pub const DEFAULT_ID_VAL_FRACTION: f64 = 0.1;

/// `patch-shuffle[:N[:SEED]]`; None when `spec` is something else.
pub fn parse_spec(spec: &str) -> Result<Option<DataSource>> {
    let mut parts = spec.split(':');
    if !parts.next().is_some_and(|k| k.eq_ignore_ascii_case(PATCH_SHUFFLE)) {
        return Ok(None);
    }
    let num = |p: Option<&str>, field: &str, default: u64| -> Result<u64> {
        p.map(|s| s.parse::<u64>().map_err(|_| Error::config(field, format!("'{s}' in '{spec}' is not a whole number"))))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let count = num(parts.next(), "patch-shuffle count", DEFAULT_COUNT as u64)? as usize;
    let seed = num(parts.next(), "patch-shuffle seed", DEFAULT_SEED)?;
    if count == 0 {
        return Err(Error::config("patch-shuffle count", format!("'{spec}' asks for zero samples")));
    }
    Ok(Some(DataSource::PatchShuffle { count, seed }))
}

/// `count` images made from `source` (cycled when it holds fewer): each image's GRID x GRID
/// patches in a seeded random order. Rows and columns beyond a multiple of GRID stay in place.
pub fn patch_shuffle(source: &Dataset, count: usize, seed: u64) -> Result<Dataset> {
    if source.is_empty() {
        return Err(Error::config("validation OOD", "patch-shuffle needs source images, and the set to take them from is empty"));
    }
    let shape = source.shape;
    let (ph, pw) = (shape.height / GRID, shape.width / GRID);
    if ph == 0 || pw == 0 {
        return Err(Error::config("validation OOD", format!("patch-shuffle needs images of at least {GRID}x{GRID} pixels (got {shape})")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(count * shape.len());
    let plane = shape.height * shape.width;
    let mut perm: Vec<usize> = (0..GRID * GRID).collect();
    for i in 0..count {
        let img = source.image(i % source.len());
        perm.shuffle(&mut rng);
        let mut out = img.to_vec();
        for (dst, &src) in perm.iter().enumerate() {
            let (dy, dx) = ((dst / GRID) * ph, (dst % GRID) * pw);
            let (sy, sx) = ((src / GRID) * ph, (src % GRID) * pw);
            for c in 0..shape.channels {
                for r in 0..ph {
                    let from = c * plane + (sy + r) * shape.width + sx;
                    let to = c * plane + (dy + r) * shape.width + dx;
                    out[to..to + pw].copy_from_slice(&img[from..from + pw]);
                }
            }
        }
        pixels.extend_from_slice(&out);
    }
    Ok(Dataset {
        name: PATCH_SHUFFLE.to_string(),
        origin: format!("generated: {PATCH_SHUFFLE} of {} held-out ID images ({GRID}x{GRID} patches), {count} samples, seed {seed}", source.len()),
        shape,
        pixels,
        labels: vec![0; count],
        num_classes: 1,
        labelled: false,
        ..Dataset::default()
    })
}

/// How the ID validation split was drawn, as config.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdValSplit {
    pub fraction: f64,
    pub seed: u64,
    /// Samples held out.
    pub count: usize,
    /// Their positions in the training file (after any train limit), ascending. The training set
    /// keeps the other samples in file order, and every per-sample array (losses, atypical sets)
    /// indexes into that remaining set.
    pub indices: Vec<usize>,
}

/// Splits `ds` into (training, ID validation): per class, a seeded random `fraction` of its
/// samples is held out; the per-class counts add up to exactly round(fraction * n) (largest
/// remainders get the extra sample, ties to the lower class).
pub fn split_id_validation(ds: Dataset, fraction: f64, seed: u64) -> Result<(Dataset, Dataset, IdValSplit)> {
    check_fraction(fraction).map_err(|e| Error::config("id_val_fraction", e))?;
    let n = ds.len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes.max(1)];
    for (i, &l) in ds.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let total = (fraction * n as f64).round() as usize;
    let exact: Vec<f64> = by_class.iter().map(|c| fraction * c.len() as f64).collect();
    let mut take: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..by_class.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let mut missing = total.saturating_sub(take.iter().sum());
    for &c in order.iter().cycle().take(order.len() * 2) {
        if missing == 0 {
            break;
        }
        if take[c] < by_class[c].len() {
            take[c] += 1;
            missing -= 1;
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut held = vec![false; n];
    for (members, &k) in by_class.iter_mut().zip(&take) {
        members.shuffle(&mut rng);
        for &i in &members[..k] {
            held[i] = true;
        }
    }
    let indices: Vec<usize> = (0..n).filter(|&i| held[i]).collect();
    if indices.len() == n {
        return Err(Error::config("id_val_fraction", format!("{fraction} holds out every training sample")));
    }
    let split = IdValSplit { fraction, seed, count: indices.len(), indices };
    let (val, train) = partition(&ds, &held);
    Ok((train, val, split))
}

/// Checks a split fraction: in [0, 0.9].
pub fn check_fraction(fraction: f64) -> std::result::Result<(), String> {
    if fraction.is_finite() && (0.0..=0.9).contains(&fraction) {
        Ok(())
    } else {
        Err(format!("id_val_fraction must be in [0, 0.9] (got {fraction})"))
    }
}

/// (the samples where `held`, the others), both in file order.
fn partition(ds: &Dataset, held: &[bool]) -> (Dataset, Dataset) {
    let empty = |name: &str| Dataset { name: name.into(), pixels: Vec::new(), labels: Vec::new(), ..ds.clone_meta() };
    let (mut yes, mut no) = (empty("id_val"), empty(&ds.name));
    for (i, &h) in held.iter().enumerate() {
        let dst = if h { &mut yes } else { &mut no };
        dst.pixels.extend_from_slice(ds.image(i));
        dst.labels.push(ds.labels[i]);
    }
    yes.origin = format!("{} (ID validation split)", ds.origin);
    // The reader's notes are the source's: told once, with the training part.
    yes.notes.clear();
    (yes, no)
}

impl Dataset {
    /// A copy of everything but the samples.
    fn clone_meta(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            origin: self.origin.clone(),
            shape: self.shape,
            pixels: Vec::new(),
            labels: Vec::new(),
            num_classes: self.num_classes,
            labelled: self.labelled,
            class_names: self.class_names.clone(),
            notes: self.notes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;

    fn labelled(labels: Vec<u32>, classes: usize) -> Dataset {
        let shape = ImageShape { channels: 1, height: 8, width: 8 };
        let pixels = (0..labels.len() * 64).map(|i| (i % 251) as u8).collect();
        Dataset { name: "fashion".into(), origin: "f".into(), shape, pixels, labels, num_classes: classes, labelled: true, ..Dataset::default() }
    }

    #[test]
    fn split_is_stratified_seeded_and_exact() {
        // 3 classes of 50, 30 and 20 samples, interleaved.
        let labels: Vec<u32> = (0..100).map(|i| [0, 1, 0, 2, 0, 1, 0, 2, 0, 1][i % 10]).collect();
        let counts: Vec<usize> = (0..3).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
        let ds = labelled(labels.clone(), 3);
        let (train, val, split) = split_id_validation(ds.clone(), 0.1, 7).unwrap();
        assert_eq!(split.count, 10);
        assert_eq!((train.len(), val.len()), (90, 10));
        for c in 0..3u32 {
            let held = val.labels.iter().filter(|&&l| l == c).count() as f64;
            assert!((held - 0.1 * counts[c as usize] as f64).abs() <= 1.0, "class {c}: {held} of {}", counts[c as usize]);
        }
        // The pixels follow their labels; the two parts partition the set.
        for (k, &i) in split.indices.iter().enumerate() {
            assert_eq!(val.image(k), ds.image(i));
            assert_eq!(val.labels[k], ds.labels[i]);
        }
        let kept: Vec<usize> = (0..100).filter(|i| !split.indices.contains(i)).collect();
        for (k, &i) in kept.iter().enumerate() {
            assert_eq!(train.image(k), ds.image(i), "training keeps file order");
        }
        // Seeded: same seed, same split; another seed, another split.
        assert_eq!(split, split_id_validation(ds.clone(), 0.1, 7).unwrap().2);
        assert_ne!(split.indices, split_id_validation(ds.clone(), 0.1, 8).unwrap().2.indices);
        // Largest remainders: 0.15 of 50/30/20 is 7.5/4.5/3, round(15) in all: class 0 gets the 8th.
        let (_, v15, _) = split_id_validation(ds.clone(), 0.15, 7).unwrap();
        let per: Vec<usize> = (0..3).map(|c| v15.labels.iter().filter(|&&l| l == c).count()).collect();
        assert_eq!(per, vec![8, 4, 3]);
        // 0 holds out nothing; bad fractions are errors.
        let (t0, v0, s0) = split_id_validation(ds.clone(), 0.0, 7).unwrap();
        assert_eq!((t0.len(), v0.len(), s0.count), (100, 0, 0));
        assert!(split_id_validation(ds.clone(), 0.95, 7).unwrap_err().to_string().contains("id_val_fraction"));
        assert!(split_id_validation(ds, f64::NAN, 7).is_err());
    }

    #[test]
    fn patch_shuffle_moves_whole_patches() {
        let ds = labelled(vec![0, 1], 2);
        let out = patch_shuffle(&ds, 5, 3).unwrap();
        assert_eq!((out.len(), out.shape), (5, ds.shape));
        assert!(!out.labelled);
        for i in 0..5 {
            let (src, img) = (ds.image(i % 2), out.image(i));
            // Same pixels, rearranged (2x2 patches of an 8x8 image).
            let (mut a, mut b) = (src.to_vec(), img.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
            // Every output patch is some source patch.
            for dst in 0..GRID * GRID {
                let patch = |im: &[u8], p: usize| -> Vec<u8> {
                    let (y, x) = ((p / GRID) * 2, (p % GRID) * 2);
                    (0..2).flat_map(|r| im[(y + r) * 8 + x..(y + r) * 8 + x + 2].to_vec()).collect()
                };
                assert!((0..GRID * GRID).any(|s| patch(src, s) == patch(img, dst)), "image {i} patch {dst}");
            }
        }
        assert_ne!(out.image(0), ds.image(0), "the order changed");
        assert_ne!(out.image(0), out.image(2), "each copy gets its own order");
        assert_eq!(out.pixels, patch_shuffle(&ds, 5, 3).unwrap().pixels, "seeded");
        assert_ne!(out.pixels, patch_shuffle(&ds, 5, 4).unwrap().pixels);
    }

    #[test]
    fn patch_shuffle_specs() {
        assert_eq!(parse_spec("patch-shuffle").unwrap(), Some(DataSource::PatchShuffle { count: DEFAULT_COUNT, seed: DEFAULT_SEED }));
        assert_eq!(parse_spec("patch-shuffle:10:5").unwrap(), Some(DataSource::PatchShuffle { count: 10, seed: 5 }));
        assert!(parse_spec("patch-shuffle:0").is_err());
        assert!(parse_spec("gaussian").unwrap().is_none());
    }
}
