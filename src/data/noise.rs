//! Seeded noise sets in the ID set's shape (the usual synthetic OOD sets of the OOD literature):
//! Gaussian pixels clip(0.5 + 0.25 z, 0, 1) and uniform pixels U[0, 1], stored as bytes.

use super::{DataSource, Dataset, ImageShape};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    Gaussian,
    Uniform,
}

/// Default sizes and seeds: test noise and validation noise must differ.
pub const DEFAULT_COUNT: usize = 2000;
pub const TEST_SEED: u64 = 1;
pub const VALIDATION_SEED: u64 = 2;

impl NoiseKind {
    pub fn key(self) -> &'static str {
        match self {
            NoiseKind::Gaussian => "gaussian",
            NoiseKind::Uniform => "uniform",
        }
    }

    /// `gaussian`, `uniform`, optionally `:count` and `:seed`. None when `spec` is not noise.
    pub fn parse_spec(spec: &str) -> Result<Option<DataSource>> {
        let mut parts = spec.split(':');
        let noise = match parts.next().map(str::to_ascii_lowercase).as_deref() {
            Some("gaussian") => NoiseKind::Gaussian,
            Some("uniform") => NoiseKind::Uniform,
            _ => return Ok(None),
        };
        let num = |p: Option<&str>, field: &str, default: u64| -> Result<u64> {
            p.map(|s| s.parse::<u64>().map_err(|_| Error::config(field, format!("'{s}' in '{spec}' is not a whole number"))))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let count = num(parts.next(), "noise count", DEFAULT_COUNT as u64)? as usize;
        let seed = num(parts.next(), "noise seed", TEST_SEED)?;
        if count == 0 {
            return Err(Error::config("noise count", format!("'{spec}' asks for zero samples")));
        }
        Ok(Some(DataSource::Noise { noise, count, seed }))
    }
}

/// Standard normal draws by Box-Muller: a fixed formula, so a seed always gives the same set.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn generate(kind: NoiseKind, shape: ImageShape, count: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pixels = (0..count * shape.len())
        .map(|_| {
            let v = match kind {
                NoiseKind::Gaussian => (0.5 + 0.25 * standard_normal(&mut rng)).clamp(0.0, 1.0),
                NoiseKind::Uniform => rng.random::<f64>(),
            };
            (v * 255.0).round() as u8
        })
        .collect();
    Dataset {
        name: kind.key().to_string(),
        origin: format!("generated: {} noise, {count} samples, seed {seed}", kind.key()),
        shape,
        pixels,
        labels: vec![0; count],
        num_classes: 1,
        labelled: false,
        ..Dataset::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_set_other_seed_other_set() {
        let shape = ImageShape { channels: 1, height: 4, width: 4 };
        let a = generate(NoiseKind::Gaussian, shape, 10, 7);
        assert_eq!(a.pixels, generate(NoiseKind::Gaussian, shape, 10, 7).pixels);
        assert_ne!(a.pixels, generate(NoiseKind::Gaussian, shape, 10, 8).pixels);
        let mean = a.pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / a.pixels.len() as f64;
        assert!((mean - 127.5).abs() < 20.0, "{mean}");
    }

    #[test]
    fn bad_counts_are_errors() {
        assert!(NoiseKind::parse_spec("gaussian:0").is_err());
        assert!(NoiseKind::parse_spec("uniform:abc").unwrap_err().to_string().contains("abc"));
        assert!(NoiseKind::parse_spec("mnist.gz").unwrap().is_none());
    }
}
