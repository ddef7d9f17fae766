//! Run configuration: what the CLI flags, a TOML file or the GUI's setup panel produce. Validated
//! as a whole, with every bad field listed in one error.

use crate::data::{validation, DataSource};
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
    /// Fraction of the training samples held out (class-stratified) as the ID side of
    /// validation; 0 is allowed (with a warning: the training samples stand in).
    #[serde(default = "default_id_val_fraction")]
    pub id_val_fraction: f64,
    /// Seed of that split.
    #[serde(default)]
    pub id_val_seed: u64,
    /// Accept a validation OOD set equal to a test set or of a test set's family (the run
    /// records it). Off: such a configuration is refused.
    #[serde(default)]
    pub allow_val_test_overlap: bool,
}

fn default_val_ood() -> String {
    format!("{}:{}:{}", validation::PATCH_SHUFFLE, validation::DEFAULT_COUNT, validation::DEFAULT_SEED)
}

fn default_id_val_fraction() -> f64 {
    validation::DEFAULT_ID_VAL_FRACTION
}

impl DataConfig {
    /// The bundled sample data: Fashion-MNIST as ID; MNIST, textures, Gaussian and uniform noise
    /// as test OOD sets; patch-shuffled held-out Fashion-MNIST images for validation.
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
            id_val_fraction: default_id_val_fraction(),
            id_val_seed: 0,
            allow_val_test_overlap: false,
        }
    }

    /// Names of the labels of the training data `train` (loaded from this config).
    pub fn class_names(&self, train: &crate::data::Dataset) -> Result<Vec<String>> {
        crate::data::classes::class_names(&self.train, self.classes.as_deref(), train.num_classes, &train.class_names)
    }

    /// The protocol rules: the validation OOD set is no test set and of no test set's family
    /// (unless `allow_val_test_overlap`), and the split fraction is in range. Every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        if let Err(e) = validation::check_fraction(self.id_val_fraction) {
            bad.push(e);
        }
        if !self.allow_val_test_overlap {
            bad.extend(self.val_test_clashes()?);
        }
        check(bad)
    }

    /// Each test set (ID test and test OOD) that the validation OOD set equals or shares a family with.
    pub fn val_test_clashes(&self) -> Result<Vec<String>> {
        let val = DataSource::parse(&self.val_ood)?;
        let mut out = Vec::new();
        for (role, spec) in std::iter::once(("ID test set", &self.test)).chain(self.ood.iter().map(|o| ("test OOD set", o))) {
            let test = DataSource::parse(spec)?;
            let why = if val == test || self.val_ood.trim() == spec.trim() {
                "is the same set as".to_string()
            } else if val.family() == test.family() {
                format!("is of the same family ({}) as", val.family())
            } else {
                continue;
            };
            out.push(format!(
                "the validation OOD set '{}' {why} the {role} '{spec}': selecting on it would select on a test distribution (choose another --val-ood, or pass --allow-val-test-overlap / allow_val_test_overlap = true to accept it; the run records that)",
                self.val_ood
            ));
        }
        Ok(out)
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
        crate::data::DataBundle::load_split(&train, &test, &val, &ood, self.train_limit, self.id_val_fraction, self.id_val_seed)
    }

    /// The protocol rule by content, for a new run on `bundle` (loaded from this config): a
    /// validation OOD set read from disk may hold no image of a test set (a copy of test data
    /// under another name would select on it). Refused unless the user accepted overlaps; then
    /// the overlaps are returned, for config.json's `val_test_overlap.clashes`.
    pub fn shared_image_clashes(&self, bundle: &crate::data::DataBundle) -> Result<Vec<String>> {
        if !DataSource::parse(&self.val_ood)?.is_on_disk() {
            return Ok(Vec::new());
        }
        let shared = bundle.val_test_shared_images();
        if !shared.is_empty() && !self.allow_val_test_overlap {
            return Err(Error::Mismatch(format!(
                "{}; selecting on it would select on a test distribution (choose another --val-ood, or pass --allow-val-test-overlap / allow_val_test_overlap = true to accept it; the run records that)",
                shared.join("; ")
            )));
        }
        Ok(shared)
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
    /// The input normalisation the model expects, when it is not the training set's own
    /// statistics: an imported model keeps the one it was trained with (`import --normalize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalization: Option<crate::data::Normalization>,
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
            normalization: None,
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
    /// The OOD detectors' settings (`[detectors]`); runs written before them read the defaults.
    #[serde(default)]
    pub detectors: crate::ood::DetectorConfig,
}

