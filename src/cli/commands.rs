//! The headless jobs behind the CLI subcommands. The GUI's worker calls the same engine functions.

use crate::cli::{metrics_table, Renderer};
use crate::config::{DeviceChoice, ExperimentConfig};
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::ood::{metrics, Score};
use crate::run::{Phase, RunReader};
use crate::unleash::GammaSource;
use crate::train::{Finetune, PhaseSpec, Session};
use crate::unleash::{atypical, MaskKind};
use crate::fsio;
use clap::Args;
use std::io::Write;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opens a run to read it, printing any damage warnings (the run is read up to the damage).
pub fn open_run(run: &Path) -> Result<RunReader> {
    let r = RunReader::open(run)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(r)
}

/// Reopens a run to continue it (see [`Session::resume`]), printing what the user should know of
/// its data (skipped stray files, a run too old to check its data against).
pub fn resume_session(run: &Path, device: Option<DeviceChoice>, epoch: Option<usize>) -> Result<Session> {
    let s = Session::resume(run, device, epoch)?;
    for w in &s.data.warnings {
        eprintln!("{w}");
    }
    Ok(s)
}

/// The experiment a run folder was made with.
pub fn run_experiment(run: &Path) -> Result<ExperimentConfig> {
    open_run(run)?.experiment()
}

fn default_out(exp: &ExperimentConfig) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    PathBuf::from("runs").join(format!("{}-seed{}-{secs}", exp.train.model.key(), exp.train.seed))
}

/// Opens a session (see [`Session::open`]), reporting its device and data.
pub fn open_session(exp: ExperimentConfig, out: Option<&Path>, r: &mut Renderer) -> Result<Session> {
    let s = Session::open(exp, out)?;
    let data = &s.data;
    r.handle(&Event::Info(format!("device: {}", s.device.description)));
    r.handle(&Event::Info(format!(
        "data: {} training / {} test samples ({}, {} classes); validation: {} ({} samples) vs {}; test OOD: {}",
        data.train.len(),
        data.test.len(),
        data.train.shape,
        data.train.num_classes,
        data.validation_id_name(),
        data.validation_id().len(),
        data.val_ood.name,
        data.ood.iter().map(|d| format!("{} ({})", d.name, d.len())).collect::<Vec<_>>().join(", ")
    )));
    for w in &data.warnings {
        r.handle(&Event::Info(w.clone()));
    }
    Ok(s)
}

/// A stop control for a CLI job: Ctrl-C requests the stop (see [`Control::stop_on_ctrl_c`]).
pub fn ctrl_c_control() -> Arc<Control> {
    let control = Control::new();
    #[cfg(unix)]
    if let Err(e) = control.stop_on_ctrl_c() {
        eprintln!("warning: Ctrl-C will end the process at once (cannot watch for it: {e})");
    }
    control
}

/// Takes the lock of a run folder for a CLI job before anything slow, so that a second writer
/// fails at once; the writer the job makes later picks it up.
fn lock_early(dir: &Path, job: &str) -> Result<()> {
    if dir.is_dir() {
        crate::run::RunLock::acquire(dir, job)?.park();
    }
    Ok(())
}

/// What the CLI says when Ctrl-C stopped a job: what the run keeps and how to go on.
fn report_stop(dir: &Path, resumable: bool) {
    let kept = RunReader::open(dir).map(|r| r.records.len()).unwrap_or(0);
    let keeps = if kept == 0 { "no complete epoch".to_string() } else { format!("epochs 1 to {kept}") };
    eprintln!("stopped: {} keeps {keeps}", dir.display());
    if resumable && kept > 0 {
        eprintln!("continue with: unleash train --resume {}", dir.display());
    }
}

/// Runs a base phase (fresh or resumed), printing JSON lines and the stop message as asked.
fn run_base(s: &mut Session, spec: &PhaseSpec, resume: bool, json: bool, r: &mut Renderer) -> Result<()> {
    let control = ctrl_c_control();
    let mut sink = |e: Event| {
        if json {
            if let Event::EpochDone { record, .. } = &e {
                println!("{}", serde_json::to_string(record).unwrap_or_default());
            }
        }
        r.handle(&e)
    };
    let result = if resume { s.resume_phase(spec, &control, &mut sink) } else { s.run_phase(spec, &control, &mut sink) };
    r.finish();
    if matches!(result, Err(Error::Stopped)) {
        if let Some(w) = &s.writer {
            report_stop(&w.dir, true);
        }
    }
    result
}

