//! The clap arguments of `train` and `eval` (and the data flags they share), and their mapping
//! onto an experiment.

use super::commands;
use crate::config::{DataConfig, DeviceChoice, ExperimentConfig, ModelKind};
use crate::error::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DataArgs {
    /// A TOML experiment file ([data] and [train] tables); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// ID training set (IDX images file, CIFAR .bin batches comma-separated, or an image folder).
    #[arg(long)]
    train: Option<String>,
    /// ID test set.
    #[arg(long)]
    test: Option<String>,
    /// Test OOD set (repeatable): a path, or gaussian[:N[:SEED]] / uniform[:N[:SEED]].
    #[arg(long = "ood")]
    ood: Vec<String>,
    /// Validation OOD set: chooses the best epoch and gamma (default: patch-shuffle, held-out ID
    /// images with their 4x4 patches shuffled). It may not equal a test set or share its family.
    #[arg(long)]
    val_ood: Option<String>,
    /// Use only the first N training samples.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Fraction of the training samples held out (class-stratified) as the ID side of validation
    /// (default 0.1; 0 allowed, with a warning).
    #[arg(long)]
    id_val_fraction: Option<f64>,
    /// Seed of the ID validation split (default 0).
    #[arg(long)]
    id_val_seed: Option<u64>,
    /// Accept a validation OOD set equal to a test set or of a test set's family; config.json
    /// records it.
    #[arg(long)]
    allow_val_test_overlap: bool,
    /// Also score with ODIN (T = 1000, epsilon = 0.0014 in [0, 1] pixel units): one backward pass per evaluated sample,
    /// about 3x the evaluation time. Same as `odin = true` under [detectors] in a config.
    #[arg(long)]
    odin: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// auto (GPU when a hardware adapter exists, else CPU), gpu, or cpu.
    #[arg(long)]
    device: Option<String>,
    /// Run folder to write (default: runs/<model>-seed<seed>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the epoch records as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Continue the interrupted base training in this run folder from its last complete epoch, to
    /// the epoch count in its config (same numbers as an uninterrupted run on the same device).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "train", "test", "ood", "val_ood", "train_limit", "model", "epochs", "lr", "batch", "seed", "out"])]
    resume: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The model: .bpk, or .safetensors with PyTorch names and layout (as `unleash export` writes).
    #[arg(long)]
    model: PathBuf,
    /// Take architecture, data and normalisation from this run's config.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Architecture when no run is given.
    #[arg(long, default_value = "small-cnn")]
    arch: String,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    json: bool,
}

impl DataArgs {
    /// The data config: the TOML file's, else the sample data, with flags on top.
    fn resolve(&self, base: Option<ExperimentConfig>) -> Result<ExperimentConfig> {
        let mut exp = match (&self.config, base) {
            (Some(p), _) => ExperimentConfig::from_toml_file(p)?,
            (None, Some(b)) => b,
            (None, None) => ExperimentConfig { data: DataConfig::sample(), train: Default::default(), detectors: Default::default() },
        };
        if let Some(t) = &self.train {
            exp.data.train = t.clone();
        }
        if let Some(t) = &self.test {
            exp.data.test = t.clone();
        }
        if !self.ood.is_empty() {
            exp.data.ood = self.ood.clone();
        }
        if let Some(v) = &self.val_ood {
            exp.data.val_ood = v.clone();
        }
        if self.train_limit.is_some() {
            exp.data.train_limit = self.train_limit;
        }
        if let Some(f) = self.id_val_fraction {
            exp.data.id_val_fraction = f;
        }
        if let Some(seed) = self.id_val_seed {
            exp.data.id_val_seed = seed;
        }
        if self.allow_val_test_overlap {
            exp.data.allow_val_test_overlap = true;
        }
        if self.odin {
            exp.detectors.odin = true;
        }
        Ok(exp)
    }
}

impl TrainArgs {
    /// `unleash train`: the experiment from the flags (or `--resume`'s run folder), trained.
    pub fn run(self) -> Result<()> {
        if let Some(dir) = &self.resume {
            let device = self.device.as_deref().map(DeviceChoice::parse).transpose()?;
            return commands::resume_training(dir, device, self.json).map(|_| ());
        }
        let mut exp = self.data.resolve(None)?;
        let t = &mut exp.train;
        if let Some(m) = &self.model {
            t.model = ModelKind::parse(m)?;
        }
        if let Some(v) = self.epochs {
            t.epochs = v;
        }
        if let Some(v) = self.lr {
            t.lr = v;
        }
        if let Some(v) = self.batch {
            t.batch_size = v;
        }
        if let Some(v) = self.seed {
            t.seed = v;
        }
        if let Some(d) = &self.device {
            t.device = DeviceChoice::parse(d)?;
        }
        commands::train(exp, self.out, self.json).map(|_| ())
    }
}

impl EvalArgs {
    /// `unleash eval`: the experiment from `--run`'s config or the flags, the model scored on it.
    pub fn run(self) -> Result<()> {
        let base = match &self.run {
            Some(run) => Some(commands::run_experiment(run)?),
            None => None,
        };
        let mut exp = self.data.resolve(base)?;
        if self.run.is_none() {
            exp.train.model = ModelKind::parse(&self.arch)?;
        }
        let device = self.device.as_deref().map(DeviceChoice::parse).transpose()?;
        commands::eval(exp, &self.model, device, self.json)
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// The checkpoint: a PyTorch state dict (.pt, .pth, .ckpt, .bin; `torch.save(model.state_dict())`)
    /// or .safetensors. Read as data only: no code in it is run.
    #[arg(long)]
    model: PathBuf,
    /// Its architecture: resnet18 (CIFAR-style, as OpenOOD's ResNet18_32x32), small-cnn or mlp.
    #[arg(long)]
    arch: String,
    #[command(flatten)]
    data: DataArgs,
    /// The input normalisation the model was trained with: cifar10, imagenet, MEAN,STD,
    /// M1,..,Mc,S1,..,Sc, or data (the training set's statistics, as unleash trains; default).
    #[arg(long, default_value = "data")]
    normalize: String,
    /// How the file's tensor names map to unleash's: unleash (as `unleash export` writes; default),
    /// openood, torchvision, or a TOML file of rename rules (rename = [["REGEX", "REPLACEMENT"], ...]).
    #[arg(long, default_value = "unleash")]
    key_map: String,
    /// Seed of later jobs on the run (UM's shuffles, random masks).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    device: Option<String>,
    /// Run folder to create.
    #[arg(long)]
    out: PathBuf,
}

impl ImportArgs {
    /// `unleash import`: the experiment from the flags, the checkpoint made its first epoch.
    pub fn run(self) -> Result<()> {
        let mut exp = self.data.resolve(None)?;
        exp.train.model = ModelKind::parse(&self.arch)?;
        exp.train.normalization = crate::import::parse_normalization(&self.normalize)?;
        if let Some(seed) = self.seed {
            exp.train.seed = seed;
        }
        if let Some(d) = &self.device {
            exp.train.device = DeviceChoice::parse(d)?;
        }
        let spec = crate::import::ImportSpec { model: self.model, key_map: crate::import::KeyMap::parse(&self.key_map) };
        commands::import(exp, &spec, &self.out)
    }
}
