//! `unleash reproduce`: the paper's finding on the sample data, over several seeds. Per seed: base
//! training; then, each from the final base snapshot and on the same batches (fine-tune orders
//! are keyed on the phase epoch), a plain-CE control, UM with gamma from mask ratio 0.7, UM with
//! the validation-chosen gamma, and UMAP at r = 0.2. Each finished seed writes a small summary
//! (`seed-N.json`), so seeds can run across sessions and machines; the report (markdown + JSON:
//! mean and sd over seeds, paired differences with 95% t intervals, and a PNG of AUROC vs epoch)
//! is built from those summaries alone. Each seed is a task ([`run_task`]): its own run folder and
//! summary, continued where it stopped when run again (`--task-index I` runs the I-th seed alone,
//! as one task of a job array; `unleash sweep` runs the tasks of a grid of settings).

use crate::cli::Renderer;
use crate::cli::commands::open_session;
use crate::config::{DataConfig, DeviceChoice, ExperimentConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::fsio;
use crate::ood::{Metrics, Score};
use crate::run::{best_by_validation, block_stages, phase_blocks, EpochRecord, Phase, Stage};
use crate::train::{Finetune, PhaseSpec, Session};
use crate::unleash::MaskKind;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct ReproduceArgs {
    /// Seeds: a list and/or inclusive ranges, e.g. 0..9 or 0,1,5..7.
    #[arg(long, default_value = "0..9")]
    pub seeds: String,
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Base training lr (the recipe's default, 0.05).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// Epochs of each fine-tune (UM, UMAP, control).
    #[arg(long, default_value_t = 10)]
    pub finetune_epochs: usize,
    #[arg(long, default_value_t = 0.05)]
    pub finetune_lr: f64,
    #[arg(long, default_value_t = 0.7)]
    pub um_mask_ratio: f64,
    /// The mask that gives the mask gamma: magnitude (the default; what the PyTorch cross-check
    /// and the README's reference use) or random (per layer, as the official code's estimate).
    #[arg(long, default_value = "magnitude")]
    pub gamma_mask: String,
    #[arg(long, default_value_t = 0.2)]
    pub umap_ratio: f64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Use only the first N training samples (quick checks).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// The data: the [data] table of this TOML experiment file (default: the sample data). Its
    /// [train] and [detectors] tables are not read: the recipe is the flags'.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One more arm: UM with gamma from the official code's estimator (its `estimate_loss`
    /// config: prune_rate 0.965 with random scores, so a random 3.5% of each layer is zeroed).
    #[arg(long)]
    pub official_gamma: bool,
    /// Folder of the run folders (seed-N) and the report.
    #[arg(long, default_value = "runs/reproduce")]
    pub out: PathBuf,
    /// Folder of the per-seed summaries (seed-N.json), meant to be committed.
    #[arg(long, default_value = "assets/reproduction/seeds")]
    pub summaries: PathBuf,
    /// Only rebuild the report (into --out) from the summaries of --seeds in --summaries.
    #[arg(long)]
    pub report_only: bool,
    /// Run one task of a job array: the I-th seed of --seeds (0-based), e.g.
    /// `--task-index $SLURM_ARRAY_TASK_ID`. A task writes only its run folder and its summary
    /// (no report), and a rerun continues it where it stopped.
    #[arg(long, value_name = "I", conflicts_with = "report_only")]
    pub task_index: Option<usize>,
    /// Write no report after running the seeds (each seed's run folder and summary only).
    #[arg(long, conflicts_with = "report_only")]
    pub no_report: bool,
}

/// Parses `0..9`, `0,1,2`, `0,3..5` (ranges inclusive) into distinct seeds, in order.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>> {
    let bad = |why: String| Error::config("seeds", format!("'{spec}': {why} (give e.g. 0..9 or 0,1,2)"));
    let mut out: Vec<u64> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad(format!("'{}' is not a seed", s.trim())));
        let (a, b) = match part.split_once("..") {
            Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
            None => (num(part)?, num(part)?),
        };
        if b < a {
            return Err(bad(format!("the range {part} is empty")));
        }
        if b - a >= 10_000 {
            return Err(bad(format!("the range {part} is too long")));
        }
        for seed in a..=b {
            if !out.contains(&seed) {
                out.push(seed);
            }
        }
    }
    if out.is_empty() {
        return Err(bad("no seeds".into()));
    }
    Ok(out)
}

/// The stages compared in the table. Each fine-tune is reported at its last epoch and at its
/// best epoch by the validation OOD set (the same honest selection the base run gets).
pub const STAGES: [&str; 12] = [
    "best epoch (val)",
    "final",
    "CE control: last",
    "CE control: best (val)",
    "UM (gamma from mask 0.7): last",
    "UM (gamma from mask 0.7): best (val)",
    "UM (val-chosen gamma): last",
    "UM (val-chosen gamma): best (val)",
    "UMAP (r 0.2): last",
    "UMAP (r 0.2): best (val)",
    // With --official-gamma only.
    "UM (official gamma, random mask 0.035): last",
    "UM (official gamma, random mask 0.035): best (val)",
];