/// `unleash train`: returns the run folder.
pub fn train(exp: ExperimentConfig, out: Option<PathBuf>, json: bool) -> Result<PathBuf> {
    let mut r = Renderer::new(false);
    let out = out.unwrap_or_else(|| default_out(&exp));
    lock_early(&out, "train")?;
    let mut s = open_session(exp.clone(), Some(&out), &mut r)?;
    r.handle(&Event::Info(format!("run folder: {}", out.display())));
    run_base(&mut s, &PhaseSpec::base(&exp.train), false, json, &mut r)?;
    print_summary(&s, &mut r);
    Ok(out)
}

/// `unleash train --resume DIR`: continues an interrupted base phase from its last complete epoch
/// to the epoch count in its config, with the same numbers as an uninterrupted run.
pub fn resume_training(dir: &Path, device: Option<DeviceChoice>, json: bool) -> Result<PathBuf> {
    lock_early(dir, "train --resume")?;
    let mut r = Renderer::new(false);
    let mut s = resume_session(dir, device, None)?;
    let done = s.records.len();
    r.handle(&Event::Info(format!("device: {}; resuming {} after epoch {done} of {}", s.device.description, dir.display(), s.config.train.epochs)));
    let spec = PhaseSpec::base(&s.config.train);
    run_base(&mut s, &spec, true, json, &mut r)?;
    print_summary(&s, &mut r);
    Ok(dir.to_path_buf())
}

/// `unleash repair`: cuts a damaged events.jsonl back to its good prefix, keeping a backup.
pub fn repair(dir: &Path) -> Result<()> {
    match crate::run::repair_events(dir)? {
        crate::run::Repair::Sound { epochs } => println!("{}: events.jsonl is sound ({epochs} complete epochs); nothing to repair", dir.display()),
        crate::run::Repair::Cut { epochs, backup, warnings } => {
            for w in warnings {
                println!("found: {w}");
            }
            println!("{}: events.jsonl now holds epochs 1 to {epochs}; the original is kept as {}", dir.display(), backup.display());
        }
    }
    Ok(())
}

fn print_summary(s: &Session, r: &mut Renderer) {
    if let Some(mib) = crate::cli::peak_rss_mib() {
        r.handle(&Event::Info(format!("peak memory (resident): {mib:.0} MiB")));
    }
    let Some(last) = s.records.last() else { return };
    let best = crate::run::best_by_validation(&s.records, Score::Energy, None);
    let mut line = format!("final epoch {}: ID test acc {:.4}", last.epoch, last.test_acc);
    if let Some(b) = best {
        let rec = &s.records[b - 1];
        line.push_str(&format!(
            "; best by validation (Energy AUROC on {}): epoch {b}, test acc {:.4}, mean test-OOD Energy AUROC {:.4} (final {:.4})",
            rec.val_name,
            rec.test_acc,
            rec.ood_mean.get(&Score::Energy).map_or(f64::NAN, |m| m.auroc),
            last.ood_mean.get(&Score::Energy).map_or(f64::NAN, |m| m.auroc)
        ));
    }
    r.handle(&Event::Info(line));
    r.handle(&Event::Info(metrics_table(&last.ood, Some(&last.ood_mean))));
}

