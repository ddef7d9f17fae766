//! A run on disk: one folder per run, readable up to its last complete epoch whenever the process
//! stops.
//!
//! ```text
//! run/
//!   config.json               the experiment (data specs, recipe, seed, device)
//!   events.jsonl              one JSON line per finished epoch: every metric (the commit marker)
//!   per_sample_loss.npy       float32 [epochs, N]: the loss of every training sample, every epoch
//!   epochs/0001/model.bpk     the snapshot after that epoch
//!   epochs/0001/scores.npy    float32 [n, 3] (MSP, MaxLogit, Energy) per set; one file per set:
//!                             scores_<set>.npy for id_test, id_val (the ID validation split),
//!                             val_<name> and each test OOD set. The MSP column holds log-MSP
//!                             (same order, no f32 saturation) since config.json's
//!                             "msp_stored_as": "log_msp"; older runs hold plain MSP.
//! ```
//! Each epoch first writes its files (each atomically), then the loss matrix, then appends its line
//! to events.jsonl with an fsync. A reader trusts only the lines of events.jsonl that parse, so a
//! kill at any moment leaves the run readable up to the last complete epoch.

use crate::error::{Error, Result};
use crate::fsio;
use crate::ood::{Metrics, Score};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What produced an epoch: base training, a UM fine-tune, a UMAP prune, or the plain-CE control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Base,
    Um,
    Umap,
    Control,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Base => "base",
            Phase::Um => "UM",
            Phase::Umap => "UMAP",
            Phase::Control => "CE control",
        }
    }
}

/// Metrics of each score for one OOD set.
pub type ScoreMetrics = BTreeMap<Score, Metrics>;

/// Everything measured after one epoch: one line of events.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based, counting across phases (UM epochs continue after base epochs).
    pub epoch: usize,
    pub phase: Phase,
    /// Epoch within the phase, 1-based.
    pub phase_epoch: usize,
    /// The epoch whose snapshot this phase started from (0: from scratch).
    #[serde(default)]
    pub from_epoch: usize,
    /// The loss constraint in force (UM/UMAP), if any.
    pub gamma: Option<f64>,
    pub lr_end: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// Mean per-sample loss of the eval pass over the training set.
    pub train_eval_loss: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// The validation OOD set (selects the best epoch).
    pub val_name: String,
    /// The ID side of `val`: "id_val" (the split held out of training), or the training set
    /// when there is no split. Records of runs made before the split used the ID test set.
    #[serde(default = "legacy_val_id_name")]
    pub val_id_name: String,
    pub val: ScoreMetrics,
    /// Test OOD sets, by name.
    pub ood: BTreeMap<String, ScoreMetrics>,
    /// Plain mean over the test OOD sets.
    pub ood_mean: ScoreMetrics,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

fn legacy_val_id_name() -> String {
    "id_test".to_string()
}

/// The snapshot of an epoch, relative to the run folder.
pub fn epoch_dir(run: &Path, epoch: usize) -> PathBuf {
    run.join("epochs").join(format!("{epoch:04}"))
}

pub fn snapshot_path(run: &Path, epoch: usize) -> PathBuf {
    epoch_dir(run, epoch).join("model.bpk")
}

pub fn scores_path(run: &Path, epoch: usize, set: &str) -> PathBuf {
    epoch_dir(run, epoch).join(format!("scores_{}.npy", file_safe(set)))
}

/// A set name made safe for a file name.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Writes a run folder as epochs finish.
pub struct RunWriter {
    pub dir: PathBuf,
    /// Rows of the per-sample loss matrix so far (one per epoch).
    loss_rows: Vec<Vec<f32>>,
}

impl RunWriter {
    /// Creates a new run folder (it must not hold a run already) and writes the config.
    pub fn create(dir: &Path, config_json: &serde_json::Value) -> Result<RunWriter> {
        if dir.join("events.jsonl").exists() {
            return Err(Error::run(dir, "already holds a run (events.jsonl exists); choose another output folder"));
        }
        std::fs::create_dir_all(dir.join("epochs")).map_err(|e| Error::io(dir, "create the run folder", e))?;
        let text = serde_json::to_vec_pretty(config_json).map_err(|e| Error::Other(e.to_string()))?;
        fsio::write_atomic(&dir.join("config.json"), &text)?;
        std::fs::File::create(dir.join("events.jsonl")).map_err(|e| Error::io(dir.join("events.jsonl"), "create", e))?;
        Ok(RunWriter { dir: dir.to_path_buf(), loss_rows: Vec::new() })
    }

    /// Continues an existing run (UM after base training): later epochs append.
    pub fn append_to(dir: &Path) -> Result<RunWriter> {
        let run = RunReader::open(dir)?;
        let loss_rows = run.loss_matrix()?.map(|(_, rows)| rows).unwrap_or_default();
        // Loss rows past the last complete epoch (a run killed between writing them and its events
        // line) are dropped; that epoch's files are overwritten when its number is written again.
        Ok(RunWriter { dir: dir.to_path_buf(), loss_rows: loss_rows.into_iter().take(run.records.len()).collect() })
    }

