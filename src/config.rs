//! Run configuration: what the CLI flags, a TOML file or the GUI's setup panel produce. Validated
//! as a whole, with every bad field listed in one error.

use crate::data::{noise, DataSource};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    #[default]
    SmallCnn,
    Mlp,
    Resnet18,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::SmallCnn, ModelKind::Mlp, ModelKind::Resnet18];

    pub fn key(self) -> &'static str {
        match self {
            ModelKind::SmallCnn => "small-cnn",
            ModelKind::Mlp => "mlp",
            ModelKind::Resnet18 => "resnet18",
        }
    }

    pub fn parse(s: &str) -> Result<ModelKind> {
        ModelKind::ALL
            .into_iter()
            .find(|m| m.key().eq_ignore_ascii_case(s) || m.key().replace('-', "") == s.to_ascii_lowercase())
            .ok_or_else(|| Error::config("model", format!("unknown model '{s}' (choose small-cnn, mlp or resnet18)")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// wgpu when a hardware GPU adapter exists, else the flex CPU backend.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<DeviceChoice> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "gpu" | "wgpu" => Ok(DeviceChoice::Gpu),
            "cpu" | "flex" => Ok(DeviceChoice::Cpu),
            _ => Err(Error::config("device", format!("unknown device '{s}' (choose auto, gpu or cpu)"))),
        }
    }
}

/// The data of one experiment, as specs that [`DataSource::parse`] reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub train: String,
    pub test: String,
    /// Validation OOD set: selects the best epoch and gamma.
    #[serde(default = "default_val_ood")]
    pub val_ood: String,
    /// Test OOD sets: reported only.
    #[serde(default)]
    pub ood: Vec<String>,
    /// Use only the first N training samples.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Class names, one per label (else read from a names file beside the training data; see
    /// `data::classes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

fn default_val_ood() -> String {
    format!("gaussian:{}:{}", noise::DEFAULT_COUNT, noise::VALIDATION_SEED)
}

impl DataConfig {
    /// The bundled sample data: Fashion-MNIST as ID; MNIST, textures, Gaussian and uniform noise
    /// as test OOD sets; separately seeded Gaussian noise for validation.
    pub fn sample() -> DataConfig {
        let dir = crate::data::sample_data_dir();
        let p = |f: &str| dir.join(f).display().to_string();
        DataConfig {
            train: p("fashion-train-images-idx3-ubyte.gz"),
            test: p("fashion-t10k-images-idx3-ubyte.gz"),
            val_ood: default_val_ood(),
            ood: vec![
                p("mnist-t10k-images-idx3-ubyte.gz"),
                p("textures-images-idx3-ubyte.gz"),
                "gaussian".into(),
                "uniform".into(),
            ],
            train_limit: None,
            classes: None,
        }
    }

    /// Names of the `classes` labels of the training data.
    pub fn class_names(&self, classes: usize) -> Result<Vec<String>> {
        crate::data::classes::class_names(&self.train, self.classes.as_deref(), classes)
    }

    pub fn sources(&self) -> Result<(DataSource, DataSource, DataSource, Vec<DataSource>)> {
        Ok((
            DataSource::parse(&self.train)?,
            DataSource::parse(&self.test)?,
            DataSource::parse(&self.val_ood)?,
            self.ood.iter().map(|s| DataSource::parse(s)).collect::<Result<_>>()?,
        ))
    }

    pub fn load(&self) -> Result<crate::data::DataBundle> {
        let (train, test, val, ood) = self.sources()?;
        crate::data::DataBundle::load(&train, &test, &val, &ood, self.train_limit)
    }
}

/// Base training recipe (METHOD.md): SGD momentum 0.9 (dampening 0), weight decay 5e-4, cosine lr
/// per step from 0.05, batch 128, no augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelKind,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Batch size of evaluation passes (per-sample loss, scores): larger is faster.
    pub eval_batch_size: usize,
    /// Save a snapshot every epoch (needed to resume UM from any stage).
    pub snapshot_every_epoch: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::SmallCnn,
            epochs: 40,
            lr: 0.05,
            batch_size: 128,
            momentum: 0.9,
            weight_decay: 5e-4,
            seed: 0,
            device: DeviceChoice::Auto,
            eval_batch_size: 500,
            snapshot_every_epoch: true,
        }
    }
}

impl TrainConfig {
    /// Every bad field at once, so the user fixes them in one go.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        if self.epochs == 0 {
            bad.push("epochs must be at least 1".to_string());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bad.push(format!("lr must be a positive number (got {})", self.lr));
        }
        if self.batch_size == 0 {
            bad.push("batch_size must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            bad.push("eval_batch_size must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bad.push(format!("momentum must be in [0, 1) (got {})", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bad.push(format!("weight_decay must be >= 0 (got {})", self.weight_decay));
        }
        check(bad)
    }
}

/// Turns a list of problems into one config error (or Ok when empty).
pub fn check(bad: Vec<String>) -> Result<()> {
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::config("configuration", bad.join("; ")))
    }
}

/// Checks a mask ratio: in [0, 0.99].
pub fn check_mask_ratio(r: f64) -> Result<()> {
    if r.is_finite() && (0.0..=0.99).contains(&r) {
        Ok(())
    } else {
        Err(Error::config("mask ratio", format!("{r} is outside [0, 0.99]")))
    }
}

/// A whole experiment in one TOML file: `[data]` and `[train]` tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

impl ExperimentConfig {
    pub fn from_toml_file(path: &Path) -> Result<ExperimentConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let cfg: ExperimentConfig =
            toml::from_str(&text).map_err(|e| Error::bad_data(path, format!("invalid TOML config: {e}")))?;
        cfg.train.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_listed() {
        let cfg = TrainConfig { epochs: 0, lr: -1.0, batch_size: 0, ..TrainConfig::default() };
        let err = cfg.validate().unwrap_err().to_string();
        for field in ["epochs", "lr", "batch_size"] {
            assert!(err.contains(field), "{field} missing in: {err}");
        }
    }

    #[test]
    fn mask_ratio_bounds() {
        assert!(check_mask_ratio(0.0).is_ok());
        assert!(check_mask_ratio(0.99).is_ok());
        assert!(check_mask_ratio(-0.1).is_err());
        assert!(check_mask_ratio(1.0).is_err());
        assert!(check_mask_ratio(f64::NAN).is_err());
    }

    #[test]
    fn unknown_model_and_device() {
        assert!(ModelKind::parse("vgg").unwrap_err().to_string().contains("vgg"));
        assert!(DeviceChoice::parse("tpu").unwrap_err().to_string().contains("tpu"));
        assert_eq!(ModelKind::parse("smallcnn").unwrap(), ModelKind::SmallCnn);
    }

    #[test]
    fn toml_round_trip_and_unknown_field() {
        let cfg = ExperimentConfig { data: DataConfig::sample(), train: TrainConfig::default() };
        let text = toml::to_string(&cfg).unwrap();
        let back: ExperimentConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        assert!(toml::from_str::<ExperimentConfig>("[data]\ntrain='a'\ntest='b'\nbogus=1").is_err());
    }
}