/// `unleash eval`.
pub fn eval(mut exp: ExperimentConfig, model: &Path, device_choice: Option<DeviceChoice>, json: bool) -> Result<()> {
    let mut r = Renderer::new(json);
    if let Some(d) = device_choice {
        exp.train.device = d;
    }
    let mut s = open_session(exp.clone(), None, &mut r)?;
    let net = crate::model::Net::load(exp.train.model, s.data.train.shape, s.classes, model, s.inference_device())?;
    s.model = net.train_on(&s.autodiff_device());
    let ev = s.evaluate(0, &Control::new(), &mut |e| r.handle(&e))?;
    r.finish();
    let m = ev.scored.metrics(&s.sets)?;
    let (rows, val, mean) = (m.ood, m.val, m.ood_mean);
    let (test, problems) = (&ev.scored.test, &ev.scored.problems);
    if json {
        let out = serde_json::json!({
            "model": model, "id_test_accuracy": test.accuracy, "id_test_loss": test.mean_loss,
            "validation": {"set": s.sets.val.name, "id_side": s.data.validation_id_name(), "metrics": val}, "ood": rows, "ood_mean": mean,
            "detector_problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("model {}: ID test accuracy {:.4} (loss {:.4})", model.display(), test.accuracy, test.mean_loss);
        for problem in problems {
            println!("warning: {problem}");
        }
        println!("VALIDATION OOD (selection only):");
        print!("{}", metrics_table(&BTreeMap::from([(s.sets.val.name.clone(), val)]), None));
        println!("TEST OOD (reported):");
        print!("{}", metrics_table(&rows, Some(&mean)));
    }
    Ok(())
}

/// Reads one column of numbers from a text/CSV file (blank lines and a non-numeric header skipped).
pub fn read_scores(path: &Path, column: usize) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let field = line.split([',', '\t', ';']).nth(column).map(str::trim);
        match field.map(str::parse::<f32>) {
            Some(Ok(v)) => out.push(v),
            // A header line is fine; anything else later is a broken file.
            Some(Err(_)) if out.is_empty() && i == 0 => continue,
            Some(Err(_)) => return Err(Error::bad_data(path, format!("line {}: '{}' is not a number", i + 1, field.unwrap_or("")))),
            None => return Err(Error::bad_data(path, format!("line {} has no column {column}", i + 1))),
        }
    }
    if out.is_empty() {
        return Err(Error::bad_data(path, "holds no scores"));
    }
    Ok(out)
}

/// `unleash metrics`.
pub fn metrics(id: &Path, ood: &Path, column: usize, json: bool) -> Result<()> {
    let is_npy = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy(id) && is_npy(ood) {
        return metrics_of_score_arrays(id, ood, json);
    }
    let a = read_scores(id, column)?;
    let b = read_scores(ood, column)?;
    let m = metrics::compute(&a, &b)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"id_count": a.len(), "ood_count": b.len(), "auroc": m.auroc, "fpr95": m.fpr95, "aupr_in": m.aupr_in, "aupr_out": m.aupr_out})).unwrap_or_default());
    } else {
        println!("{} ID scores, {} OOD scores (ID positive, higher = more ID)", a.len(), b.len());
        println!("AUROC    {:.6}\nFPR95    {:.6}\nAUPR-In  {:.6}\nAUPR-Out {:.6}", m.auroc, m.fpr95, m.aupr_in, m.aupr_out);
    }
    Ok(())
}