/// The official estimator's mask: prune_rate 0.965 keeps 96.5% of each layer (random scores).
pub const OFFICIAL_GAMMA_RATIO: f64 = 0.035;

/// The table's stages from a reproduction run's records: the base run, then the fine-tune blocks
/// in the order `reproduce` runs them (control, UM with the mask gamma, UM with the validation
/// gamma, UMAP, and with `--official-gamma` UM with the official estimator's gamma).
pub fn stages_from_records(records: &[EpochRecord]) -> Result<Vec<StageResult>> {
    let blocks = phase_blocks(records);
    let bad = || Error::Other("a reproduction run holds base, control, UM, UM and UMAP phases (and UM with --official-gamma), in that order".into());
    let expected = [Phase::Base, Phase::Control, Phase::Um, Phase::Um, Phase::Umap, Phase::Um];
    if !(5..=6).contains(&blocks.len()) || blocks.iter().zip(expected).any(|(b, p)| b.2[0].phase != p) {
        return Err(bad());
    }
    let record = |s: Stage| records.iter().find(|r| r.epoch == s.epoch).ok_or_else(bad);
    let mut out = Vec::new();
    for (k, (_, _, block)) in blocks.iter().enumerate() {
        let (last, best) = block_stages(block).ok_or_else(bad)?;
        // The base run is listed best first, each fine-tune last first (the order of STAGES).
        let picks = if k == 0 { [best, last] } else { [last, best] };
        for (j, stage) in picks.into_iter().enumerate() {
            out.push(stage_result(STAGES[2 * k + j], record(stage)?));
        }
    }
    Ok(out)
}

/// One stage's numbers for one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    pub stage: String,
    pub epoch: usize,
    pub gamma: Option<f64>,
    pub id_acc: f64,
    /// score -> set (incl. "mean") -> (AUROC, FPR95)
    pub metrics: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

fn stage_result(stage: &str, r: &EpochRecord) -> StageResult {
    let mut metrics = BTreeMap::new();
    for s in Score::ALL {
        let mut per = BTreeMap::new();
        for (set, m) in &r.ood {
            if let Some(v) = m.get(&s) {
                per.insert(set.clone(), (v.auroc, v.fpr95));
            }
        }
        if let Some(v) = r.ood_mean.get(&s) {
            per.insert("mean".to_string(), (v.auroc, v.fpr95));
        }
        // Scores a run did not compute (ODIN off, seeds from before the detectors) stay out.
        if !per.is_empty() {
            metrics.insert(s.name().to_string(), per);
        }
    }
    StageResult { stage: stage.to_string(), epoch: r.epoch, gamma: r.gamma, id_acc: r.test_acc, metrics }
}

/// The settings a seed ran with; every summary pooled in one table must share them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub epochs: usize,
    pub lr: f64,
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    pub um_mask_ratio: f64,
    pub gamma_mask: String,
    pub umap_ratio: f64,
    pub train_limit: Option<usize>,
    pub id_val_fraction: f64,
    pub val_ood: String,
    /// The data, when not the sample data (`--config`); absent in the sample data's summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataConfig>,
    /// Whether the official-estimator arm ran (`--official-gamma`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub official_gamma: bool,
}

impl Settings {
    pub fn of(a: &ReproduceArgs) -> Result<Settings> {
        let own = a.config.as_deref().map(ExperimentConfig::from_toml_file).transpose()?.map(|e| e.data);
        let data = own.clone().unwrap_or_else(DataConfig::sample);
        Ok(Settings {
            epochs: a.epochs,
            lr: a.lr,
            finetune_epochs: a.finetune_epochs,
            finetune_lr: a.finetune_lr,
            um_mask_ratio: a.um_mask_ratio,
            gamma_mask: a.gamma_mask.to_ascii_lowercase(),
            umap_ratio: a.umap_ratio,
            train_limit: a.train_limit,
            id_val_fraction: data.id_val_fraction,
            val_ood: data.val_ood,
            data: own,
            official_gamma: a.official_gamma,
        })
    }

    /// The recipe's values that no session checks before it is too late (a fine-tune's mask).
    pub fn check(&self) -> Result<()> {
        MaskKind::parse(&self.gamma_mask)?;
        crate::config::check_mask_ratio(self.um_mask_ratio)?;
        crate::config::check_mask_ratio(self.umap_ratio)
    }

    /// The data of a seed: the config's, or the sample data; `--train-limit` on top.
    fn data_config(&self) -> DataConfig {
        let mut data = self.data.clone().unwrap_or_else(DataConfig::sample);
        data.train_limit = self.train_limit.or(data.train_limit);
        data
    }

    /// "the sample data", or the training file's name.
    fn data_name(&self) -> String {
        self.data.as_ref().map_or("the sample data".to_string(), |d| format!("`{}`", d.train))
    }
}