impl ExperimentConfig {
    /// The training recipe's and the data protocol's rules together: what a new run must pass.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        for e in [self.train.validate(), self.data.validate(), self.detectors.validate()] {
            match e {
                // The problems themselves: one "invalid configuration" prefix for all of them.
                Err(Error::Config { field, problem }) if field == "configuration" => bad.push(problem),
                Err(e) => bad.push(e.to_string()),
                Ok(()) => {}
            }
        }
        check(bad)
    }

    pub fn from_toml_file(path: &Path) -> Result<ExperimentConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let cfg: ExperimentConfig =
            toml::from_str(&text).map_err(|e| Error::bad_data(path, format!("invalid TOML config: {e}")))?;
        cfg.train.validate()?;
        cfg.detectors.validate().map_err(|e| Error::bad_data(path, e.to_string()))?;
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
    fn the_default_validation_set_shares_no_test_family() {
        let d = DataConfig::sample();
        assert!(d.val_ood.starts_with("patch-shuffle"), "{}", d.val_ood);
        assert_eq!(d.id_val_fraction, 0.1);
        d.validate().unwrap();
    }

    #[test]
    fn a_validation_set_of_a_test_family_is_refused_naming_both() {
        let mut d = DataConfig::sample();
        // Gaussian noise with another seed is still the test Gaussian's family (the old default).
        d.val_ood = "gaussian:2000:2".into();
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("'gaussian:2000:2'") && e.contains("'gaussian'") && e.contains("gaussian noise"), "{e}");
        assert!(e.contains("--allow-val-test-overlap"), "{e}");
        // The very same file as a test set.
        let mnist = d.ood[0].clone();
        d.val_ood = mnist.clone();
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("is the same set as") && e.contains(&mnist), "{e}");
        // Another split of a test dataset ("mnist-train" vs "mnist-t10k") is its family too.
        d.val_ood = mnist.replace("t10k", "train");
        assert!(d.validate().unwrap_err().to_string().contains("dataset 'mnist-images-idx3-ubyte' in"));
        // The ID test set counts as a test set.
        d.val_ood = d.test.clone();
        assert!(d.validate().unwrap_err().to_string().contains("ID test set"));
        // Another family passes; the override accepts a clash.
        d.val_ood = "patch-shuffle:500:9".into();
        d.validate().unwrap();
        d.val_ood = "uniform:100:5".into();
        assert!(d.validate().is_err());
        d.allow_val_test_overlap = true;
        d.validate().unwrap();
        // A bad split fraction is listed too.
        d.id_val_fraction = 1.5;
        assert!(d.validate().unwrap_err().to_string().contains("id_val_fraction"));
    }

    #[test]
    fn old_run_configs_reopen_as_they_were_made() {
        let mut exp = serde_json::to_value(ExperimentConfig { data: DataConfig::sample(), train: TrainConfig::default(), detectors: Default::default() }).unwrap();
        // An old config.json: no split fields, the old Gaussian validation default.
        for k in ["id_val_fraction", "id_val_seed", "allow_val_test_overlap"] {
            exp["data"].as_object_mut().unwrap().remove(k);
        }
        exp["data"]["val_ood"] = "gaussian:2000:2".into();
        let old = serde_json::json!({ "experiment": exp });
        let parse = |v: &serde_json::Value| crate::run::RunConfig::parse(Path::new("run/config.json"), &serde_json::to_vec(v).unwrap()).unwrap().experiment.unwrap();
        let e = parse(&old);
        assert_eq!((e.data.id_val_fraction, e.data.allow_val_test_overlap), (0.0, true));
        e.validate().unwrap();
        // A new one keeps its fields.
        let mut new = old.clone();
        new["id_val_split"] = serde_json::json!({"fraction": 0.1, "seed": 0, "count": 1000, "indices": []});
        new["experiment"]["data"]["id_val_fraction"] = 0.1.into();
        let e = parse(&new);
        assert_eq!((e.data.id_val_fraction, e.data.allow_val_test_overlap), (0.1, false));
        assert!(e.validate().is_err());
    }

    #[test]
    fn toml_round_trip_and_unknown_field() {
        let cfg = ExperimentConfig { data: DataConfig::sample(), train: TrainConfig::default(), detectors: Default::default() };
        let text = toml::to_string(&cfg).unwrap();
        let back: ExperimentConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        assert!(toml::from_str::<ExperimentConfig>("[data]\ntrain='a'\ntest='b'\nbogus=1").is_err());
    }
}