/// `unleash metrics` of two score arrays of a run (`epochs/N/scores_<set>.npy`): every score both
/// hold, in one table.
fn metrics_of_score_arrays(id: &Path, ood: &Path, json: bool) -> Result<()> {
    let (a, b) = (crate::run::read_score_array(id)?, crate::run::read_score_array(ood)?);
    let m = crate::eval::score_metrics(&a, &b)?;
    let count = |s: &BTreeMap<Score, Vec<f32>>| s.values().next().map_or(0, Vec::len);
    if json {
        let by_key: BTreeMap<&str, _> = m.iter().map(|(s, v)| (s.key(), v)).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"id_count": count(&a), "ood_count": count(&b), "scores": by_key})).unwrap_or_default());
    } else {
        println!("{} ID scores, {} OOD scores (ID positive, higher = more ID)", count(&a), count(&b));
        print!("{}", metrics_table(&BTreeMap::from([(ood.file_stem().map_or(String::new(), |s| s.to_string_lossy().trim_start_matches("scores_").to_string()), m)]), None));
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct MaskArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Snapshot epoch (default: the last base epoch, as in the app and for um/umap).
    #[arg(long)]
    pub epoch: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.05,0.1,0.3,0.5,0.7", allow_negative_numbers = true)]
    pub ratios: Vec<f64>,
    #[arg(long, default_value = "magnitude")]
    pub mask: String,
    /// Seed of the random mask.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub device: Option<String>,
    /// Folder for the atypical CSVs (default: <run>/mask).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `unleash mask`: per ratio, gamma, the atypical set (CSV), and the masked model's ID accuracy and
/// OOD detection next to the unmasked model's; then the two other gamma choices.
pub fn mask(a: MaskArgs) -> Result<()> {
    let kind = MaskKind::parse(&a.mask)?;
    for &r in &a.ratios {
        crate::config::check_mask_ratio(r)?;
    }
    let device = a.device.as_deref().map(DeviceChoice::parse).transpose()?;
    // Its CSVs go into the run folder unless --out says otherwise: then it writes the run.
    let _lock = if a.out.is_none() && a.run.is_dir() { Some(crate::run::RunLock::acquire(&a.run, "mask")?) } else { None };
    let reader = open_run(&a.run)?;
    let epoch = match a.epoch {
        Some(e) => e,
        None => crate::run::last_base_epoch(&reader.records).ok_or_else(|| Error::run(&a.run, "has no base epochs to mask"))?,
    };
    let s = resume_session(&a.run, device, Some(epoch))?;
    let mut probe = mask_probe(&s, s.inference_model(), epoch);
    let mut r = Renderer::new(a.json);
    let mut progress = |d: usize, t: usize| {
        r.handle(&Event::Evaluating { epoch, set: "mask".into(), done: d, total: t });
        Ok(())
    };
    // The detection first: without records it is one pass that gives the training pass too.
    let full_detection = probe.full_detection(&s.sets, &mut progress)?;
    let full = probe.full_pass(&s.sets, &mut progress)?;
    let out_dir = a.out.clone().unwrap_or_else(|| a.run.join("mask"));
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, "create", e))?;
    let mut rows = Vec::new();
    for &ratio in &a.ratios {
        let set = probe.answer(ratio, kind, a.seed, &s.sets, &mut progress)?;
        let csv = out_dir.join(format!("atypical_e{epoch}_{}_r{ratio}.csv", kind.key()));
        fsio::write_atomic(&csv, set.to_csv().as_bytes())?;
        rows.push((set, csv));
    }
    r.finish();
    let q_losses = &full.per_sample_loss;
    let quantiles: Vec<(f64, f64)> = [0.5, 0.8, 0.9, 0.95, 0.99].iter().filter_map(|&q| atypical::gamma_from_quantile(q_losses, q).map(|g| (q, g))).collect();
    let earlier: Vec<(usize, f64)> = s.records.iter().take(epoch).map(|r| (r.epoch, r.train_eval_loss)).collect();
    if a.json {
        let detection_json = |d: &crate::unleash::Detection| serde_json::json!({"val_name": d.val_name, "val": d.val, "ood": d.ood, "ood_mean": d.ood_mean});
        let mut full_json = serde_json::json!({"train_loss": full.train_loss, "train_acc": full.train_acc, "test_acc": full.test_acc});
        merge(&mut full_json, detection_json(&full_detection));
        let ratios: Vec<serde_json::Value> = rows
            .iter()
            .map(|(set, csv)| {
                let mut row = serde_json::json!({"ratio": set.ratio, "gamma": set.gamma, "atypical": set.samples.len(), "masked_test_acc": set.masked_test_acc, "masked_train_acc": set.masked_train_acc, "csv": csv});
                if let Some(d) = &set.masked_detection {
                    merge(&mut row, detection_json(d));
                }
                row
            })
            .collect();
        let out = serde_json::json!({
            "run": a.run, "epoch": epoch, "mask": kind.key(),
            "full": full_json,
            "ratios": ratios,
            "gamma_from_quantile": quantiles.iter().map(|(q, g)| serde_json::json!({"q": q, "gamma": g})).collect::<Vec<_>>(),
            "gamma_from_epoch": earlier.iter().map(|(e, g)| serde_json::json!({"epoch": e, "gamma": g})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    let energy = |d: &crate::unleash::Detection| d.mean(Score::Energy).map_or((f64::NAN, f64::NAN), |m| (m.auroc, m.fpr95));
    let (fa, ff) = energy(&full_detection);
    println!("snapshot: epoch {epoch}; full model: train loss {:.5}, train acc {:.4}, test acc {:.4}, mean test-OOD Energy AUROC {fa:.4}, FPR95 {ff:.4}", full.train_loss, full.train_acc, full.test_acc);
    println!("{:>7} {:>10} {:>9} {:>10} {:>14} {:>14}  atypical list", "ratio", "gamma", "atypical", "masked acc", "Energy AUROC", "Energy FPR95");
    for (set, csv) in &rows {
        let (ma, mf) = set.masked_detection.as_ref().map_or((f64::NAN, f64::NAN), energy);
        println!(
            "{:>7.3} {:>10.5} {:>9} {:>10.4} {:>6.4} ({:+.3}) {:>6.4} ({:+.3})  {}",
            set.ratio,
            set.gamma,
            set.samples.len(),
            set.masked_test_acc.unwrap_or(f64::NAN),
            ma,
            ma - fa,
            mf,
            mf - ff,
            csv.display()
        );
    }
    println!("(Energy: mean over the test OOD sets, masked model, its difference to the unmasked one in brackets; --json has every set and score)");
    println!("\nOther ways to pick gamma:");
    println!("  quantile of the final per-sample losses: {}", quantiles.iter().map(|(q, g)| format!("q{q}={g:.4}")).collect::<Vec<_>>().join("  "));
    println!("  mean training loss at an earlier epoch:  {}", earlier.iter().map(|(e, g)| format!("e{e}={g:.4}")).collect::<Vec<_>>().join("  "));
    Ok(())
}

/// The mask explorer's engine on a session's snapshot `epoch` (the session's current model).
/// The mask explorer on snapshot `epoch` of the session (`model` is that snapshot's inference
/// model), with the unmasked figures from the run's records where it has them.
pub fn mask_probe(s: &Session, model: crate::model::Net, epoch: usize) -> crate::unleash::MaskProbe {
    s.mask_probe(model, epoch, Arc::new(crate::unleash::probe::PreviewSets::new(&s.sets, Default::default())))
}

/// Adds `extra`'s fields to the JSON object `into`.
fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(o), serde_json::Value::Object(e)) = (into.as_object_mut(), extra) {
        o.extend(e);
    }
}

#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Start from this epoch's snapshot (default: the last base epoch).
    #[arg(long)]
    pub epoch: Option<usize>,
    /// gamma given directly.
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// gamma = mean training loss of the model masked at this ratio (default 0.7).
    #[arg(long, allow_negative_numbers = true)]
    pub mask_ratio: Option<f64>,
    /// The mask that gives gamma: magnitude (the smallest weights of each layer), or random (a
    /// seeded random fraction of each layer, as the official code's estimate: random scores on
    /// the dense checkpoint, top-k per layer).
    #[arg(long, default_value = "magnitude")]
    pub mask: String,
    /// Seed of the random mask.
    #[arg(long, default_value_t = 0)]
    pub mask_seed: u64,
    /// gamma = this quantile of the start snapshot's per-sample training losses.
    #[arg(long, allow_negative_numbers = true)]
    pub quantile: Option<f64>,
    /// gamma = the mean training loss at this earlier epoch ("best" = best by validation).
    #[arg(long)]
    pub gamma_epoch: Option<String>,
    /// UMAP prune ratio.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub prune_ratio: f64,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long)]
    pub device: Option<String>,
}