/// One epoch of the AUROC-vs-epoch plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub epoch: usize,
    pub phase: Phase,
    pub phase_epoch: usize,
    pub from_epoch: usize,
    pub gamma: Option<f64>,
    pub test_acc: f64,
    /// Mean test-OOD Energy AUROC.
    pub energy_auroc: f64,
    /// Validation Energy AUROC (ID validation split vs the validation OOD set).
    pub val_energy_auroc: f64,
}

/// What one finished seed leaves behind (`seed-N.json`): enough for the tables and the plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedSummary {
    pub seed: u64,
    pub settings: Settings,
    pub device: String,
    pub unleash_version: String,
    pub wall_seconds: f64,
    /// gamma of the mask at `um_mask_ratio`, its atypical count, and the validation-chosen gamma
    /// with the best-by-validation base epoch it came from.
    pub gamma_mask: f64,
    pub atypical: usize,
    pub gamma_val: f64,
    pub best_base_epoch: usize,
    /// gamma from the official estimator (`--official-gamma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma_official: Option<f64>,
    pub stages: Vec<StageResult>,
    pub curve: Vec<CurvePoint>,
}

pub fn summary_path(dir: &Path, seed: u64) -> PathBuf {
    dir.join(format!("seed-{seed}.json"))
}

fn read_summary(dir: &Path, seed: u64) -> Result<SeedSummary> {
    read_summary_file(&summary_path(dir, seed))
}

/// A seed's summary file, read; an unreadable one is an error naming it.
pub fn read_summary_file(p: &Path) -> Result<SeedSummary> {
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, "read", e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_data(p, format!("not a seed summary: {e}")))
}

pub fn reproduce(a: ReproduceArgs) -> Result<()> {
    let all_seeds = parse_seeds(&a.seeds)?;
    let seeds = match a.task_index {
        Some(i) => vec![*all_seeds.get(i).ok_or_else(|| Error::config("task index", format!("{i} is outside the {} seeds of --seeds {} (indices 0 to {})", all_seeds.len(), a.seeds, all_seeds.len() - 1)))?],
        None => all_seeds,
    };
    let settings = Settings::of(&a)?;
    settings.check()?;
    if !a.report_only {
        let device = DeviceChoice::parse(&a.device)?;
        let control = super::commands::ctrl_c_control();
        for &seed in &seeds {
            let place = TaskPlace { run: a.out.join(format!("seed-{seed}")), summary: summary_path(&a.summaries, seed) };
            run_task(&settings, seed, device, &place, &control)?;
        }
        if a.task_index.is_some() || a.no_report {
            return Ok(());
        }
    }
    let summaries = seeds.iter().map(|&s| read_summary(&a.summaries, s)).collect::<Result<Vec<_>>>()?;
    if let Some(other) = summaries.iter().find(|s| s.settings != summaries[0].settings) {
        return Err(Error::bad_data(
            &summary_path(&a.summaries, other.seed),
            format!("was run with other settings than seed {}'s; a table pools only like runs", summaries[0].seed),
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, "create", e))?;
    write_report(&a.out, &summaries)?;
    print_report(&a.out, &summaries);
    Ok(())
}

/// Where one task writes: its run folder and its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlace {
    pub run: PathBuf,
    pub summary: PathBuf,
}

/// What a task's run folder was started for (`task.json` in it): a rerun continues the folder
/// only for the same seed and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TaskIdentity {
    seed: u64,
    settings: Settings,
}

const TASK_FILE: &str = "task.json";

/// One task of a reproduction or a sweep: one seed under one set of settings. It writes only its
/// run folder and, once done, its summary (atomically); it shares no file and no lock with other
/// tasks, so a job array runs any number at once. Rerun after a kill, a stop (Ctrl-C, SIGTERM)
/// or a scheduler's requeue, it continues where it stopped (see [`open_task`]) and ends with the
/// numbers an uninterrupted task gets. A task whose summary exists is not run again.
pub fn run_task(settings: &Settings, seed: u64, device: DeviceChoice, place: &TaskPlace, control: &Control) -> Result<()> {
    if place.summary.exists() {
        eprintln!("seed {seed}: {} exists, skipping (delete it to run the seed again)", place.summary.display());
        return Ok(());
    }
    let summary = match run_seed(settings, seed, device, &place.run, control) {
        Err(Error::Stopped) => {
            let kept = crate::run::RunReader::open(&place.run).map(|r| r.records.len()).unwrap_or(0);
            eprintln!("stopped: {} keeps {kept} complete epochs; run the same command again to continue this task", place.run.display());
            return Err(Error::Stopped);
        }
        other => other?,
    };
    if let Some(dir) = place.summary.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    }
    let text = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Other(e.to_string()))?;
    fsio::write_atomic(&place.summary, &text)?;
    eprintln!("seed {seed}: wrote {}", place.summary.display());
    Ok(())
}

