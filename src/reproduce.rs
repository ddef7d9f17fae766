//! `unleash reproduce`: the paper's finding on the sample data, over several seeds. Per seed: base
//! training; then, each from the final base snapshot, UM with gamma from mask ratio 0.7, UM with
//! the validation-chosen gamma, UMAP at r = 0.2, and a plain-CE control of the same length.
//! Writes a markdown + JSON table (mean and sd over seeds) and a PNG of AUROC vs epoch.

use crate::cli::Renderer;
use crate::commands::open_session;
use crate::config::{DataConfig, DeviceChoice, ExperimentConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::fsio;
use crate::ood::Score;
use crate::run::{best_by_validation, EpochRecord, Phase};
use crate::train::{Objective, PhaseSpec, Session};
use crate::unleash::MaskKind;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ReproduceArgs {
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Epochs of each fine-tune (UM, UMAP, control).
    #[arg(long, default_value_t = 10)]
    pub finetune_epochs: usize,
    #[arg(long, default_value_t = 0.05)]
    pub finetune_lr: f64,
    #[arg(long, default_value_t = 0.7)]
    pub um_mask_ratio: f64,
    #[arg(long, default_value_t = 0.2)]
    pub umap_ratio: f64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Use only the first N training samples (quick checks).
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long, default_value = "runs/reproduce")]
    pub out: PathBuf,
    /// Only rebuild the table and plot from the run folders already in --out (seed-N).
    #[arg(long)]
    pub report_only: bool,
}

/// The stages compared in the table. Each fine-tune is reported at its last epoch and at its
/// best epoch by the validation OOD set (the same honest selection the base run gets).
pub const STAGES: [&str; 10] = [
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
];

/// The table's stages from a reproduction run's records: the base run, then the fine-tune blocks
/// in the order `reproduce` runs them (control, UM with the mask gamma, UM with the validation
/// gamma, UMAP).
pub fn stages_from_records(records: &[EpochRecord]) -> Result<Vec<StageResult>> {
    let blocks = crate::plot::phase_blocks(records);
    let bad = || Error::Other("a reproduction run holds base, control, UM, UM and UMAP phases, in that order".into());
    let [base, control, um_mask, um_val, umap] = blocks.as_slice() else { return Err(bad()) };
    let expected = [Phase::Base, Phase::Control, Phase::Um, Phase::Um, Phase::Umap];
    if [base, control, um_mask, um_val, umap].iter().zip(expected).any(|(b, p)| b.2[0].phase != p) {
        return Err(bad());
    }
    let best_in = |recs: &Vec<&EpochRecord>| -> EpochRecord {
        let owned: Vec<EpochRecord> = recs.iter().map(|r| (*r).clone()).collect();
        let e = best_by_validation(&owned, Score::Energy, None).unwrap_or(owned[owned.len() - 1].epoch);
        owned.into_iter().find(|r| r.epoch == e).expect("epoch of the block")
    };
    let last = |recs: &Vec<&EpochRecord>| (*recs[recs.len() - 1]).clone();
    let mut out = vec![stage_result(STAGES[0], &best_in(&base.2)), stage_result(STAGES[1], &last(&base.2))];
    for (k, block) in [control, um_mask, um_val, umap].iter().enumerate() {
        out.push(stage_result(STAGES[2 + 2 * k], &last(&block.2)));
        out.push(stage_result(STAGES[3 + 2 * k], &best_in(&block.2)));
    }
    Ok(out)
}

/// One stage's numbers for one seed.
#[derive(Debug, Clone, Serialize)]
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
        metrics.insert(s.name().to_string(), per);
    }
    StageResult { stage: stage.to_string(), epoch: r.epoch, gamma: r.gamma, id_acc: r.test_acc, metrics }
}