/// How gamma is chosen, resolved against a session.
pub fn resolve_gamma(a: &FinetuneArgs, s: &Session, start: usize, r: &mut Renderer) -> Result<f64> {
    let source = match (a.gamma, a.quantile, &a.gamma_epoch) {
        (Some(g), _, _) => GammaSource::Manual(g),
        (None, Some(q), _) => GammaSource::Quantile(q),
        (None, None, Some(e)) if e == "best" => {
            GammaSource::EpochLoss(crate::run::best_by_validation(&s.records[..start], Score::Energy, Some(Phase::Base)).ok_or_else(|| Error::run(&a.run, "no base epochs"))?)
        }
        (None, None, Some(e)) => GammaSource::EpochLoss(e.parse::<usize>().map_err(|_| Error::config("gamma-epoch", format!("'{e}' is not an epoch number or 'best'")))?),
        (None, None, None) => GammaSource::MaskRatio,
    };
    if let Some(from_history) = source.from_history(&s.records, &s.loss_rows, start) {
        let gamma = from_history.map_err(|e| Error::run(&a.run, e))?;
        if let GammaSource::EpochLoss(epoch) = source {
            r.handle(&Event::Info(format!("gamma from epoch {epoch}'s mean training loss: {gamma:.5}")));
        }
        return Ok(gamma);
    }
    let ratio = a.mask_ratio.unwrap_or(0.7);
    let model = s.inference_model();
    let mut progress = |d: usize, t: usize| {
        r.handle(&Event::Evaluating { epoch: start, set: format!("mask {ratio}"), done: d, total: t });
        Ok(())
    };
    let kind = MaskKind::parse(&a.mask)?;
    let set = mask_probe(s, model, start).gamma(ratio, kind, a.mask_seed, &s.sets, &mut progress)?;
    r.handle(&Event::Info(format!("gamma from {} mask ratio {ratio}: {:.5} ({} atypical samples)", kind.key(), set.gamma, set.samples.len())));
    Ok(set.gamma)
}

