//! Crash-safe file writing: every export and run file is written to a temporary file in the
//! same folder, flushed to disk, then renamed over the target, so a reader sees the old file or
//! the new one, never half of one. Also a tiny `.npy` writer/reader so that score arrays and loss
//! matrices open directly in NumPy.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file + fsync + rename). On failure the temp file is
/// removed and the target is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(path, "create a temporary file beside", e))?;
        f.write_all(bytes).map_err(|e| Error::io(path, "write", e))
    })
}

/// Writes a file atomically by letting `fill` produce it at a temporary path (for libraries that
/// only write to paths, like burn's recorders).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        let (kind, why) = match dir.exists() {
            true => (std::io::ErrorKind::NotADirectory, format!("{} is a file, not a folder", dir.display())),
            false => (std::io::ErrorKind::NotFound, format!("folder {} does not exist", dir.display())),
        };
        return Err(Error::io(path, "write", std::io::Error::new(kind, why)));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    // Keep the extension last: some writers append or check it.
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    // The mode a plain new file gets here (0644 under the usual umask), to restore it after
    // writers that make private files (safetensors makes 0600).
    let mode = std::fs::File::create(&tmp).and_then(|f| f.metadata()).map(|m| m.permissions()).ok();
    let result = fill(&tmp).and_then(|()| {
        if let Some(mode) = mode {
            let _ = std::fs::set_permissions(&tmp, mode);
        }
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, "flush to disk", e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "replace", e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Encodes a little-endian f32 array as `.npy` (version 1.0, C order).
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = npy_header("<f4", shape, data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Encodes a u8 array as `.npy` (version 1.0, C order).
pub fn npy_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = npy_header("|u1", shape, data.len());
    out.extend_from_slice(data);
    out
}

/// Magic, version and header of a `.npy` file of `descr` and `shape`, with room for `body` bytes.
fn npy_header(descr: &str, shape: &[usize], body: usize) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Reads an `.npy` file written by [`npy_f32`]: (shape, data).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    parse_npy_f32(path, &bytes)
}

/// Parses `.npy` bytes already in memory; `path` names the file in errors.
pub fn parse_npy_f32(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    let (shape, body) = parse_npy(path, bytes, "<f4", "a little-endian float32", 4)?;
    Ok((shape, body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

/// Reads an `.npy` file written by [`npy_u8`]: (shape, data).
pub fn read_npy_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let (shape, body) = parse_npy(path, &bytes, "|u1", "a uint8", 1)?;
    Ok((shape, body.to_vec()))
}

/// The shape and data bytes of a C-order `.npy` array of `descr` (`what` names it in errors),
/// `item` bytes an element.
fn parse_npy<'a>(path: &Path, bytes: &'a [u8], descr: &str, what: &str, item: usize) -> Result<(Vec<usize>, &'a [u8])> {
    let bad = |p: &str| Error::bad_data(path, p.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (bad magic)"));
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = bytes.get(10..10 + hlen).ok_or_else(|| bad("truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(".npy header is not text"))?;
    if !header.contains(&format!("'descr': '{descr}'")) || header.contains("'fortran_order': True") {
        return Err(bad(&format!("expected {what} array in C order")));
    }
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(".npy header has no shape"))?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(".npy shape is not numeric")))
        .collect::<Result<_>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad(".npy shape overflows"))?;
    let body = &bytes[10 + hlen..];
    if body.len() != count.saturating_mul(item) {
        // u128: a hostile shape can make count * item overflow usize (found by the run_folder fuzz target).
        return Err(bad(&format!("truncated: shape {shape:?} needs {} bytes of data, the file holds {}", count as u128 * item as u128, body.len())));
    }
    Ok((shape, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_alignment() {
        let bytes = npy_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!((bytes.len() - 24) % 64, 0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_atomic(&p, &bytes).unwrap();
        let (shape, data) = read_npy_f32(&p).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        // Every bit pattern survives, -0.0, NaN payloads and infinities included.
        let odd = [-0.0f32, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(0x7fc0_1234), f32::MIN_POSITIVE / 2.0, 1e-45];
        let (_, back) = parse_npy_f32(&p, &npy_f32(&[odd.len()], &odd)).unwrap();
        assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), odd.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        // u8 arrays: their own dtype, and neither reader takes the other's.
        let q = dir.path().join("b.npy");
        write_atomic(&q, &npy_u8(&[2, 2], &[0, 1, 255, 7])).unwrap();
        assert_eq!(read_npy_u8(&q).unwrap(), (vec![2, 2], vec![0, 1, 255, 7]));
        assert!(read_npy_f32(&q).unwrap_err().to_string().contains("float32"));
        assert!(read_npy_u8(&p).unwrap_err().to_string().contains("uint8"));
    }

    /// Regression (cargo-fuzz, run_folder target): a shape whose byte size overflows usize is a
    /// clear error with the true size, not an overflow panic or a wrapped number.
    #[test]
    fn npy_shape_whose_size_overflows_is_an_error() {
        let mut bytes = npy_f32(&[1], &[1.0]);
        let text = String::from_utf8_lossy(&bytes[10..]).replace("(1,)", "(6148914691236517198, 2)");
        bytes.truncate(10);
        bytes[8..10].copy_from_slice(&(text.len() as u16).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&2.0f32.to_le_bytes());
        let err = parse_npy_f32(Path::new("scores.npy"), &bytes).unwrap_err().to_string();
        assert!(err.contains("scores.npy") && err.contains("needs 49191317529892137584 bytes"), "{err}");
    }

    #[test]
    fn atomic_write_to_missing_folder_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("a.txt");
        let err = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    /// Disk full: the kernel's own ENOSPC (from /dev/full) while filling the temp file leaves the
    /// old file intact, no temp file behind, and an error naming the target and the cause.
    #[test]
    fn atomic_write_on_a_full_disk_keeps_the_old_file() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return; // not Linux
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.md");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half of the new").map_err(|e| Error::io(&p, "write", e))?;
            let mut f = std::fs::OpenOptions::new().write(true).open(full).unwrap();
            f.write_all(&[0u8; 4096]).and_then(|()| f.flush()).map_err(|e| Error::io(&p, "write", e))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("report.md") && err.to_lowercase().contains("no space"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a temp file was left behind");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            // Even when the writer made a private file, the result has a new file's usual mode.
            let q = dir.path().join("b.bin");
            write_atomic_with(&q, |tmp| {
                std::fs::write(tmp, b"x").map_err(|e| Error::io(&q, "write", e))?;
                std::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(|e| Error::io(&q, "chmod", e))
            })
            .unwrap();
            let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
            assert_eq!(mode(&q), mode(&p));
        }
    }
}
