//! A run on disk: one folder per run, readable up to its last complete epoch whenever the process
//! stops.
//!
//! ```text
//! run/
//!   config.json               the experiment (data specs, recipe, seed, device)
//!   events.jsonl              one JSON line per finished epoch: every metric (the commit marker)
//!   per_sample_loss.npy       float32 [epochs, N]: the loss of every training sample, every epoch
//!   per_sample_correct.npy    uint8 [epochs, N]: 1 where that epoch's model classifies the sample
//!                             right, 0 where not, 255 for epochs written before this file existed
//!   epochs/0001/model.bpk     the snapshot after that epoch
//!   epochs/0001/optimizer.bpk the SGD momentum buffers after that base epoch (`train --resume`)
//!   epochs/0001/scores.npy    float32 [n, 3] (MSP, MaxLogit, Energy) per set; one file per set:
//!                             scores_<set>.npy for id_test, id_val (the ID validation split),
//!                             val_<name> and each test OOD set. The MSP column holds log-MSP
//!                             (same order, no f32 saturation) since config.json's
//!                             "msp_stored_as": "log_msp"; older runs hold plain MSP.
//! ```
//! Each epoch first writes its files (each atomically), then the loss matrix, then appends its line
//! to events.jsonl with an fsync. A reader trusts only the lines of events.jsonl that parse, so a
//! kill at any moment leaves the run readable up to the last complete epoch.
//!
//! One writer at a time: every [`RunWriter`] holds a [`RunLock`] (an OS advisory lock on
//! `writer.lock`) while it writes; readers take none. Damage in the middle of events.jsonl (two
//! writers before locks existed, a bad line) is contained: the run opens up to the epoch before
//! it, with a warning naming the line, and [`repair_events`] cuts the file back to that.

use crate::config::ExperimentConfig;
use crate::data::validation::IdValSplit;
use crate::data::{ImageShape, Normalization};
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
    /// Detectors that could not be fitted at this epoch (they are missing from the metrics), each
    /// message naming one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detector_problems: Vec<String>,
    /// Set on the one epoch of an imported run (`unleash import`): the checkpoint's file name.
    /// That epoch was not trained here; it is the model as the file holds it, scored as any epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
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

/// The optimizer state (SGD momentum buffers) after an epoch, written beside its snapshot.
pub fn optimizer_path(run: &Path, epoch: usize) -> PathBuf {
    epoch_dir(run, epoch).join("optimizer.bpk")
}

/// The run format this code writes into config.json (`format_version`). A run without the field
/// was written before it existed and is format 1. Bump it when older code could no longer read a
/// new run correctly; readers refuse a run of a newer format by name.
pub const FORMAT_VERSION: u64 = 1;

/// The lock file every writer of a run holds (see [`RunLock`]).
pub const LOCK_FILE: &str = "writer.lock";

/// The one writer of a run folder: an exclusive advisory lock on `<run>/writer.lock`, held for as
/// long as this value lives. The file's text names the holder (pid, command line, job, start
/// time) so that a second writer can say who holds the run. The OS drops the lock when the
/// process ends, however it ends, so a killed writer never leaves a stale lock.
#[derive(Debug)]
pub struct RunLock {
    file: std::fs::File,
    path: PathBuf,
}

/// Locks taken early by a CLI job (to fail before loading data) and kept for the writer it then
/// makes: the OS lock belongs to one open file, so a second acquire in the same process must get
/// the same one back rather than conflict with it.
static PARKED: std::sync::Mutex<Vec<RunLock>> = std::sync::Mutex::new(Vec::new());

impl RunLock {
    /// Takes the lock at once or fails with a message naming the holder; never waits. A lock this
    /// process parked for `dir` ([`RunLock::park`]) is handed over instead.
    pub fn acquire(dir: &Path, job: &str) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        if let Some(parked) = take_parked(&path) {
            return Ok(parked);
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "open the lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::run(dir, busy_message(&holder)));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
        }
        let holder = format!(
            "pid {}\ncommand {}\njob {job}\nstarted {}\n",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" "),
            utc_now()
        );
        // Best effort: the lock is what matters; the text only explains it.
        let _ = file.set_len(0).and_then(|()| std::io::Seek::rewind(&mut file)).and_then(|_| file.write_all(holder.as_bytes())).and_then(|()| file.flush());
        Ok(RunLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the lock held for the next [`RunLock::acquire`] of the same folder in this process.
    pub fn park(self) {
        PARKED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(self);
    }
}

fn take_parked(path: &Path) -> Option<RunLock> {
    let mut parked = PARKED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let same = |a: &Path| a == path || a.canonicalize().ok().zip(path.canonicalize().ok()).is_some_and(|(x, y)| x == y);
    let i = parked.iter().position(|l| same(&l.path))?;
    Some(parked.swap_remove(i))
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // The lock goes with the file handle anyway; unlocking first is only tidier.
        let _ = self.file.unlock();
    }
}