    pub fn epochs_written(&self) -> usize {
        self.loss_rows.len()
    }

    pub fn epoch_dir(&self, epoch: usize) -> Result<PathBuf> {
        let d = epoch_dir(&self.dir, epoch);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, "create", e))?;
        Ok(d)
    }

    /// Writes one set's score arrays for an epoch: float32 [n, 3] in [`Score::ALL`] order.
    pub fn write_scores(&self, epoch: usize, set: &str, scores: &BTreeMap<Score, Vec<f32>>) -> Result<()> {
        self.epoch_dir(epoch)?;
        let n = scores.values().next().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(n * Score::ALL.len());
        for i in 0..n {
            for s in Score::ALL {
                data.push(scores[&s][i]);
            }
        }
        fsio::write_atomic(&scores_path(&self.dir, epoch, set), &fsio::npy_f32(&[n, Score::ALL.len()], &data))
    }

    /// Commits an epoch: the loss row, then the events line (fsynced). Call after the epoch's
    /// snapshot and score files are written.
    pub fn commit_epoch(&mut self, record: &EpochRecord, per_sample_loss: Vec<f32>) -> Result<()> {
        if let Some(first) = self.loss_rows.first() {
            if first.len() != per_sample_loss.len() {
                return Err(Error::run(&self.dir, format!("per-sample loss row has {} entries, earlier rows {}", per_sample_loss.len(), first.len())));
            }
        }
        self.loss_rows.push(per_sample_loss);
        let n = self.loss_rows[0].len();
        let flat: Vec<f32> = self.loss_rows.iter().flatten().copied().collect();
        fsio::write_atomic(&self.dir.join("per_sample_loss.npy"), &fsio::npy_f32(&[self.loss_rows.len(), n], &flat))?;
        let path = self.dir.join("events.jsonl");
        let mut line = serde_json::to_string(record).map_err(|e| Error::Other(e.to_string()))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, "open", e))?;
        f.write_all(line.as_bytes()).map_err(|e| Error::io(&path, "append to", e))?;
        f.sync_all().map_err(|e| Error::io(&path, "flush", e))
    }
}

/// Reads a run folder written by the CLI or the app (possibly while it is still being written, or
/// after the process was killed).
#[derive(Debug, Clone)]
pub struct RunReader {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub records: Vec<EpochRecord>,
}

impl RunReader {
    pub fn open(dir: &Path) -> Result<RunReader> {
        if !dir.is_dir() {
            return Err(Error::run(dir, "is not a folder"));
        }
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, "read", e))?;
        let config: serde_json::Value = serde_json::from_slice(&cfg_text)
            .map_err(|e| Error::bad_data(&cfg_path, format!("not valid JSON: {e}")))?;
        let ev_path = dir.join("events.jsonl");
        let text = std::fs::read(&ev_path).map_err(|e| Error::io(&ev_path, "read", e))?;
        let records = parse_events(&ev_path, &text)?;
        Ok(RunReader { dir: dir.to_path_buf(), config, records })
    }

    /// The per-sample loss matrix, cut to the complete epochs: (N, rows).
    pub fn loss_matrix(&self) -> Result<Option<(usize, Vec<Vec<f32>>)>> {
        let p = self.dir.join("per_sample_loss.npy");
        if !p.exists() {
            return Ok(None);
        }
        let (shape, data) = fsio::read_npy_f32(&p)?;
        let [rows, n] = shape[..] else {
            return Err(Error::bad_data(&p, format!("expected a 2-D matrix, found shape {shape:?}")));
        };
        let keep = rows.min(self.records.len());
        Ok(Some((n, data.chunks_exact(n.max(1)).take(keep).map(<[f32]>::to_vec).collect())))
    }

    /// Score arrays of one set at an epoch, per score.
    pub fn scores(&self, epoch: usize, set: &str) -> Result<BTreeMap<Score, Vec<f32>>> {
        let p = scores_path(&self.dir, epoch, set);
        let (shape, data) = fsio::read_npy_f32(&p)?;
        if shape.len() != 2 || shape[1] != Score::ALL.len() {
            return Err(Error::bad_data(&p, format!("expected shape [n, {}], found {shape:?}", Score::ALL.len())));
        }
        Ok(Score::ALL
            .iter()
            .enumerate()
            .map(|(k, &s)| (s, data.iter().skip(k).step_by(Score::ALL.len()).copied().collect()))
            .collect())
    }

    pub fn snapshot(&self, epoch: usize) -> Result<PathBuf> {
        if epoch == 0 || epoch > self.records.len() {
            return Err(Error::run(&self.dir, format!("has no epoch {epoch} (complete epochs: 1 to {})", self.records.len())));
        }
        let p = snapshot_path(&self.dir, epoch);
        if !p.exists() {
            return Err(Error::run(&self.dir, format!("snapshot of epoch {epoch} is missing ({})", p.display())));
        }
        Ok(p)
    }

    pub fn last_epoch(&self) -> Option<usize> {
        self.records.last().map(|r| r.epoch)
    }

    /// The epoch with the best validation AUROC of `score`, among `phase` epochs (or all).
    pub fn best_epoch(&self, score: Score, phase: Option<Phase>) -> Option<usize> {
        best_by_validation(&self.records, score, phase)
    }
}