/// The session of a task's run folder: a new run, or the one an earlier try of this task left,
/// cut back to what the rerun keeps ([`epochs_to_keep`]): the complete base epochs (the base
/// phase then resumes exactly, momentum included) and the complete fine-tune arms (an arm cut
/// short is run again from its start snapshot, on the same batches). The run's lock is taken
/// first, so a second copy of the same task still running fails at once instead of writing too.
fn open_task(settings: &Settings, exp: &ExperimentConfig, dir: &Path, r: &mut Renderer) -> Result<Session> {
    let seed = exp.train.seed;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    let lock = crate::run::RunLock::acquire(dir, "reproduce task")?;
    let identity = TaskIdentity { seed, settings: settings.clone() };
    let id_path = dir.join(TASK_FILE);
    let started_before = dir.join("events.jsonl").exists();
    if started_before {
        check_task_identity(dir, &id_path, &identity)?;
        let records = crate::run::RunReader::open(dir)?.records;
        let keep = epochs_to_keep(&records, settings);
        crate::run::cut_back(dir, keep, &lock)?;
        if keep > 0 {
            lock.park();
            r.handle(&Event::Info(format!("continuing {} from its first {keep} epochs (of {} before the stop)", dir.display(), records.len())));
            return super::commands::resume_session(dir, Some(exp.train.device), Some(keep.min(settings.epochs)));
        }
        // Not one complete epoch: start the folder again.
        for name in ["events.jsonl", "config.json", "per_sample_loss.npy", "per_sample_correct.npy"] {
            let p = dir.join(name);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, "remove", e))?;
            }
        }
    } else {
        let text = serde_json::to_vec_pretty(&identity).map_err(|e| Error::Other(e.to_string()))?;
        fsio::write_atomic(&id_path, &text)?;
    }
    lock.park();
    open_session(exp.clone(), Some(dir), r)
}

/// Refuses to continue a run folder started for another task (or by an unleash too old to say).
fn check_task_identity(dir: &Path, id_path: &Path, identity: &TaskIdentity) -> Result<()> {
    let Ok(bytes) = std::fs::read(id_path) else {
        return Err(Error::run(dir, format!("already holds a run but no {TASK_FILE} saying which task made it (an interrupted seed of an older unleash?); remove the folder or choose another --out")));
    };
    let theirs: TaskIdentity = serde_json::from_slice(&bytes).map_err(|e| Error::bad_data(id_path, format!("not a task description: {e}")))?;
    if &theirs != identity {
        return Err(Error::run(dir, format!("was started for another task (seed {} or other settings, see {}); remove the folder or choose another --out", theirs.seed, id_path.display())));
    }
    Ok(())
}

/// How many leading epochs of an interrupted task's run a rerun keeps: every complete base epoch
/// while the base phase is unfinished; after it, the base phase and each fine-tune arm that ran
/// all its epochs from the final base snapshot (a shorter last arm is run again from its start).
fn epochs_to_keep(records: &[EpochRecord], settings: &Settings) -> usize {
    let base = records.iter().take_while(|r| r.phase == Phase::Base).count();
    if base < settings.epochs {
        return base;
    }
    let arms = 4 + usize::from(settings.official_gamma);
    let complete = phase_blocks(&records[base..])
        .iter()
        .take(arms)
        .take_while(|(_, from, block)| *from == settings.epochs && block.len() == settings.finetune_epochs)
        .count();
    base + complete * settings.finetune_epochs
}