/// What a second writer is told: the holder's pid, command, job and start time.
fn busy_message(holder: &str) -> String {
    let field = |key: &str| holder.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()));
    let who = match (field("pid "), field("command "), field("job "), field("started ")) {
        (Some(pid), Some(cmd), job, started) => format!(
            "pid {pid} (`{cmd}`{}), started {}",
            job.map(|j| format!(", job: {j}")).unwrap_or_default(),
            started.unwrap_or_else(|| "at an unknown time".into())
        ),
        _ => "another process (it has not written its details yet)".into(),
    };
    format!("is being written by {who}. One job writes a run at a time: wait for it to finish or stop it, then try again (reading the run needs no wait)")
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC` (days-to-civil conversion, proleptic Gregorian).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn scores_path(run: &Path, epoch: usize, set: &str) -> PathBuf {
    epoch_dir(run, epoch).join(format!("scores_{}.npy", file_safe(set)))
}

/// A set name made safe for a file name.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Writes a run folder as epochs finish. It writes only while it holds the run's [`RunLock`]:
/// [`RunWriter::create`] takes it at once; a writer opened with [`RunWriter::append_to`] takes it
/// before its first write (or earlier, with [`RunWriter::lock`]) and checks that nobody wrote the
/// run in between.
pub struct RunWriter {
    pub dir: PathBuf,
    /// Rows of the per-sample loss matrix so far (one per epoch).
    loss_rows: Vec<Vec<f32>>,
    /// Rows of the per-sample correctness matrix (see [`CORRECT_UNKNOWN`]).
    correct_rows: Vec<Vec<u8>>,
    /// Complete epochs in events.jsonl as this writer knows it (read at open, plus its commits).
    epochs: usize,
    lock: Option<RunLock>,
}

impl RunWriter {
    /// Creates a new run folder (it must not hold a run already) and writes the config.
    pub fn create(dir: &Path, config: &RunConfig) -> Result<RunWriter> {
        std::fs::create_dir_all(dir.join("epochs")).map_err(|e| Error::io(dir, "create the run folder", e))?;
        let lock = RunLock::acquire(dir, "train")?;
        if dir.join("events.jsonl").exists() {
            return Err(Error::run(
                dir,
                "already holds a run (events.jsonl exists); choose another output folder, or continue it with `unleash train --resume`",
            ));
        }
        let text = config.to_json()?;
        fsio::write_atomic(&dir.join("config.json"), &text)?;
        std::fs::File::create(dir.join("events.jsonl")).map_err(|e| Error::io(dir.join("events.jsonl"), "create", e))?;
        Ok(RunWriter { dir: dir.to_path_buf(), loss_rows: Vec::new(), correct_rows: Vec::new(), epochs: 0, lock: Some(lock) })
    }

    /// Continues an existing run (UM after base training): later epochs append. Takes no lock
    /// yet (opening a run to look at it must not block a writer elsewhere); the first write does.
    /// A damaged run opens (to read its good epochs) but taking the lock refuses it until it is
    /// repaired, so nothing is appended after a bad line.
    pub fn append_to(dir: &Path) -> Result<RunWriter> {
        RunWriter::continuing(&RunReader::open(dir)?)
    }

    /// [`RunWriter::append_to`] the run `run` has read.
    pub fn continuing(run: &RunReader) -> Result<RunWriter> {
        // Rows past the last complete epoch (a run killed between writing them and its events
        // line) are dropped by the readers; that epoch's files are overwritten when its number is
        // written again.
        Ok(RunWriter {
            dir: run.dir.clone(),
            loss_rows: run.loss_matrix()?.map(|(_, rows)| rows).unwrap_or_default(),
            correct_rows: run.correct_matrix()?.map(|(_, rows)| rows).unwrap_or_default(),
            epochs: run.records.len(),
            lock: None,
        })
    }

    /// The per-sample loss rows of the epochs written so far.
    pub fn loss_rows(&self) -> &[Vec<f32>] {
        &self.loss_rows
    }

    /// The per-sample correctness rows of the epochs written so far (see [`CORRECT_UNKNOWN`]).
    pub fn correct_rows(&self) -> &[Vec<u8>] {
        &self.correct_rows
    }

    /// Takes the run's lock for `job` unless this writer holds it (see [`RunWriter::adopt_lock`]).
    pub fn lock(&mut self, job: &str) -> Result<()> {
        if self.lock.is_none() {
            let lock = RunLock::acquire(&self.dir, job)?;
            self.adopt_lock(lock)?;
        }
        Ok(())
    }

    /// Holds a lock taken earlier (a CLI job takes it before loading its data, to fail at once).
    /// Checks that the run on disk is still the one this writer read: had another process
    /// written epochs in between, appending would number them twice.
    pub fn adopt_lock(&mut self, lock: RunLock) -> Result<()> {
        let ev_path = self.dir.join("events.jsonl");
        let bytes = std::fs::read(&ev_path).map_err(|e| Error::io(&ev_path, "read", e))?;
        let parsed = parse_events(&ev_path, &bytes);
        if let Some(w) = parsed.warnings.first() {
            return Err(Error::run(&self.dir, format!("is damaged, so nothing may be added to it: {w}")));
        }
        if parsed.records.len() != self.epochs {
            return Err(Error::run(
                &self.dir,
                format!(
                    "was changed by another job since it was opened here (it now holds {} complete epochs, this session read {}): open it again",
                    parsed.records.len(),
                    self.epochs
                ),
            ));
        }
        // A partial last line (a kill mid-append) would glue onto the next line: cut it off, and
        // end a last record that lacks its newline.
        if parsed.good_len < bytes.len() {
            let f = std::fs::OpenOptions::new().write(true).open(&ev_path).map_err(|e| Error::io(&ev_path, "open", e))?;
            f.set_len(parsed.good_len as u64).and_then(|()| f.sync_all()).map_err(|e| Error::io(&ev_path, "cut the partial last line of", e))?;
        } else if bytes.last().is_some_and(|&b| b != b'\n') {
            let mut f = std::fs::OpenOptions::new().append(true).open(&ev_path).map_err(|e| Error::io(&ev_path, "open", e))?;
            f.write_all(b"\n").and_then(|()| f.sync_all()).map_err(|e| Error::io(&ev_path, "append to", e))?;
        }
        self.lock = Some(lock);
        Ok(())
    }

    /// Lets go of the lock (the app's worker, between jobs). The next write takes it again.
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    pub fn epochs_written(&self) -> usize {
        self.epochs
    }

    pub fn epoch_dir(&mut self, epoch: usize) -> Result<PathBuf> {
        self.lock(&format!("writing epoch {epoch}"))?;
        let d = epoch_dir(&self.dir, epoch);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, "create", e))?;
        Ok(d)
    }

    /// Writes one set's score arrays for an epoch: float32 `[n, 10]`, one column per score in
    /// [`Score::ALL`] order (config.json's `score_columns`); a score not computed (ODIN off, a
    /// detector that could not be fitted) is a column of NaN.
    pub fn write_scores(&mut self, epoch: usize, set: &str, scores: &BTreeMap<Score, Vec<f32>>) -> Result<()> {
        self.epoch_dir(epoch)?;
        let n = scores.values().next().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(n * Score::ALL.len());
        for i in 0..n {
            for s in Score::ALL {
                data.push(scores.get(&s).map_or(f32::NAN, |v| v[i]));
            }
        }
        fsio::write_atomic(&scores_path(&self.dir, epoch, set), &fsio::npy_f32(&[n, Score::ALL.len()], &data))
    }

    /// Writes the optimizer state of an epoch (burnpack bytes from burn's `ModuleOptimizer`).
    pub fn write_optimizer_state(&mut self, epoch: usize, bytes: &[u8]) -> Result<()> {
        self.epoch_dir(epoch)?;
        fsio::write_atomic(&optimizer_path(&self.dir, epoch), bytes)
    }

    /// Commits an epoch: the loss row, then the events line (fsynced). Call after the epoch's
    /// snapshot and score files are written.
    pub fn commit_epoch(&mut self, record: &EpochRecord, per_sample_loss: Vec<f32>, correct: &[bool]) -> Result<()> {
        self.lock(&format!("writing epoch {}", record.epoch))?;
        if let Some(first) = self.loss_rows.first() {
            if first.len() != per_sample_loss.len() {
                return Err(Error::run(&self.dir, format!("per-sample loss row has {} entries, earlier rows {}", per_sample_loss.len(), first.len())));
            }
        }
        if correct.len() != per_sample_loss.len() {
            return Err(Error::Mismatch(format!("epoch {}: {} per-sample losses but {} correctness flags", record.epoch, per_sample_loss.len(), correct.len())));
        }
        self.loss_rows.push(per_sample_loss);
        let n = self.loss_rows[0].len();
        let flat: Vec<f32> = self.loss_rows.iter().flatten().copied().collect();
        fsio::write_atomic(&self.dir.join("per_sample_loss.npy"), &fsio::npy_f32(&[self.loss_rows.len(), n], &flat))?;
        // Epochs written before this file existed (or rows of another length) are unknown.
        self.correct_rows.resize(self.loss_rows.len() - 1, vec![CORRECT_UNKNOWN; n]);
        self.correct_rows.iter_mut().filter(|r| r.len() != n).for_each(|r| *r = vec![CORRECT_UNKNOWN; n]);
        self.correct_rows.push(correct.iter().map(|&c| u8::from(c)).collect());
        let flat: Vec<u8> = self.correct_rows.iter().flatten().copied().collect();
        fsio::write_atomic(&self.dir.join("per_sample_correct.npy"), &fsio::npy_u8(&[self.correct_rows.len(), n], &flat))?;
        let path = self.dir.join("events.jsonl");
        let mut line = serde_json::to_string(record).map_err(|e| Error::Other(e.to_string()))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, "open", e))?;
        f.write_all(line.as_bytes()).map_err(|e| Error::io(&path, "append to", e))?;
        f.sync_all().map_err(|e| Error::io(&path, "flush", e))?;
        self.epochs += 1;
        Ok(())
    }
}

/// A per-sample correctness entry of an epoch that was written before correctness was recorded.
pub const CORRECT_UNKNOWN: u8 = 255;

/// Reads a run folder written by the CLI or the app (possibly while it is still being written, or
/// after the process was killed).
#[derive(Debug, Clone)]
pub struct RunReader {
    pub dir: PathBuf,
    pub config: RunConfig,
    /// The complete epochs, up to any damage in events.jsonl.
    pub records: Vec<EpochRecord>,
    /// What was skipped and why (damage in events.jsonl), each naming the line; empty for a sound
    /// run. Front ends show these; `unleash repair` cuts the file back to `records`.
    pub warnings: Vec<String>,
}

impl RunReader {
    pub fn open(dir: &Path) -> Result<RunReader> {
        if !dir.is_dir() {
            return Err(Error::run(dir, "is not a folder"));
        }
        let cfg_path = dir.join("config.json");
        let cfg_text = std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, "read", e))?;
        let config = RunConfig::parse(&cfg_path, &cfg_text)?;
        let ev_path = dir.join("events.jsonl");
        let text = std::fs::read(&ev_path).map_err(|e| Error::io(&ev_path, "read", e))?;
        let parsed = parse_events(&ev_path, &text);
        Ok(RunReader { dir: dir.to_path_buf(), config, records: parsed.records, warnings: parsed.warnings })
    }

    /// The per-sample loss matrix, cut to the complete epochs: (N, rows).
    pub fn loss_matrix(&self) -> Result<Option<(usize, Vec<Vec<f32>>)>> {
        self.epoch_matrix("per_sample_loss.npy", fsio::read_npy_f32)
    }

    /// The per-sample correctness matrix, cut to the complete epochs: (N, rows); None for runs
    /// written before it existed. A row of [`CORRECT_UNKNOWN`] is an epoch it does not cover.
    pub fn correct_matrix(&self) -> Result<Option<(usize, Vec<Vec<u8>>)>> {
        self.epoch_matrix("per_sample_correct.npy", fsio::read_npy_u8)
    }

    /// A `[epochs, N]` matrix of the run folder read by `read`, as rows cut to the complete
    /// epochs: (N, rows); None when the file is not there.
    fn epoch_matrix<T: Clone>(&self, file: &str, read: fn(&Path) -> Result<(Vec<usize>, Vec<T>)>) -> Result<Option<(usize, Vec<Vec<T>>)>> {
        let p = self.dir.join(file);
        if !p.exists() {
            return Ok(None);
        }
        let (shape, data) = read(&p)?;
        let [rows, n] = shape[..] else {
            return Err(Error::bad_data(&p, format!("expected a 2-D matrix, found shape {shape:?}")));
        };
        let keep = rows.min(self.records.len());
        Ok(Some((n, data.chunks_exact(n.max(1)).take(keep).map(<[T]>::to_vec).collect())))
    }

    /// Score arrays of one set at an epoch, per score (the scores that were computed).
    pub fn scores(&self, epoch: usize, set: &str) -> Result<BTreeMap<Score, Vec<f32>>> {
        read_score_array(&scores_path(&self.dir, epoch, set))
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

    /// The experiment the run was made with (see [`RunConfig::experiment`]).
    pub fn experiment(&self) -> Result<ExperimentConfig> {
        self.config.experiment.clone().ok_or_else(|| Error::run(&self.dir, "config.json does not describe an experiment"))
    }

    pub fn last_epoch(&self) -> Option<usize> {
        self.records.last().map(|r| r.epoch)
    }

    /// The epoch with the best validation AUROC of `score`, among `phase` epochs (or all).
    pub fn best_epoch(&self, score: Score, phase: Option<Phase>) -> Option<usize> {
        best_by_validation(&self.records, score, phase)
    }
}

/// A run's config.json: the experiment and what its start found out about the data. Written once,
/// when the run is created; read only by [`RunReader::open`]. Every field but the experiment was
/// added over time and has a default, so run folders of earlier versions keep opening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// 1 when absent: runs from before the field (see [`FORMAT_VERSION`]).
    #[serde(default = "first_format")]
    pub format_version: u64,
    /// None only in a folder that is not a run of this tool; see [`RunReader::experiment`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ImageShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// Training samples trained on (after the ID validation split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_samples: Option<usize>,
    /// Per-sample arrays index the training samples left after this split (file order). Absent
    /// in runs from before the split existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_val_split: Option<IdValSplit>,
    /// The ID side of validation: the split's name (or the ID test set in old runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_ood: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_test_overlap: Option<ValTestOverlap>,
    /// "log_msp" when the MSP score column holds log-MSP; absent: plain MSP (older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msp_stored_as: Option<String>,
    /// The score arrays' columns (scores_<set>.npy), NaN where a score was not computed; absent
    /// in runs from before the detectors, whose arrays hold msp, maxlogit, energy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub score_columns: Vec<String>,
    /// How the ODIN column is stored (see the README's Detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odin_stored_as: Option<String>,
    /// Test OOD set names, in table order.
    #[serde(default)]
    pub ood: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unleash_version: Option<String>,
    /// Sizes and SHA-256 of every data file the run was made from (see `data::provenance`); every
    /// later job on the run checks the data on disk against them. Absent in runs from before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprints: Option<Vec<crate::data::provenance::SourceFingerprint>>,
    /// The checkpoint an imported run's epoch 1 came from (`unleash import`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<crate::import::ImportedFrom>,
}

/// Whether the validation OOD set was allowed to clash with a test set, and the clashes named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValTestOverlap {
    pub allowed: bool,
    #[serde(default)]
    pub clashes: Vec<String>,
}

fn first_format() -> u64 {
    1
}

impl RunConfig {
    /// The one parser of config.json: a run of a newer format is refused by its number before
    /// anything else is read; an older one is read with the defaults of what it lacks.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<RunConfig> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::bad_data(path, format!("not valid JSON: {e}")))?;
        check_format_version(path, &value)?;
        // From the bytes rather than the value: serde's message then gives the line and column.
        let mut config: RunConfig = serde_json::from_slice(bytes).map_err(|e| Error::bad_data(path, format!("not a run's config: {e}")))?;
        // Runs from before the ID validation split trained on every sample and validated against
        // the ID test set with any validation set: they reopen as they were made (fraction 0,
        // overlap accepted), so their per-sample arrays still line up.
        if config.id_val_split.is_none() {
            if let Some(exp) = &mut config.experiment {
                exp.data.id_val_fraction = 0.0;
                exp.data.allow_val_test_overlap = true;
            }
        }
        Ok(config)
    }

    /// config.json's bytes (pretty JSON, keys in order).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        // Through a Value: its map keeps keys sorted, as every config.json so far.
        let value = serde_json::to_value(self).map_err(|e| Error::Other(e.to_string()))?;
        serde_json::to_vec_pretty(&value).map_err(|e| Error::Other(e.to_string()))
    }
}

/// A run of a newer format than this code knows is refused by name rather than misread.
fn check_format_version(cfg_path: &Path, config: &serde_json::Value) -> Result<()> {
    match config.get("format_version") {
        None => Ok(()),
        Some(v) => match v.as_u64() {
            Some(n) if n <= FORMAT_VERSION => Ok(()),
            Some(n) => Err(Error::bad_data(
                cfg_path,
                format!("the run is in format version {n}, newer than this unleash reads (up to {FORMAT_VERSION}): open it with a newer unleash"),
            )),
            None => Err(Error::bad_data(cfg_path, format!("format_version is {v}, not a version number"))),
        },
    }
}

/// events.jsonl as read: the good prefix and what was skipped after it.
#[derive(Debug, Clone, Default)]
pub struct ParsedEvents {
    /// Epochs 1..=n, in order, up to the first damage.
    pub records: Vec<EpochRecord>,
    /// One message per damage found (the first one cuts the run), naming the line.
    pub warnings: Vec<String>,
    /// Bytes of the file that hold `records` (whole lines): what a repair keeps.
    pub good_len: usize,
}

/// The complete epoch records of an `events.jsonl` (`path` names it in warnings). A partial last
/// line (a kill mid-append) is dropped silently. Any other damage (a line that is not a record,
/// an epoch out of order or written twice) ends the good prefix, with a warning naming the line.
/// An epoch written twice is dropped with its first line too: its files may hold either writer's.
pub fn parse_events(ev_path: &Path, bytes: &[u8]) -> ParsedEvents {
    let mut out = ParsedEvents::default();
    // Byte offset of each line's end (after its newline), to cut the file on a line boundary.
    let mut line_ends = Vec::new();
    let mut start = 0usize;
    let mut lines = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            lines.push(&bytes[start..i]);
            line_ends.push(i + 1);
            start = i + 1;
        }
    }
    let tail = &bytes[start..];
    let name = ev_path.display();
    let mut good_lines = 0usize;
    let mut damage: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            good_lines = n;
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let record = match serde_json::from_str::<EpochRecord>(&text) {
            Ok(r) => r,
            Err(e) => {
                damage = Some(format!("{name}: line {n} is not a valid epoch record ({e})"));
                break;
            }
        };
        let expected = out.records.len() + 1;
        if record.epoch != expected {
            if (1..expected).contains(&record.epoch) {
                // Two writers: epoch E's files may be either's, so the good prefix ends before E.
                let first = out.records.iter().position(|r| r.epoch == record.epoch).unwrap_or(out.records.len());
                out.records.truncate(first);
                good_lines = line_of_record(&lines, first);
                damage = Some(format!(
                    "{name}: line {n} holds epoch {} again (expected {expected}; two jobs wrote the run at once?); its files may be either job's, so epoch {} and later are left out",
                    record.epoch, record.epoch
                ));
            } else {
                damage = Some(format!("{name}: line {n} holds epoch {} (expected {expected})", record.epoch));
            }
            break;
        }
        out.records.push(record);
        good_lines = n;
    }
    if let Some(d) = damage {
        let last = out.records.last().map_or("no complete epoch".to_string(), |r| format!("epochs 1 to {}", r.epoch));
        out.warnings.push(format!("{d}. The run is read up to the damage ({last}); `unleash repair --run {}` cuts events.jsonl back to that, keeping a backup", ev_path.parent().unwrap_or(Path::new(".")).display()));
    } else if let Ok(r) = serde_json::from_str::<EpochRecord>(&String::from_utf8_lossy(tail)) {
        // A complete record whose newline was not written yet: still a whole epoch.
        if r.epoch == out.records.len() + 1 {
            out.records.push(r);
            out.good_len = bytes.len();
            return out;
        }
    }
    out.good_len = if good_lines == 0 { 0 } else { line_ends[good_lines - 1] };
    out
}

/// The number of lines (counting blank ones) before the line holding record `k` (0-based): the
/// lines that hold records 0..k.
fn line_of_record(lines: &[&[u8]], k: usize) -> usize {
    let mut seen = 0usize;
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if seen == k {
            return i;
        }
        seen += 1;
    }
    lines.len()
}

/// What `unleash repair` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Repair {
    /// Nothing to repair.
    Sound { epochs: usize },
    /// events.jsonl was cut to `epochs` complete epochs; the original is at `backup`.
    Cut { epochs: usize, backup: PathBuf, warnings: Vec<String> },
}

/// Rewrites a damaged events.jsonl to its good prefix (atomically), after copying the original to
/// `events.jsonl.damaged-<unix seconds>` beside it. Needs the run's lock: it writes the run.
pub fn repair_events(dir: &Path) -> Result<Repair> {
    let _lock = RunLock::acquire(dir, "repair")?;
    let run = RunReader::open(dir)?;
    let ev_path = dir.join("events.jsonl");
    let bytes = std::fs::read(&ev_path).map_err(|e| Error::io(&ev_path, "read", e))?;
    let parsed = parse_events(&ev_path, &bytes);
    if parsed.warnings.is_empty() {
        return Ok(Repair::Sound { epochs: run.records.len() });
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut backup = dir.join(format!("events.jsonl.damaged-{secs}"));
    let mut k = 1;
    while backup.exists() {
        backup = dir.join(format!("events.jsonl.damaged-{secs}-{k}"));
        k += 1;
    }
    fsio::write_atomic(&backup, &bytes)?;
    fsio::write_atomic(&ev_path, &bytes[..parsed.good_len])?;
    Ok(Repair::Cut { epochs: parsed.records.len(), backup, warnings: parsed.warnings })
}

/// Cuts a run back to its first `epochs` complete epochs: events.jsonl keeps its first `epochs`
/// records (their bytes as written, replaced atomically), and the epoch folders after them go.
/// A job that reruns a phase from its start snapshot (a fine-tune cut short by a kill) calls it
/// first, so the rerun's epochs take the numbers the cut-off ones had. The lock is the caller's,
/// taken before it decided what to cut. Idempotent: a cut interrupted part-way is finished by
/// calling it again. Extra rows of per_sample_loss.npy are dropped by the next writer (see
/// [`RunWriter::append_to`]). A damaged events.jsonl is refused: `unleash repair` first.
pub fn cut_back(dir: &Path, epochs: usize, _lock: &RunLock) -> Result<()> {
    let ev_path = dir.join("events.jsonl");
    let bytes = std::fs::read(&ev_path).map_err(|e| Error::io(&ev_path, "read", e))?;
    let parsed = parse_events(&ev_path, &bytes);
    if let Some(w) = parsed.warnings.first() {
        return Err(Error::run(dir, format!("is damaged, so it cannot be cut back: {w}")));
    }
    if parsed.records.len() > epochs {
        let mut seen = 0usize;
        let mut keep = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            if seen == epochs {
                break;
            }
            if b == b'\n' {
                // Blank lines hold no record; a record line ends here.
                if !bytes[keep..i].iter().all(u8::is_ascii_whitespace) {
                    seen += 1;
                }
                keep = i + 1;
            }
        }
        fsio::write_atomic(&ev_path, &bytes[..keep])?;
    }
    let epochs_dir = dir.join("epochs");
    let Ok(entries) = std::fs::read_dir(&epochs_dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let later = entry.file_name().to_str().and_then(|n| n.parse::<usize>().ok()).is_some_and(|e| e > epochs);
        if later {
            std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), "remove", e))?;
        }
    }
    Ok(())
}

/// A score array file (`scores_<set>.npy`), per score (the scores that were computed).
pub fn read_score_array(path: &Path) -> Result<BTreeMap<Score, Vec<f32>>> {
    let (shape, data) = fsio::read_npy_f32(path)?;
    score_columns(&shape, &data).ok_or_else(|| {
        Error::bad_data(path, format!("expected shape [n, {}] (or [n, {}] from before the detectors), found {shape:?}", Score::ALL.len(), Score::LOGIT.len()))
    })
}

/// The scores in a score array's columns: [`Score::ALL`], or [`Score::LOGIT`] in folders written
/// before the detectors; an all-NaN column (not computed) is left out. None for another shape.
pub fn score_columns(shape: &[usize], data: &[f32]) -> Option<BTreeMap<Score, Vec<f32>>> {
    let columns: &[Score] = match shape {
        [_, k] if *k == Score::ALL.len() => &Score::ALL,
        [_, k] if *k == Score::LOGIT.len() => &Score::LOGIT,
        _ => return None,
    };
    let k = columns.len();
    let out = columns
        .iter()
        .enumerate()
        .map(|(j, &s)| (s, data.iter().skip(j).step_by(k).copied().collect::<Vec<f32>>()))
        .filter(|(_, v)| v.is_empty() || !v.iter().all(|x| x.is_nan()))
        .collect();
    Some(out)
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
    best_of(records.iter().filter(|r| phase.is_none_or(|p| r.phase == p)), score)
}

/// [`best_by_validation`] over the epochs given.
fn best_of<'a>(records: impl Iterator<Item = &'a EpochRecord>, score: Score) -> Option<usize> {
    records
        .filter_map(|r| r.val.get(&score).map(|m| (r.epoch, m.auroc)))
        .filter(|(_, a)| !a.is_nan())
        .fold(None, |best: Option<(usize, f64)>, (e, a)| match best {
            Some((_, b)) if b >= a => best,
            _ => Some((e, a)),
        })
        .map(|(e, _)| e)
}

/// A contiguous block of epochs of one phase run: (label, from_epoch, records).
pub fn phase_blocks(records: &[EpochRecord]) -> Vec<(String, usize, Vec<&EpochRecord>)> {
    let mut blocks: Vec<(String, usize, Vec<&EpochRecord>)> = Vec::new();
    for r in records {
        let starts_new = r.phase_epoch == 1 || blocks.is_empty();
        if starts_new {
            let label = match (r.phase, r.gamma) {
                (Phase::Base, _) => "base training".to_string(),
                (p, Some(g)) => format!("{} (gamma {g:.3})", p.name()),
                (p, None) => p.name().to_string(),
            };
            blocks.push((label, r.from_epoch, Vec::new()));
        }
        blocks.last_mut().expect("pushed").2.push(r);
    }
    blocks
}

/// Which epoch of a stretch of epochs a [`Stage`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Last,
    /// The epoch an imported run starts from: the checkpoint as it was read.
    Imported,
    /// The best by the validation OOD set's Energy AUROC: the honest selection.
    BestByValidation,
}

/// A point of a run that views and reports put side by side: the best or last epoch of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub phase: Phase,
    pub pick: Pick,
    pub epoch: usize,
}

impl Stage {
    /// The short name the compare view lists: "best epoch", "final", or the fine-tune's name.
    pub fn name(&self) -> String {
        match (self.phase, self.pick) {
            (_, Pick::Imported) => "imported".into(),
            (Phase::Base, Pick::BestByValidation) => "best epoch".into(),
            (Phase::Base, Pick::Last) => "final".into(),
            (phase, Pick::Last) => phase.name().into(),
            (phase, Pick::BestByValidation) => format!("{}: best (val)", phase.name()),
        }
    }

    /// The name with its epoch, as the report titles a row.
    pub fn title(&self) -> String {
        match (self.phase, self.pick) {
            (Phase::Base, Pick::BestByValidation) => format!("best epoch by validation ({})", self.epoch),
            (Phase::Base, Pick::Last) => format!("final base epoch ({})", self.epoch),
            _ => format!("{} (epoch {})", self.name(), self.epoch),
        }
    }
}

/// The stages of a run, in this order: the best base epoch by validation, the final base epoch,
/// and the last epoch of each fine-tune the run holds (CE control, UM, UMAP).
/// An imported run's base phase is its one imported epoch: that stage stands for both.
pub fn stages(records: &[EpochRecord]) -> Vec<Stage> {
    let imported = records.iter().find(|r| r.imported_from.is_some()).map(|r| Stage { phase: r.phase, pick: Pick::Imported, epoch: r.epoch });
    let best = best_by_validation(records, Score::Energy, Some(Phase::Base)).map(|epoch| Stage { phase: Phase::Base, pick: Pick::BestByValidation, epoch });
    let last = [Phase::Base, Phase::Control, Phase::Um, Phase::Umap]
        .into_iter()
        .filter_map(|phase| records.iter().rev().find(|r| r.phase == phase).map(|r| Stage { phase, pick: Pick::Last, epoch: r.epoch }));
    let trained = best.into_iter().chain(last).filter(|s| imported.is_none_or(|i| s.epoch != i.epoch));
    imported.into_iter().chain(trained).collect()
}

/// The last and the best-by-validation epoch of one phase block (see [`phase_blocks`]); the best
/// is the last when no epoch of the block has a validation AUROC. None for an empty block.
pub fn block_stages(block: &[&EpochRecord]) -> Option<(Stage, Stage)> {
    let last = block.last()?;
    let best = best_of(block.iter().copied(), Score::Energy).unwrap_or(last.epoch);
    Some((Stage { phase: last.phase, pick: Pick::Last, epoch: last.epoch }, Stage { phase: last.phase, pick: Pick::BestByValidation, epoch: best }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn scored(epoch: usize, phase: Phase, energy_auroc: f64) -> EpochRecord {
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
            detector_problems: Vec::new(),
            imported_from: None,
        }
    }

    #[test]
    fn best_by_validation_ties_phases_and_nan() {
        let recs = vec![
            scored(1, Phase::Base, 0.7),
            scored(2, Phase::Base, 0.9),
            scored(3, Phase::Base, 0.9),
            scored(4, Phase::Base, f64::NAN),
            scored(5, Phase::Um, 0.95),
            scored(6, Phase::Um, f64::NAN),
            scored(7, Phase::Control, 0.8),
        ];
        // Ties: the first of the best.
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Base)), Some(2));
        // Phase filter: only that phase's epochs; None: all.
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Um)), Some(5));
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Control)), Some(7));
        assert_eq!(best_by_validation(&recs, Score::Energy, None), Some(5));
        assert_eq!(best_by_validation(&recs, Score::Energy, Some(Phase::Umap)), None);
        // A NaN metric is never chosen, wherever it stands.
        let nan_last = vec![scored(1, Phase::Base, 0.6), scored(2, Phase::Base, f64::NAN)];
        assert_eq!(best_by_validation(&nan_last, Score::Energy, None), Some(1));
        let nan_first = vec![scored(1, Phase::Base, f64::NAN), scored(2, Phase::Base, 0.6)];
        assert_eq!(best_by_validation(&nan_first, Score::Energy, None), Some(2));
        assert_eq!(best_by_validation(&[scored(1, Phase::Base, f64::NAN)], Score::Energy, None), None);
        // A score with no metrics: nothing to choose.
        assert_eq!(best_by_validation(&recs, Score::Msp, None), None);
    }

    #[test]
    fn score_columns_read_both_layouts_and_skip_scores_not_computed() {
        // Today's layout: every score a column, ODIN not computed (NaN).
        let n = 2;
        let mut data = Vec::new();
        for i in 0..n {
            for (j, s) in Score::ALL.iter().enumerate() {
                data.push(if *s == Score::Odin { f32::NAN } else { (10 * i + j) as f32 });
            }
        }
        let got = score_columns(&[n, Score::ALL.len()], &data).unwrap();
        assert_eq!(got.len(), 9);
        assert!(!got.contains_key(&Score::Odin));
        assert_eq!(got[&Score::Knn], vec![4.0, 14.0]);
        assert_eq!(got[&Score::Dice], vec![8.0, 18.0]);
        // Before the detectors: three columns, msp, maxlogit, energy.
        let legacy = score_columns(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(legacy.keys().copied().collect::<Vec<_>>(), Score::LOGIT.to_vec());
        assert_eq!(legacy[&Score::Energy], vec![3.0, 6.0]);
        assert!(score_columns(&[2, 4], &[0.0; 8]).is_none());
    }

    /// A run of base epochs 1-4 (best by validation: 2), two UM blocks (5-6, 7-8) and a control (9-10).
    fn staged_run() -> Vec<EpochRecord> {
        let phases = [(Phase::Base, 0.7), (Phase::Base, 0.9), (Phase::Base, 0.8), (Phase::Base, 0.6), (Phase::Um, 0.95), (Phase::Um, 0.9), (Phase::Um, 0.85), (Phase::Um, 0.96), (Phase::Control, 0.5), (Phase::Control, f64::NAN)];
        let mut recs: Vec<EpochRecord> = phases.iter().enumerate().map(|(k, &(p, a))| scored(k + 1, p, a)).collect();
        for (k, phase_epoch) in [1, 2, 3, 4, 1, 2, 1, 2, 1, 2].into_iter().enumerate() {
            recs[k].phase_epoch = phase_epoch;
        }
        recs
    }

    #[test]
    fn stages_are_best_and_final_base_then_each_fine_tunes_last_epoch() {
        let recs = staged_run();
        let named: Vec<(String, usize)> = stages(&recs).iter().map(|s| (s.name(), s.epoch)).collect();
        let expected = [("best epoch", 2), ("final", 4), ("CE control", 10), ("UM", 8)].map(|(n, e)| (n.to_string(), e));
        assert_eq!(named, expected);
        let titles: Vec<String> = stages(&recs).iter().map(Stage::title).collect();
        assert_eq!(titles, ["best epoch by validation (2)", "final base epoch (4)", "CE control (epoch 10)", "UM (epoch 8)"]);
        assert!(stages(&[]).is_empty());
    }

    #[test]
    fn an_imported_epoch_is_its_own_stage_and_stands_for_best_and_final() {
        let mut recs = vec![scored(1, Phase::Base, 0.7), scored(2, Phase::Um, 0.8)];
        recs[0].imported_from = Some("best.ckpt".into());
        recs[1].from_epoch = 1;
        let titles: Vec<String> = stages(&recs).iter().map(Stage::title).collect();
        assert_eq!(titles, ["imported (epoch 1)", "UM (epoch 2)"]);
        // A base epoch trained after it (not something import makes, but a run may hold it) still shows.
        recs.push(scored(3, Phase::Base, 0.9));
        let named: Vec<(String, usize)> = stages(&recs).iter().map(|s| (s.name(), s.epoch)).collect();
        assert_eq!(named, [("imported", 1), ("best epoch", 3), ("final", 3), ("UM", 2)].map(|(n, e)| (n.to_string(), e)));
    }

    #[test]
    fn block_stages_pick_within_each_block() {
        let recs = staged_run();
        let picks: Vec<(usize, usize)> = phase_blocks(&recs).iter().map(|b| block_stages(&b.2).map(|(last, best)| (last.epoch, best.epoch)).unwrap()).collect();
        // The second UM block's best is its own (8), not the first block's; a block whose
        // validation AUROCs are NaN or lower falls back to what it has.
        assert_eq!(picks, [(4, 2), (6, 5), (8, 8), (10, 9)]);
        let all_nan = [scored(1, Phase::Base, f64::NAN), scored(2, Phase::Base, f64::NAN)];
        let refs: Vec<&EpochRecord> = all_nan.iter().collect();
        assert_eq!(block_stages(&refs).map(|(last, best)| (last.epoch, best.epoch, best.pick)), Some((2, 2, Pick::BestByValidation)));
        assert_eq!(block_stages(&[]), None);
    }

    /// A plain base-epoch record (other tests build on it).
    pub(crate) fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            phase: Phase::Base,
            phase_epoch: epoch,
            from_epoch: 0,
            gamma: None,
            lr_end: 0.01,
            train_loss: 1.0 / epoch as f64,
            train_acc: 0.5,
            train_eval_loss: 0.9,
            test_loss: 1.0,
            test_acc: 0.5,
            val_name: "gaussian".into(),
            val_id_name: "id_val".into(),
            val: ScoreMetrics::new(),
            ood: BTreeMap::new(),
            ood_mean: ScoreMetrics::new(),
            seconds: 1.0,
            samples_per_sec: 1.0,
            detector_problems: Vec::new(),
            imported_from: None,
        }
    }

    fn lines(epochs: &[usize]) -> String {
        epochs.iter().map(|&e| serde_json::to_string(&record(e)).unwrap() + "\n").collect()
    }

    fn parse(text: &str) -> ParsedEvents {
        parse_events(Path::new("run/events.jsonl"), text.as_bytes())
    }

    #[test]
    fn a_sound_file_and_a_partial_last_line_read_without_warnings() {
        let text = lines(&[1, 2, 3]);
        let p = parse(&text);
        assert_eq!((p.records.len(), p.warnings.len(), p.good_len), (3, 0, text.len()));
        let partial = format!("{text}{{\"epoch\":4,\"pha");
        let p = parse(&partial);
        assert_eq!((p.records.len(), p.warnings.len(), p.good_len), (3, 0, text.len()));
        // A whole last record whose newline is missing still counts.
        let p = parse(text.trim_end());
        assert_eq!((p.records.len(), p.warnings.len()), (3, 0));
    }

    #[test]
    fn damage_mid_file_keeps_the_epochs_before_it_and_names_the_line() {
        // Epoch 3 written twice (two writers): 3 is in doubt, so 1-2 are kept.
        let p = parse(&lines(&[1, 2, 3, 3]));
        assert_eq!(p.records.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2]);
        assert!(p.warnings[0].contains("line 4 holds epoch 3 again") && p.warnings[0].contains("events.jsonl"), "{}", p.warnings[0]);
        assert_eq!(p.good_len, lines(&[1, 2]).len());
        // An older epoch repeated further back cuts before its first line.
        let p = parse(&lines(&[1, 2, 3, 4, 2]));
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.good_len, lines(&[1]).len());
        // A gap, and a line that is not a record.
        let p = parse(&lines(&[1, 3, 4]));
        assert_eq!(p.records.len(), 1);
        assert!(p.warnings[0].contains("line 2 holds epoch 3 (expected 2)"), "{}", p.warnings[0]);
        let p = parse(&format!("{}garbage\n{}", lines(&[1, 2]), lines(&[3])));
        assert_eq!(p.records.len(), 2);
        assert!(p.warnings[0].contains("line 3 is not a valid epoch record"), "{}", p.warnings[0]);
        let p = parse(&format!("garbage\n{}", lines(&[1])));
        assert!(p.records.is_empty() && p.good_len == 0 && p.warnings[0].contains("line 1 "));
    }

    #[test]
    fn a_second_lock_on_a_run_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "train").unwrap();
        let e = RunLock::acquire(dir.path(), "um").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("job: train") && e.contains("UTC"), "{e}");
        drop(first);
        let again = RunLock::acquire(dir.path(), "um").unwrap();
        // A parked lock is handed over within the process instead of conflicting.
        again.park();
        assert!(RunLock::acquire(dir.path(), "control").is_ok());
    }

    #[test]
    fn utc_time_is_formatted_as_a_calendar_date() {
        let t = utc_now();
        assert!(t.len() == 23 && t.ends_with(" UTC") && t.starts_with("20"), "{t}");
    }

    #[test]
    fn repair_cuts_to_the_good_prefix_and_keeps_the_original() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let damaged = lines(&[1, 2, 2, 3]);
        std::fs::write(dir.path().join("events.jsonl"), &damaged).unwrap();
        let Repair::Cut { epochs, backup, .. } = repair_events(dir.path()).unwrap() else { panic!("not repaired") };
        assert_eq!(epochs, 1);
        assert_eq!(std::fs::read_to_string(backup).unwrap(), damaged);
        assert_eq!(std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap(), lines(&[1]));
        assert_eq!(repair_events(dir.path()).unwrap(), Repair::Sound { epochs: 1 });
    }

    #[test]
    fn cut_back_keeps_the_first_epochs_bytes_and_folders_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        // A blank line between records, and a partial last line as a kill leaves it.
        let text = format!("{}\n{}{{\"epoch\": 5", lines(&[1, 2]), lines(&[3, 4]));
        std::fs::write(dir.path().join("events.jsonl"), &text).unwrap();
        for e in 1..=5 {
            std::fs::create_dir_all(epoch_dir(dir.path(), e)).unwrap();
        }
        let lock = RunLock::acquire(dir.path(), "test").unwrap();
        cut_back(dir.path(), 3, &lock).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap(), format!("{}\n{}", lines(&[1, 2]), lines(&[3])));
        assert!(epoch_dir(dir.path(), 3).exists() && !epoch_dir(dir.path(), 4).exists() && !epoch_dir(dir.path(), 5).exists());
        // Again, or to more epochs than it has: nothing changes.
        cut_back(dir.path(), 3, &lock).unwrap();
        cut_back(dir.path(), 9, &lock).unwrap();
        assert_eq!(RunReader::open(dir.path()).unwrap().records.len(), 3);
        cut_back(dir.path(), 0, &lock).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap(), "");
        assert!(!epoch_dir(dir.path(), 1).exists());
        std::fs::write(dir.path().join("events.jsonl"), format!("garbage\n{}", lines(&[1]))).unwrap();
        assert!(cut_back(dir.path(), 0, &lock).unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn run_config_reads_the_first_format_and_round_trips_a_new_one() {
        let path = Path::new("run-v1/config.json");
        let old = RunConfig::parse(path, include_bytes!("../tests/fixtures/run-v1/config.json")).unwrap();
        assert_eq!((old.format_version, old.id_val_split.as_ref(), old.msp_stored_as.as_deref()), (1, None, None));
        assert_eq!((old.classes, old.train_samples, old.device.as_deref()), (Some(10), Some(300), Some("CPU (burn flex, 2 threads)")));
        assert_eq!(old.ood, ["mnist", "textures", "gaussian", "uniform"]);
        // Made before the ID validation split: it reopens as it was trained.
        let exp = old.experiment.clone().unwrap();
        assert_eq!((exp.data.id_val_fraction, exp.data.allow_val_test_overlap, exp.train.epochs), (0.0, true, 2));
        // A new config: absent fields stay absent, and it reads back as written.
        let mut new = old.clone();
        new.format_version = FORMAT_VERSION;
        new.id_val_split = Some(IdValSplit { fraction: 0.1, seed: 3, count: 2, indices: vec![4, 9] });
        new.val_test_overlap = Some(ValTestOverlap { allowed: false, clashes: Vec::new() });
        new.experiment.as_mut().unwrap().data.id_val_fraction = 0.1;
        new.experiment.as_mut().unwrap().data.allow_val_test_overlap = false;
        let text = new.to_json().unwrap();
        assert!(!String::from_utf8_lossy(&text).contains("msp_stored_as"));
        assert_eq!(RunConfig::parse(path, &text).unwrap(), new);
        // Bad content is named with its file.
        let e = RunConfig::parse(path, br#"{"classes": "ten"}"#).unwrap_err().to_string();
        assert!(e.contains("run-v1/config.json") && e.contains("\"ten\", expected usize at line 1"), "{e}");
    }

    #[test]
    fn a_newer_format_is_refused_by_number_and_an_absent_one_is_the_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl"), lines(&[1])).unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        assert_eq!(RunReader::open(dir.path()).unwrap().config.format_version, 1);
        std::fs::write(dir.path().join("config.json"), format!("{{\"format_version\": {}}}", FORMAT_VERSION + 1)).unwrap();
        let e = RunReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains(&format!("format version {}", FORMAT_VERSION + 1)), "{e}");
    }

    #[test]
    fn a_writer_refuses_a_run_another_job_extended_since_it_was_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("events.jsonl"), lines(&[1])).unwrap();
        let mut w = RunWriter::append_to(dir.path()).unwrap();
        assert!(!w.holds_lock());
        std::fs::write(dir.path().join("events.jsonl"), lines(&[1, 2])).unwrap();
        let e = w.lock("um").unwrap_err().to_string();
        assert!(e.contains("changed by another job") && e.contains("now holds 2"), "{e}");
    }
}