/// `unleash um|umap|control`.
pub fn finetune(a: FinetuneArgs, kind: Finetune) -> Result<()> {
    let device = a.device.as_deref().map(DeviceChoice::parse).transpose()?;
    // Fail fast on a bad mask name, before the data is loaded.
    MaskKind::parse(&a.mask)?;
    lock_early(&a.run, kind.job())?;
    let reader = open_run(&a.run)?;
    let start = match a.epoch {
        Some(e) => e,
        None => crate::run::last_base_epoch(&reader.records).ok_or_else(|| Error::run(&a.run, "has no base epochs"))?,
    };
    // Fail fast on a bad epoch, before the data is loaded.
    reader.snapshot(start)?;
    let mut s = resume_session(&a.run, device, Some(start))?;
    let mut r = Renderer::new(false);
    r.handle(&Event::Info(format!("device: {}; starting from epoch {start}", s.device.description)));
    let gamma = match kind {
        Finetune::Control => 0.0,
        Finetune::Um | Finetune::Umap => resolve_gamma(&a, &s, start, &mut r)?,
    };
    let spec = kind.phase_spec(gamma, a.prune_ratio, a.epochs, a.lr, start);
    let result = s.run_phase(&spec, &ctrl_c_control(), &mut |e| r.handle(&e));
    r.finish();
    if matches!(result, Err(Error::Stopped)) {
        report_stop(&a.run, false);
    }
    result?;
    print_summary(&s, &mut r);
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[arg(long)]
    pub run: PathBuf,
    /// Snapshot epoch (default: the last for --model; the last base epoch, as for mask and um,
    /// for --atypical and --contact-sheet).
    #[arg(long)]
    pub epoch: Option<usize>,
    /// Model path: writes <path>.bpk and <path>.safetensors.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Report path: writes <path>.md and <path>.json.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Atypical list path (<path>.csv), at --ratio.
    #[arg(long)]
    pub atypical: Option<PathBuf>,
    /// Contact sheet of atypical samples (<path>.png), at --ratio.
    #[arg(long)]
    pub contact_sheet: Option<PathBuf>,
    #[arg(long, default_value_t = 0.7)]
    pub ratio: f64,
    #[arg(long, default_value = "magnitude")]
    pub mask: String,
    /// Export the model masked at --ratio (the mask explorer's masked model) instead of the snapshot.
    #[arg(long)]
    pub masked: bool,
    #[arg(long)]
    pub device: Option<String>,
}