/// Base training and the four (five) fine-tunes of one seed, in its run folder `dir`, continuing
/// what an earlier try of the task left there (see [`open_task`]).
fn run_seed(settings: &Settings, seed: u64, device: DeviceChoice, dir: &Path, control: &Control) -> Result<SeedSummary> {
    let started = std::time::Instant::now();
    let mut r = Renderer::new(false);
    r.handle(&Event::Info(format!("=== seed {seed} ===")));
    let data = settings.data_config();
    let exp = ExperimentConfig { data, train: TrainConfig { epochs: settings.epochs, lr: settings.lr, seed, device, ..TrainConfig::default() }, detectors: Default::default() };
    let mut s = open_task(settings, &exp, dir, &mut r)?;
    // Compute an earlier try spent on the epochs kept, for the summary's wall time.
    let earlier_seconds: f64 = s.records.iter().map(|r| r.seconds).sum();
    let run = |s: &mut Session, spec: &PhaseSpec, r: &mut Renderer| s.run_phase(spec, control, &mut |e| r.handle(&e));
    let base = PhaseSpec::base(&exp.train);
    match s.records.len() {
        0 => run(&mut s, &base, &mut r)?,
        done if done < settings.epochs => s.resume_phase(&base, control, &mut |e| r.handle(&e))?,
        _ => {}
    }
    let final_epoch = settings.epochs;
    let best = best_by_validation(&s.records, Score::Energy, Some(Phase::Base)).unwrap_or(final_epoch);
    // gamma from the mask ratio, on the final snapshot (read back, so that a continued task
    // starts from the same weights as an uninterrupted one: snapshots hold them exactly).
    let kind = MaskKind::parse(&settings.gamma_mask)?;
    let model = s.snapshot_model(final_epoch)?;
    let mut nop = |_, _| Ok(());
    let masked = super::commands::mask_probe(&s, model, final_epoch).gamma(settings.um_mask_ratio, kind, seed, &s.sets, &mut nop)?;
    let gamma_mask = masked.gamma;
    // The official estimator's gamma, on the same final snapshot.
    let gamma_official = if settings.official_gamma {
        let model = s.snapshot_model(final_epoch)?;
        let g = super::commands::mask_probe(&s, model, final_epoch).gamma(OFFICIAL_GAMMA_RATIO, MaskKind::Random, seed, &s.sets, &mut nop)?.gamma;
        r.handle(&Event::Info(format!("gamma: {g:.4} from the official estimator (random mask, ratio {OFFICIAL_GAMMA_RATIO})")));
        Some(g)
    } else {
        None
    };
    // The validation-chosen gamma: the mean training loss at the best-by-validation epoch.
    let gamma_val = s.records[best - 1].train_eval_loss;
    r.handle(&Event::Info(format!(
        "gamma: {gamma_mask:.4} from {} mask ratio {} ({} atypical); {gamma_val:.4} from the best-by-validation epoch {best}",
        kind.key(),
        settings.um_mask_ratio,
        masked.samples.len()
    )));
    let ft = |kind: Finetune, gamma| kind.phase_spec(gamma, settings.umap_ratio, settings.finetune_epochs, settings.finetune_lr, final_epoch);
    let mut arms = vec![ft(Finetune::Control, 0.0), ft(Finetune::Um, gamma_mask), ft(Finetune::Um, gamma_val), ft(Finetune::Umap, gamma_mask)];
    arms.extend(gamma_official.map(|g| ft(Finetune::Um, g)));
    let done = check_arms_done(dir, &s.records[final_epoch..], &arms)?;
    for spec in &arms[done..] {
        run(&mut s, spec, &mut r)?;
    }
    r.finish();
    let energy = |m: &crate::run::ScoreMetrics| m.get(&Score::Energy).map_or(f64::NAN, |m| m.auroc);
    Ok(SeedSummary {
        seed,
        settings: settings.clone(),
        device: s.device.description.clone(),
        unleash_version: env!("CARGO_PKG_VERSION").to_string(),
        wall_seconds: earlier_seconds + started.elapsed().as_secs_f64(),
        gamma_mask,
        atypical: masked.samples.len(),
        gamma_val,
        best_base_epoch: best,
        gamma_official,
        stages: stages_from_records(&s.records)?,
        curve: s
            .records
            .iter()
            .map(|r| CurvePoint {
                epoch: r.epoch,
                phase: r.phase,
                phase_epoch: r.phase_epoch,
                from_epoch: r.from_epoch,
                gamma: r.gamma,
                test_acc: r.test_acc,
                energy_auroc: energy(&r.ood_mean),
                val_energy_auroc: energy(&r.val),
            })
            .collect(),
    })
}

/// How many fine-tune arms of a continued task are done: the records after the base phase, which
/// [`open_task`] cut back to whole arms, must be the first arms of this task, gamma for gamma
/// (the gammas are recomputed from the same snapshot, so they match unless the folder is
/// another task's).
fn check_arms_done(dir: &Path, after_base: &[EpochRecord], arms: &[PhaseSpec]) -> Result<usize> {
    let blocks = phase_blocks(after_base);
    for (k, (_, _, block)) in blocks.iter().enumerate() {
        let first = block[0];
        let matches = arms.get(k).is_some_and(|a| a.phase == first.phase && a.objective.gamma() == first.gamma && a.epochs == block.len());
        if !matches {
            return Err(Error::run(dir, format!("its fine-tune at epoch {} ({}, gamma {:?}) is not this task's arm {}; remove the folder to run the task again", first.epoch, first.phase.name(), first.gamma, k + 1)));
        }
    }
    Ok(blocks.len())
}

/// The markdown + JSON report and the AUROC-vs-epoch plot, from the seeds' summaries.
pub fn write_report(out: &Path, all: &[SeedSummary]) -> Result<()> {
    let md = markdown_report(all);
    fsio::write_atomic(&out.join("reproduction.md"), md.as_bytes())?;
    let json = serde_json::json!({
        "settings": all[0].settings,
        "wall_seconds": all.iter().map(|s| s.wall_seconds).sum::<f64>(),
        "seeds": all.iter().map(|s| serde_json::json!({"seed": s.seed, "gamma_mask": s.gamma_mask, "gamma_val": s.gamma_val, "best_base_epoch": s.best_base_epoch, "stages": s.stages})).collect::<Vec<_>>(),
        "paired": paired_differences(all),
    });
    fsio::write_atomic(&out.join("reproduction.json"), serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())?;
    let png = out.join("auroc_vs_epoch.png");
    let labels = ["base training", "CE control", "UM (gamma from mask)", "UM (val-chosen gamma)", "UMAP", "UM (official gamma)"];
    let runs: Vec<(u64, Vec<EpochRecord>)> = all.iter().map(|s| (s.seed, curve_records(&s.curve))).collect();
    crate::plot::auroc_vs_epoch(&runs, Some(&labels), &png)
}

