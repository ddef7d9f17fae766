//! `unleash`: with no arguments, the desktop app on the bundled sample data; with a subcommand,
//! the same jobs headless.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use unleash::cli::args::{EvalArgs, ImportArgs, TrainArgs};
use unleash::cli::{bench, commands, reproduce, sweep};
use unleash::config::ExperimentConfig;
use unleash::train::Finetune;
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
    /// Make a run of a model trained elsewhere (PyTorch .pt/.pth/.ckpt state dict or .safetensors):
    /// its epoch 1 is the model, scored on every set; then mask, um, umap, control and the app work on it.
    Import(ImportArgs),
    /// AUROC / FPR95 / AUPR-In / AUPR-Out from two files of scores (one per line; higher = more ID).
    Metrics {
        id_scores: PathBuf,
        ood_scores: PathBuf,
        /// Which comma-separated column to read (0-based). Two score arrays of a run
        /// (`epochs/N/scores_<set>.npy`) give every score they hold instead.
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
    /// Reproduce the paper's finding over several seeds (table + plot): on the sample data, or the data of --config
    Reproduce(reproduce::ReproduceArgs),
    /// Seeds x settings from a TOML grid, one task per index (a Slurm job array, a Kubernetes
    /// Indexed Job): --list the tasks, run task --index I, or --report the merged tables.
    Sweep(sweep::SweepArgs),
    /// Measure throughput: train/eval samples/s, the per-sample-loss pass, metrics on 1M scores.
    Bench(bench::BenchArgs),
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

#[cfg(feature = "gui")]
fn gui(run: Option<PathBuf>, start: bool, config: Option<PathBuf>, out: Option<PathBuf>) -> Result<()> {
    let config = config.map(|p| ExperimentConfig::from_toml_file(&p)).transpose()?;
    unleash::app::run_gui(unleash::app::AppOptions { run, device: None, config, out, start, no_native_dialogs: false })
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
        Some(Command::Train(a)) => a.run(),
        Some(Command::Repair { run }) => commands::repair(&run),
        Some(Command::Eval(a)) => a.run(),
        Some(Command::Import(a)) => a.run(),
        Some(Command::Metrics { id_scores, ood_scores, column, json }) => commands::metrics(&id_scores, &ood_scores, column, json),
        Some(Command::Mask(a)) => commands::mask(a),
        Some(Command::Um(a)) => commands::finetune(a, Finetune::Um),
        Some(Command::Umap(a)) => commands::finetune(a, Finetune::Umap),
        Some(Command::Control(a)) => commands::finetune(a, Finetune::Control),
        Some(Command::Export(a)) => commands::export(a),
        Some(Command::Reproduce(a)) => reproduce::reproduce(a),
        Some(Command::Sweep(a)) => sweep::sweep(a),
        Some(Command::Bench(a)) => bench::bench(a),
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