/// `unleash export`: what the app's File menu exports, headless.
pub fn export(a: ExportArgs) -> Result<()> {
    let device = a.device.as_deref().map(DeviceChoice::parse).transpose()?;
    let mut written = Vec::new();
    let run = open_run(&a.run)?;
    if let Some(p) = &a.report {
        let r = run;
        let device = r.config.device.clone().unwrap_or_else(|| "?".into());
        written.extend(crate::export::export_report(&r.records, &device, p)?);
    }
    if a.model.is_some() || a.atypical.is_some() || a.contact_sheet.is_some() {
        let s = resume_session(&a.run, device, a.epoch)?;
        let model = s.inference_model();
        if let Some(p) = &a.model {
            let exported = if a.masked { crate::unleash::atypical::masked_model(&model, a.ratio, MaskKind::parse(&a.mask)?, 0)? } else { model.clone() };
            written.extend(crate::export::export_model(&exported, p)?);
        }
        if a.atypical.is_some() || a.contact_sheet.is_some() {
            // Without --epoch, the snapshot masks and fine-tunes default to, as in the app.
            let (epoch, model) = match a.epoch {
                Some(e) => (e, model),
                None => {
                    let e = crate::run::last_base_epoch(&s.records).ok_or_else(|| Error::run(&a.run, "has no base epochs to mask"))?;
                    (e, s.snapshot_model(e)?)
                }
            };
            let mut nop = |_, _| Ok(());
            let set = mask_probe(&s, model, epoch).gamma(a.ratio, MaskKind::parse(&a.mask)?, 0, &s.sets, &mut nop)?;
            if let Some(p) = &a.atypical {
                written.extend(crate::export::export_atypical_csv(&set, p)?);
            }
            if let Some(p) = &a.contact_sheet {
                written.extend(crate::export::export_contact_sheet(&s.data.train, &set, p)?);
            }
        }
    }
    if written.is_empty() {
        return Err(Error::config("export", "nothing to export: give --model, --report, --atypical or --contact-sheet"));
    }
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// `unleash batch-order`: the training order of epochs `first..last` (inclusive) of a base phase
/// (run epochs) or of any fine-tune phase (epochs within the phase).
pub fn batch_order(seed: u64, epochs: &str, samples: usize, phase: &str) -> Result<()> {
    let finetune = match phase.to_ascii_lowercase().as_str() {
        "base" => false,
        "finetune" | "fine-tune" | "um" | "umap" | "control" => true,
        _ => return Err(Error::config("phase", format!("'{phase}' is not base or finetune"))),
    };
    let bad = || Error::config("epochs", format!("'{epochs}' is not a range like 41..50"));
    let (first, last) = epochs.split_once("..").ok_or_else(bad)?;
    let (first, last): (usize, usize) = (first.trim().parse().map_err(|_| bad())?, last.trim().parse().map_err(|_| bad())?);
    if first == 0 || last < first {
        return Err(bad());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for epoch in first..=last {
        let key = if finetune { crate::train::OrderKey::Finetune { phase_epoch: epoch } } else { crate::train::OrderKey::Base { epoch } };
        let line: Vec<String> = crate::train::epoch_order(seed, key, samples).iter().map(usize::to_string).collect();
        writeln!(out, "{}", line.join(" ")).map_err(|e| Error::Other(format!("cannot write the order: {e}")))?;
    }
    Ok(())
}

/// `unleash import`: a run whose first epoch is the checkpoint (see [`crate::import::import_run`]).
pub fn import(exp: ExperimentConfig, spec: &crate::import::ImportSpec, out: &Path) -> Result<()> {
    let mut r = Renderer::new(false);
    lock_early(out, "import")?;
    r.handle(&Event::Info(format!("importing {} as {} into {}", spec.model.display(), exp.train.model.key(), out.display())));
    let control = ctrl_c_control();
    let s = crate::import::import_run(exp, spec, out, &control, &mut |e| r.handle(&e));
    r.finish();
    let s = s?;
    print_summary(&s, &mut r);
    println!("run folder: {}", out.display());
    Ok(())
}
