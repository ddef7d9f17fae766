//! CIFAR-10 binary batches: records of one label byte and 3x32x32 pixels (CHW).

use super::{Dataset, ImageShape};
use crate::error::{Error, Result};
use std::path::PathBuf;

pub const SHAPE: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };
const RECORD: usize = 1 + 3 * 32 * 32;
const CLASSES: usize = 10;

/// Parses one batch file's bytes (the file is named in errors).
pub fn parse(path: &std::path::Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u32>)> {
    if bytes.is_empty() {
        return Err(Error::bad_data(path, "the file is empty: zero CIFAR records"));
    }
    if bytes.len() % RECORD != 0 {
        return Err(Error::bad_data(
            path,
            format!(
                "truncated or not a CIFAR-10 binary batch: {} bytes is not a whole number of {RECORD}-byte records",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] as usize >= CLASSES {
            return Err(Error::bad_data(path, format!("record {i} has label {} (CIFAR-10 labels are 0-9)", rec[0])));
        }
        labels.push(u32::from(rec[0]));
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((pixels, labels))
}

/// Reads and concatenates batch files.
pub fn load_files(files: &[PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, "read", e))?;
        let (p, l) = parse(f, &bytes)?;
        pixels.extend(p);
        labels.extend(l);
    }
    Ok(Dataset {
        name: String::new(),
        origin: files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(","),
        shape: SHAPE,
        pixels,
        labels,
        num_classes: CLASSES,
        labelled: true,
        ..Dataset::default()
    })
}
