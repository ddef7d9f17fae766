//! IDX files (the MNIST family), raw or gzip-compressed.
//!
//! The header gives a type byte and dimensions; the payload size is computed with overflow checks
//! and then *read*, never pre-allocated, so a header that claims 2^32 items cannot make us allocate
//! more than the file holds.

use super::{Dataset, ImageShape};
use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Payloads larger than this are refused outright (a plausible header, an implausible file).
const MAX_PAYLOAD: u64 = 16 << 30;

/// An IDX array of unsigned bytes: its dimensions and data.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn open_stream(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| Error::io(path, "read", e))?;
    drop(file);
    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    Ok(maybe_gunzip(BufReader::new(file), &magic[..n]))
}

/// Gzip-compressed IDX files start with the gzip magic; anything else is read raw.
fn maybe_gunzip<'a>(reader: impl Read + 'a, first_bytes: &[u8]) -> Box<dyn Read + 'a> {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    }
}

/// Reads exactly `buf.len()` bytes, naming what was being read when the file ends early.
fn read_exact(path: &Path, r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::bad_data(path, format!("truncated: file ends inside the {what}")),
        _ => gz_or_io(path, e),
    })
}

fn gz_or_io(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            Error::bad_data(path, format!("corrupt gzip data: {e}"))
        }
        _ => Error::io(path, "read", e),
    }
}

/// Reads one IDX file of unsigned bytes.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_stream(path, open_stream(path)?)
}

/// Parses the bytes of an IDX file (raw or gzip) already in memory; `path` names it in errors.
/// The same parser as [`read_idx`]; the fuzz target drives it.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    parse_stream(path, maybe_gunzip(bytes, bytes))
}

fn parse_stream(path: &Path, mut r: Box<dyn Read + '_>) -> Result<IdxArray> {
    let mut magic = [0u8; 4];
    read_exact(path, &mut r, &mut magic, "IDX header")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::bad_data(
            path,
            format!("bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file", magic[0], magic[1], magic[2], magic[3]),
        ));
    }
    if magic[2] != 0x08 {
        return Err(Error::bad_data(path, format!("IDX data type 0x{:02x} is not supported (only unsigned bytes, 0x08)", magic[2])));
    }
    let ndims = magic[3] as usize;
    if !(1..=4).contains(&ndims) {
        return Err(Error::bad_data(path, format!("IDX header gives {ndims} dimensions (expected 1 to 4)")));
    }
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        read_exact(path, &mut r, &mut d, "IDX header")?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let payload = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).unwrap_or(u64::MAX);
    if payload > MAX_PAYLOAD {
        return Err(Error::bad_data(path, format!("header claims dimensions {dims:?} ({payload} bytes); refusing to read that much")));
    }
    // Read what is there (bounded by the claim + 1 byte), then compare: the buffer grows with the
    // data actually present, not with the header's claim.
    let mut data = Vec::new();
    r.take(payload + 1).read_to_end(&mut data).map_err(|e| gz_or_io(path, e))?;
    if (data.len() as u64) < payload {
        return Err(Error::bad_data(
            path,
            format!("truncated: header claims dimensions {dims:?} ({payload} bytes of data) but the file holds {}", data.len()),
        ));
    }
    if data.len() as u64 > payload {
        return Err(Error::bad_data(path, format!("file holds more data than its header claims ({dims:?})")));
    }
    Ok(IdxArray { dims, data })
}

/// The labels file that belongs to an images file, by the usual naming conventions.
pub fn labels_path_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    let swapped = [("images-idx3", "labels-idx1"), ("images", "labels"), ("idx3", "idx1")]
        .iter()
        .find(|(a, _)| name.contains(a))
        .map(|(a, b)| name.replacen(a, b, 1))?;
    Some(images.with_file_name(swapped))
}

/// Reads an IDX images file and its labels (given, or found beside it; unlabelled if none).
pub fn load_pair(images: &Path, labels: Option<&Path>) -> Result<Dataset> {
    let img = read_idx(images)?;
    let (n, shape) = match img.dims.as_slice() {
        [n, h, w] => (*n, ImageShape { channels: 1, height: *h, width: *w }),
        [n, c, h, w] => (*n, ImageShape { channels: *c, height: *h, width: *w }),
        d => return Err(Error::bad_data(images, format!("images must have 3 or 4 dimensions (N, [C,] H, W); header gives {d:?}"))),
    };
    if n == 0 {
        return Err(Error::bad_data(images, "the file holds zero images"));
    }
    if shape.is_empty() {
        return Err(Error::bad_data(images, format!("images have an empty shape {shape}")));
    }
    let labels_path = labels.map(Path::to_path_buf).or_else(|| labels_path_for(images).filter(|p| p.exists()));
    let (labels, num_classes, labelled) = match labels_path {
        Some(lp) => {
            let lab = read_idx(&lp)?;
            if lab.dims.len() != 1 {
                return Err(Error::bad_data(&lp, format!("labels must have 1 dimension; header gives {:?}", lab.dims)));
            }
            if lab.dims[0] != n {
                return Err(Error::bad_data(
                    &lp,
                    format!("holds {} labels but {} holds {n} images", lab.dims[0], images.display()),
                ));
            }
            let labels: Vec<u32> = lab.data.iter().map(|&l| u32::from(l)).collect();
            let classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
            (labels, classes, true)
        }
        None => (vec![0; n], 1, false),
    };
    Ok(Dataset {
        name: String::new(),
        origin: images.display().to_string(),
        shape,
        pixels: img.data,
        labels,
        num_classes,
        labelled,
        ..Dataset::default()
    })
}

/// Writes an IDX file of unsigned bytes (used by tests and by exports of atypical samples).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