/// The complete epoch records of an `events.jsonl` (`path` names it in errors). A partial last
/// line (a kill mid-append) is dropped; any other damage is an error.
pub fn parse_events(ev_path: &Path, bytes: &[u8]) -> Result<Vec<EpochRecord>> {
    let text = String::from_utf8_lossy(bytes);
    let mut records = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<EpochRecord>(line) {
            Ok(r) => records.push(r),
            // Only the last line may be partial (a kill mid-append); anything else is damage.
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => return Err(Error::bad_data(ev_path, format!("line {} is not a valid epoch record: {e}", i + 1))),
        }
    }
    for (i, r) in records.iter().enumerate() {
        if r.epoch != i + 1 {
            return Err(Error::bad_data(ev_path, format!("line {} holds epoch {} (expected {})", i + 1, r.epoch, i + 1)));
        }
    }
    Ok(records)
}

/// The last epoch of base training (what masks and fine-tunes start from by default).
pub fn last_base_epoch(records: &[EpochRecord]) -> Option<usize> {
    records.iter().rev().find(|r| r.phase == Phase::Base).map(|r| r.epoch)
}

/// Plain mean of each score's metrics over the test OOD sets.
pub fn mean_over_sets(per_set: &BTreeMap<String, ScoreMetrics>) -> ScoreMetrics {
    Score::ALL
        .iter()
        .filter_map(|&s| {
            let all: Vec<Metrics> = per_set.values().filter_map(|m| m.get(&s).copied()).collect();
            Metrics::mean(&all).map(|m| (s, m))
        })
        .collect()
}

/// The epoch whose validation-OOD AUROC for `score` is highest (first on ties). An epoch whose
/// AUROC is not a number (a degenerate score) is never chosen.
pub fn best_by_validation(records: &[EpochRecord], score: Score, phase: Option<Phase>) -> Option<usize> {
    records
        .iter()
        .filter(|r| phase.is_none_or(|p| r.phase == p))
        .filter_map(|r| r.val.get(&score).map(|m| (r.epoch, m.auroc)))
        .filter(|(_, a)| !a.is_nan())
        .fold(None, |best: Option<(usize, f64)>, (e, a)| match best {
            Some((_, b)) if b >= a => best,
            _ => Some((e, a)),
        })
        .map(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, phase: Phase, energy_auroc: f64) -> EpochRecord {
        let m = Metrics { auroc: energy_auroc, fpr95: 0.5, aupr_in: 0.5, aupr_out: 0.5 };
        EpochRecord {
            epoch,
            phase,
            phase_epoch: 1,
            from_epoch: 0,
            gamma: None,
            lr_end: 0.0,
            train_loss: 0.0,
            train_acc: 0.0,
            train_eval_loss: 0.0,
            test_loss: 0.0,
            test_acc: 0.0,
            val_name: "v".into(),
            val_id_name: "id_val".into(),
            val: BTreeMap::from([(Score::Energy, m)]),
            ood: BTreeMap::new(),
            ood_mean: BTreeMap::new(),
            seconds: 0.0,
            samples_per_sec: 0.0,
        }
    }

    #[test]
    fn best_by_validation_ties_phases_and_nan() {
        let recs = vec![
            record(1, Phase::Base, 0.7),
            record(2, Phase::Base, 0.9),
            record(3, Phase::Base, 0.9),
            record(4, Phase::Base, f64::NAN),
            record(5, Phase::Um, 0.95),
            record(6, Phase::Um, f64::NAN),
            record(7, Phase::Control, 0.8),
        ];
        // Ties: the first of the best.
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Base)), Some(2));
        // Phase filter: only that phase's epochs; None: all.
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Um)), Some(5));
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Control)), Some(7));
        assert_eq!(best_by_validation(&recs, Score::Energy, None), Some(5));
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Umap)), None);
        // A NaN metric is never chosen, wherever it stands.
        let nan_last = vec![record(1, Phase::Base, 0.6), record(2, Phase::Base, f64::NAN)];
        assert_eq!(best_by_validation(&nan_last, Score::Energy, None), Some(1));
        let nan_first = vec![record(1, Phase::Base, f64::NAN), record(2, Phase::Base, 0.6)];
        assert_eq!(best_by_validation(&nan_first, Score::Energy, None), Some(2));
        assert_eq!(best_by_validation(&[record(1, Phase::Base, f64::NAN)], Score::Energy, None), None);
        // A score with no metrics: nothing to choose.
        assert_eq!(best_by_validation(&recs, Score::Msp, None), None);
    }
}