/// Prints the report [`write_report`] wrote, and where.
fn print_report(out: &Path, all: &[SeedSummary]) {
    println!("{}", markdown_report(all));
    println!("wrote {}, {}, {}", out.join("reproduction.md").display(), out.join("reproduction.json").display(), out.join("auroc_vs_epoch.png").display());
}

/// Epoch records holding only what the plot reads (phase layout, mean test-OOD Energy AUROC).
fn curve_records(curve: &[CurvePoint]) -> Vec<EpochRecord> {
    let only_auroc = |a: f64| BTreeMap::from([(Score::Energy, Metrics { auroc: a, fpr95: f64::NAN, aupr_in: f64::NAN, aupr_out: f64::NAN })]);
    curve
        .iter()
        .map(|c| EpochRecord {
            epoch: c.epoch,
            phase: c.phase,
            phase_epoch: c.phase_epoch,
            from_epoch: c.from_epoch,
            gamma: c.gamma,
            lr_end: f64::NAN,
            train_loss: f64::NAN,
            train_acc: f64::NAN,
            train_eval_loss: f64::NAN,
            test_loss: f64::NAN,
            test_acc: c.test_acc,
            val_name: String::new(),
            val_id_name: String::new(),
            val: only_auroc(c.val_energy_auroc),
            ood: BTreeMap::new(),
            ood_mean: only_auroc(c.energy_auroc),
            seconds: 0.0,
            samples_per_sec: 0.0,
            detector_problems: Vec::new(),
            imported_from: None,
        })
        .collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%), from the
/// standard table; between tabulated df the next smaller df's (wider) value is used.
pub fn t_975(df: usize) -> Option<f64> {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110,
        2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => None,
        1..=30 => Some(TABLE[df - 1]),
        31..=39 => Some(2.042),
        40..=59 => Some(2.021),
        60..=119 => Some(2.000),
        _ => Some(1.980),
    }
}

/// Mean, sd and the 95% t interval of the mean of paired differences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedStat {
    pub n: usize,
    pub mean: f64,
    pub sd: f64,
    /// None with fewer than two seeds.
    pub ci95: Option<(f64, f64)>,
}

pub fn paired_stat(diffs: &[f64]) -> PairedStat {
    let (mean, sd) = mean_sd(diffs);
    let ci95 = t_975(diffs.len().saturating_sub(1)).map(|t| {
        let half = t * sd / (diffs.len() as f64).sqrt();
        (mean - half, mean + half)
    });
    PairedStat { n: diffs.len(), mean, sd, ci95 }
}

/// The paired comparisons: (label, stage index of A, stage index of B) for A - B, per seed.
pub const COMPARISONS: [(&str, usize, usize); 9] = [
    ("UM (mask gamma) - control, last epoch", 4, 2),
    ("UM (mask gamma) - control, best (val)", 5, 3),
    ("UM (val gamma) - control, last epoch", 6, 2),
    ("UM (val gamma) - control, best (val)", 7, 3),
    ("UMAP - control, last epoch", 8, 2),
    ("UMAP - control, best (val)", 9, 3),
    ("best epoch (val) - final epoch, base", 0, 1),
    // With --official-gamma only.
    ("UM (official gamma) - control, last epoch", 10, 2),
    ("UM (official gamma) - control, best (val)", 11, 3),
];

/// Per comparison and score: the paired AUROC and FPR95 differences (mean over test OOD sets).
#[derive(Debug, Clone, Serialize)]
pub struct PairedRow {
    pub comparison: String,
    pub score: String,
    pub auroc: PairedStat,
    pub fpr95: PairedStat,
}

pub fn paired_differences(all: &[SeedSummary]) -> Vec<PairedRow> {
    let mut rows = Vec::new();
    for score in reported_scores(all) {
        for (label, a, b) in COMPARISONS {
            // An arm the seeds did not run (the official gamma's, without --official-gamma).
            if all.iter().any(|s| s.stages.len() <= a.max(b)) {
                continue;
            }
            let mean_of = |st: &StageResult| st.metrics.get(score.name()).and_then(|m| m.get("mean")).copied().unwrap_or((f64::NAN, f64::NAN));
            let diffs: Vec<(f64, f64)> = all
                .iter()
                .map(|s| {
                    let (x, y) = (mean_of(&s.stages[a]), mean_of(&s.stages[b]));
                    (x.0 - y.0, x.1 - y.1)
                })
                .collect();
            rows.push(PairedRow {
                comparison: label.to_string(),
                score: score.name().to_string(),
                auroc: paired_stat(&diffs.iter().map(|d| d.0).collect::<Vec<_>>()),
                fpr95: paired_stat(&diffs.iter().map(|d| d.1).collect::<Vec<_>>()),
            });
        }
    }
    rows
}

