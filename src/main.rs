//! `unleash`: with no arguments, the desktop app on the bundled sample data; with a subcommand,
//! the same jobs headless.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use unleash::config::{DataConfig, DeviceChoice, ExperimentConfig, ModelKind};
use unleash::cli::commands;
use unleash::{Error, Result};

/// See Cargo.toml: burn's CPU backend churns large buffers, which mimalloc reuses without page faults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "unleash", version, about = "Unleashing Mask (ICML 2023): find the OOD detection a classifier loses late in training, and get it back")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the desktop app (the default).
    #[cfg(feature = "gui")]
    Gui {
        /// A run folder to open.
        #[arg(long)]
        run: Option<PathBuf>,
        /// Start training at launch (with --config's experiment, or the sample data).
        #[arg(long)]
        start: bool,
        /// A TOML experiment file to set up.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The run folder a training started here writes.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Train an ID classifier, evaluating every epoch (or continue an interrupted one: --resume).
    Train(TrainArgs),
    /// Cut a damaged events.jsonl back to its last good epoch, keeping the original as a backup.
    Repair {
        #[arg(long)]
        run: PathBuf,
    },
    /// Metric table of a saved model on an ID test set and OOD sets.
    Eval(EvalArgs),
    /// AUROC / FPR95 / AUPR-In / AUPR-Out from two files of scores (one per line; higher = more ID).
    Metrics {
        id_scores: PathBuf,
        ood_scores: PathBuf,
        /// Which comma-separated column to read (0-based).
        #[arg(long, default_value_t = 0)]
        column: usize,
        #[arg(long)]
        json: bool,
    },
    /// Mask a snapshot at several ratios: gamma, atypical count and masked accuracy per ratio.
    Mask(commands::MaskArgs),
    /// Fine-tune with UM (flooded loss at gamma), continuing the run.
    Um(commands::FinetuneArgs),
    /// Prune with UMAP (edge-popup scores, frozen weights, flooded loss), continuing the run.
    Umap(commands::FinetuneArgs),
    /// Plain cross-entropy fine-tune of the same length (the control for UM).
    Control(commands::FinetuneArgs),
    /// Export a run's model (.bpk + .safetensors), report, atypical list or contact sheet.
    Export(commands::ExportArgs),
    /// Reproduce the paper's finding on the sample data over several seeds (table + plot).
    Reproduce(commands::ReproduceArgs),
    /// Measure throughput: train/eval samples/s, the per-sample-loss pass, metrics on 1M scores.
    Bench(commands::BenchArgs),
    /// Print the sample order of training epochs (one line per epoch, space-separated indices),
    /// to feed another framework exactly the batches unleash trains on.
    BatchOrder {
        /// The run's seed.
        #[arg(long)]
        seed: u64,
        /// Epochs, e.g. 1..10: run epochs for `--phase base`, epochs within the phase for
        /// `--phase finetune` (every UM, UMAP and control phase draws the same orders).
        #[arg(long)]
        epochs: String,
        /// Training samples (the training set after the ID validation split is held out).
        #[arg(long)]
        samples: usize,
        /// base or finetune.
        #[arg(long, default_value = "base")]
        phase: String,
    },
}

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
}

#[derive(Args)]
struct TrainArgs {
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
struct EvalArgs {
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
            (None, None) => ExperimentConfig { data: DataConfig::sample(), train: Default::default() },
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
        Ok(exp)
    }
}

fn train(a: TrainArgs) -> Result<()> {
    if let Some(dir) = &a.resume {
        let device = a.device.as_deref().map(DeviceChoice::parse).transpose()?;
        return commands::resume_training(dir, device, a.json).map(|_| ());
    }
    let mut exp = a.data.resolve(None)?;
    let t = &mut exp.train;
    if let Some(m) = &a.model {
        t.model = ModelKind::parse(m)?;
    }
    if let Some(v) = a.epochs {
        t.epochs = v;
    }
    if let Some(v) = a.lr {
        t.lr = v;
    }
    if let Some(v) = a.batch {
        t.batch_size = v;
    }
    if let Some(v) = a.seed {
        t.seed = v;
    }
    if let Some(d) = &a.device {
        t.device = DeviceChoice::parse(d)?;
    }
    commands::train(exp, a.out, a.json).map(|_| ())
}

fn eval(a: EvalArgs) -> Result<()> {
    let base = match &a.run {
        Some(run) => Some(commands::run_experiment(run)?),
        None => None,
    };
    let mut exp = a.data.resolve(base)?;
    if a.run.is_none() {
        exp.train.model = ModelKind::parse(&a.arch)?;
    }
    let device = a.device.as_deref().map(DeviceChoice::parse).transpose()?;
    commands::eval(exp, &a.model, device, a.json)
}

#[cfg(feature = "gui")]
fn gui(run: Option<PathBuf>, start: bool, config: Option<PathBuf>, out: Option<PathBuf>) -> Result<()> {
    let config = config.map(|p| ExperimentConfig::from_toml_file(&p)).transpose()?;
    unleash::app::run_gui(unleash::app::AppOptions { run, device: None, config, out, start })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "gui")]
        None => unleash::app::run_gui(Default::default()),
        #[cfg(not(feature = "gui"))]
        None => Err(Error::Other("this build has no desktop app (built without the `gui` feature); run `unleash --help` for the CLI".into())),
        #[cfg(feature = "gui")]
        Some(Command::Gui { run, start, config, out }) => gui(run, start, config, out),
        Some(Command::Train(a)) => train(a),
        Some(Command::Repair { run }) => commands::repair(&run),
        Some(Command::Eval(a)) => eval(a),
        Some(Command::Metrics { id_scores, ood_scores, column, json }) => commands::metrics(&id_scores, &ood_scores, column, json),
        Some(Command::Mask(a)) => commands::mask(a),
        Some(Command::Um(a)) => commands::finetune(a, commands::Finetune::Um),
        Some(Command::Umap(a)) => commands::finetune(a, commands::Finetune::Umap),
        Some(Command::Control(a)) => commands::finetune(a, commands::Finetune::Control),
        Some(Command::Export(a)) => commands::export(a),
        Some(Command::Reproduce(a)) => commands::reproduce(a),
        Some(Command::Bench(a)) => commands::bench(a),
        Some(Command::BatchOrder { seed, epochs, samples, phase }) => commands::batch_order(seed, &epochs, samples, &phase),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Stopped) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