pub fn reproduce(a: ReproduceArgs) -> Result<()> {
    if a.seeds.is_empty() {
        return Err(Error::config("seeds", "give at least one seed"));
    }
    if a.report_only {
        let mut all = Vec::new();
        for &seed in &a.seeds {
            let run = crate::run::RunReader::open(&a.out.join(format!("seed-{seed}")))?;
            all.push((seed, stages_from_records(&run.records)?, run.records));
        }
        return write_report(&a, &all, None);
    }
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, "create", e))?;
    let device = DeviceChoice::parse(&a.device)?;
    let mut all: Vec<(u64, Vec<StageResult>, Vec<EpochRecord>)> = Vec::new();
    for &seed in &a.seeds {
        let mut r = Renderer::new(false);
        r.handle(&Event::Info(format!("=== seed {seed} ===")));
        let mut data = DataConfig::sample();
        data.train_limit = a.train_limit;
        let exp = ExperimentConfig { data, train: TrainConfig { epochs: a.epochs, seed, device, ..TrainConfig::default() } };
        let mut s = open_session(exp, device, &mut r)?;
        let dir = a.out.join(format!("seed-{seed}"));
        if dir.join("events.jsonl").exists() {
            return Err(Error::run(&dir, "already holds a run; remove it or choose another --out"));
        }
        s.create_run(&dir)?;
        let control = Control::new();
        let run = |s: &mut Session, spec: PhaseSpec, r: &mut Renderer| s.run_phase(&spec, &control, &mut |e| r.handle(&e));
        let base = PhaseSpec { phase: Phase::Base, epochs: a.epochs, lr: 0.05, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
        run(&mut s, base, &mut r)?;
        let final_epoch = a.epochs;
        let best = best_by_validation(&s.records, Score::Energy, Some(Phase::Base)).unwrap_or(final_epoch);
        // gamma from the mask ratio, on the final snapshot.
        let model = s.inference_model();
        let mut nop = |_, _| Ok(());
        let full = s.full_pass(&model, final_epoch, &mut nop)?;
        let masked = s.mask_analysis(&model, &full, a.um_mask_ratio, MaskKind::Magnitude, 0, &mut nop)?;
        let gamma_mask = masked.gamma;
        // The validation-chosen gamma: the mean training loss at the best-by-validation epoch.
        let gamma_val = s.records[best - 1].train_eval_loss;
        r.handle(&Event::Info(format!(
            "gamma: {gamma_mask:.4} from mask ratio {} ({} atypical); {gamma_val:.4} from the best-by-validation epoch {best}",
            a.um_mask_ratio,
            masked.samples.len()
        )));
        let ft = |phase, objective, umap_ratio| PhaseSpec { phase, epochs: a.finetune_epochs, lr: a.finetune_lr, objective, umap_ratio, from_epoch: Some(final_epoch) };
        run(&mut s, ft(Phase::Control, Objective::CrossEntropy, None), &mut r)?;
        run(&mut s, ft(Phase::Um, Objective::Flooded { gamma: gamma_mask }, None), &mut r)?;
        run(&mut s, ft(Phase::Um, Objective::Flooded { gamma: gamma_val }, None), &mut r)?;
        run(&mut s, ft(Phase::Umap, Objective::Flooded { gamma: gamma_mask }, Some(a.umap_ratio)), &mut r)?;
        r.finish();
        let stages = stages_from_records(&s.records)?;
        all.push((seed, stages, s.records.clone()));
    }
    write_report(&a, &all, Some(started.elapsed().as_secs_f64()))
}

/// The markdown + JSON table and the AUROC-vs-epoch plot.
fn write_report(a: &ReproduceArgs, all: &[(u64, Vec<StageResult>, Vec<EpochRecord>)], wall: Option<f64>) -> Result<()> {
    let md = markdown_table(all, a, wall);
    fsio::write_atomic(&a.out.join("reproduction.md"), md.as_bytes())?;
    let json = serde_json::json!({
        "args": format!("{a:?}"),
        "wall_seconds": wall,
        "seeds": all.iter().map(|(seed, stages, _)| serde_json::json!({"seed": seed, "stages": stages})).collect::<Vec<_>>(),
    });
    fsio::write_atomic(&a.out.join("reproduction.json"), serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())?;
    let png = a.out.join("auroc_vs_epoch.png");
    let labels = ["base training", "CE control", "UM (gamma from mask 0.7)", "UM (val-chosen gamma)", "UMAP (r 0.2)"];
    crate::plot::auroc_vs_epoch(&all.iter().map(|(s, _, r)| (*s, r.clone())).collect::<Vec<_>>(), Some(&labels), &png)?;
    println!("{md}");
    println!("wrote {}, {}, {}", a.out.join("reproduction.md").display(), a.out.join("reproduction.json").display(), png.display());
    Ok(())
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

fn markdown_table(all: &[(u64, Vec<StageResult>, Vec<EpochRecord>)], a: &ReproduceArgs, wall: Option<f64>) -> String {
    let seeds: Vec<String> = all.iter().map(|(s, _, _)| s.to_string()).collect();
    let sets: Vec<String> = all[0].1[0].metrics["Energy"].keys().filter(|k| *k != "mean").cloned().collect();
    let mut md = format!(
        "Reproduction on the sample data (SmallCNN, {} base epochs, fine-tunes of {} epochs at lr {}; seeds {}; mean ± sd over seeds; {}).\n\
         Test OOD sets: {} (reported only). Best epoch and the validation gamma are chosen on the validation OOD set (Gaussian noise, its own seed).\n\
         AUROC and FPR95 x100, ID positive.\n\n",
        a.epochs, a.finetune_epochs, a.finetune_lr, seeds.join(", "), wall.map_or("wall time not measured in this call".to_string(), |w| format!("{} wall", crate::cli::format_secs(w))), sets.join(", ")
    );
    for score in Score::ALL {
        md.push_str(&format!("**{}**\n\n| stage | ID acc | mean AUROC | mean FPR95 |", score.name()));
        for s in &sets {
            md.push_str(&format!(" {s} AUROC | {s} FPR95 |"));
        }
        md.push_str("\n|---|---|---|---|");
        md.push_str(&"---|---|".repeat(sets.len()));
        md.push('\n');
        for (k, stage) in STAGES.iter().enumerate() {
            let pick = |f: &dyn Fn(&StageResult) -> f64| mean_sd(&all.iter().map(|(_, st, _)| f(&st[k])).collect::<Vec<_>>());
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