/// Energy, MSP, MaxLogit, then every other score that every seed's every stage has.
fn reported_scores(all: &[SeedSummary]) -> Vec<Score> {
    let first = [Score::Energy, Score::Msp, Score::MaxLogit];
    let rest = Score::ALL.into_iter().filter(|s| !first.contains(s));
    first
        .into_iter()
        .chain(rest)
        .filter(|s| all.iter().all(|seed| seed.stages.iter().all(|st| st.metrics.get(s.name()).is_some_and(|m| m.contains_key("mean")))))
        .collect()
}

fn fmt_paired(p: &PairedStat) -> String {
    let ci = p.ci95.map_or("n/a".to_string(), |(lo, hi)| format!("[{:+.1}, {:+.1}]", lo * 100.0, hi * 100.0));
    format!("{:+.1} ± {:.1} {ci}", p.mean * 100.0, p.sd * 100.0)
}

pub fn markdown_report(all: &[SeedSummary]) -> String {
    let st = &all[0].settings;
    let seeds: Vec<String> = all.iter().map(|s| s.seed.to_string()).collect();
    let sets: Vec<String> = all[0].stages[0].metrics["Energy"].keys().filter(|k| *k != "mean").cloned().collect();
    let wall: f64 = all.iter().map(|s| s.wall_seconds).sum();
    let mut md = format!(
        "Reproduction on {} (SmallCNN, {} base epochs at lr {}, fine-tunes of {} epochs at lr {} from the final snapshot, all arms on the same batches; {} seeds: {}; {} of compute summed over seeds).\n\
         Test OOD sets: {} (reported only). The best epoch and the validation gamma are chosen on the ID validation split ({}% of the training set, held out) against the validation OOD set `{}`, of no test set's family. \
         Mask gamma: {} mask at ratio {}. UMAP at r {}.{}\n\
         AUROC and FPR95 x100, ID positive; MSP stored as log-MSP (same ranking).\n\n",
        st.data_name(),
        st.epochs, st.lr, st.finetune_epochs, st.finetune_lr, all.len(), seeds.join(", "), crate::cli::format_secs(wall),
        sets.join(", "), st.id_val_fraction * 100.0, st.val_ood, st.gamma_mask, st.um_mask_ratio, st.umap_ratio,
        if st.official_gamma { format!(" Official gamma: random mask at ratio {OFFICIAL_GAMMA_RATIO} (the official `estimate_loss`: prune_rate 0.965, random scores).") } else { String::new() }
    );
    md.push_str("**Paired differences over seeds** (mean over the test OOD sets; mean ± sd [95% t interval of the mean], x100; for FPR95 lower is better)\n\n");
    md.push_str("| comparison | score | AUROC difference | FPR95 difference |\n|---|---|---|---|\n");
    for row in paired_differences(all) {
        md.push_str(&format!("| {} | {} | {} | {} |\n", row.comparison, row.score, fmt_paired(&row.auroc), fmt_paired(&row.fpr95)));
    }
    md.push_str(&format!(
        "\ngamma per seed: mask {}; validation-chosen {}{}.\n\n",
        all.iter().map(|s| format!("{:.3}", s.gamma_mask)).collect::<Vec<_>>().join(", "),
        all.iter().map(|s| format!("{:.3} (epoch {})", s.gamma_val, s.best_base_epoch)).collect::<Vec<_>>().join(", "),
        if st.official_gamma { format!("; official {}", all.iter().map(|s| s.gamma_official.map_or("-".into(), |g| format!("{g:.3}"))).collect::<Vec<_>>().join(", ")) } else { String::new() }
    ));
    for score in reported_scores(all) {
        md.push_str(&format!("**{}** (mean ± sd over seeds)\n\n| stage | ID acc | mean AUROC | mean FPR95 |", score.name()));
        for s in &sets {
            md.push_str(&format!(" {s} AUROC | {s} FPR95 |"));
        }
        md.push_str("\n|---|---|---|---|");
        md.push_str(&"---|---|".repeat(sets.len()));
        md.push('\n');
        for (k, stage) in STAGES.iter().enumerate().take(all[0].stages.len()) {
            let pick = |f: &dyn Fn(&StageResult) -> f64| mean_sd(&all.iter().map(|s| f(&s.stages[k])).collect::<Vec<_>>());
            let fmt = |(m, sd): (f64, f64)| format!("{:.1} ± {:.1}", m * 100.0, sd * 100.0);
            md.push_str(&format!("| {stage} | {} |", fmt(pick(&|r| r.id_acc))));
            for set in std::iter::once("mean".to_string()).chain(sets.iter().cloned()) {
                let auroc = pick(&|r| r.metrics[score.name()].get(&set).map_or(f64::NAN, |v| v.0));
                let fpr = pick(&|r| r.metrics[score.name()].get(&set).map_or(f64::NAN, |v| v.1));
                md.push_str(&format!(" {} | {} |", fmt(auroc), fmt(fpr)));
            }
            md.push('\n');
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_take_lists_and_inclusive_ranges() {
        assert_eq!(parse_seeds("0..9").unwrap(), (0..=9).collect::<Vec<u64>>());
        assert_eq!(parse_seeds("3").unwrap(), vec![3]);
        assert_eq!(parse_seeds("0,1, 5..7,1").unwrap(), vec![0, 1, 5, 6, 7]);
        assert_eq!(parse_seeds("2..=3").unwrap(), vec![2, 3]);
        for bad in ["", "a", "5..2", "1..x", "-1"] {
            assert!(parse_seeds(bad).unwrap_err().to_string().contains("seeds"), "{bad}");
        }
    }

    #[test]
    fn paired_stat_is_the_t_interval() {
        // Differences 1, 2, 3: mean 2, sd 1, t(2) = 4.303, half width 4.303 / sqrt(3).
        let p = paired_stat(&[1.0, 2.0, 3.0]);
        assert_eq!((p.n, p.mean, p.sd), (3, 2.0, 1.0));
        let (lo, hi) = p.ci95.unwrap();
        let half = 4.303 / 3f64.sqrt();
        assert!((lo - (2.0 - half)).abs() < 1e-12 && (hi - (2.0 + half)).abs() < 1e-12);
        assert_eq!(t_975(9), Some(2.262));
        assert_eq!(paired_stat(&[0.5]).ci95, None);
    }

    fn stage(name: &str, auroc: f64, fpr: f64) -> StageResult {
        let per = BTreeMap::from([("mean".to_string(), (auroc, fpr)), ("mnist".to_string(), (auroc, fpr))]);
        let metrics = Score::ALL.iter().map(|s| (s.name().to_string(), per.clone())).collect();
        StageResult { stage: name.into(), epoch: 1, gamma: None, id_acc: 0.9, metrics }
    }

    #[test]
    fn paired_differences_pair_within_a_seed() {
        // Seed k: control AUROC 0.80 + k/10 (last) and UM 0.01 above it; across seeds the arms
        // vary a lot, within a seed the difference is always +0.01.
        let summary = |seed: u64| {
            let base = 0.8 + seed as f64 / 10.0;
            let mut stages: Vec<StageResult> = STAGES.iter().take(10).map(|s| stage(s, base, 0.5)).collect();
            stages[4] = stage(STAGES[4], base + 0.01, 0.4);
            SeedSummary {
                seed,
                settings: Settings::of(&ReproduceArgs { seeds: String::new(), epochs: 1, lr: 0.05, finetune_epochs: 1, finetune_lr: 0.05, um_mask_ratio: 0.7, gamma_mask: "magnitude".into(), umap_ratio: 0.2, device: "cpu".into(), train_limit: None, config: None, official_gamma: false, out: PathBuf::new(), summaries: PathBuf::new(), report_only: true, task_index: None, no_report: false }).unwrap(),
                device: "cpu".into(),
                unleash_version: String::new(),
                wall_seconds: 1.0,
                gamma_mask: 0.2,
                atypical: 1,
                gamma_val: 0.3,
                best_base_epoch: 1,
                gamma_official: None,
                stages,
                curve: Vec::new(),
            }
        };
        let all: Vec<SeedSummary> = (0..3).map(summary).collect();
        let rows = paired_differences(&all);
        let um = rows.iter().find(|r| r.score == "Energy" && r.comparison.starts_with("UM (mask gamma) - control, last")).unwrap();
        assert!((um.auroc.mean - 0.01).abs() < 1e-12 && um.auroc.sd < 1e-12, "{um:?}");
        assert!((um.fpr95.mean + 0.1).abs() < 1e-12);
        let umap = rows.iter().find(|r| r.score == "MSP" && r.comparison.starts_with("UMAP - control, last")).unwrap();
        assert_eq!(umap.auroc.mean, 0.0);
        assert_eq!(rows.len(), Score::ALL.len() * (COMPARISONS.len() - 2), "no official-gamma arm without its stages");
        // A score one seed lacks (a summary from before the detectors, ODIN off) is not paired.
        let mut mixed = all.clone();
        mixed[1].stages[2].metrics.remove("KNN");
        let rows = paired_differences(&mixed);
        assert!(rows.iter().all(|r| r.score != "KNN"));
        assert_eq!(rows.len(), (Score::ALL.len() - 1) * (COMPARISONS.len() - 2));
        assert_eq!(rows[0].score, "Energy", "Energy first");
    }
}
