//! The mask explorer's choices kept with their run: `app-settings.json` in the run folder holds the
//! mask ratio, kind and snapshot, the table's score, gamma's source and the fine-tune recipe, so
//! that reopening a run shows what was last chosen on it. A run without the file (any run from
//! before it, or one made by the CLI) opens with the defaults; a file that cannot be read is
//! reported, naming it, and the defaults are kept.
//!
//! The file is read and written on a thread of its own, in order, never on the UI thread, and
//! apart from the worker: a write queued behind the worker's jobs would wait for a training, and
//! a command queued there cuts the mask explorer's answer short.

use super::mask::{MaskPanel, MaskSnapshot};
use crate::ood::Score;
use crate::unleash::{GammaSource, MaskKind};
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file's name in the run folder.
pub const FILE: &str = "app-settings.json";

/// What the file holds (every field optional: a field missing takes its default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    pub mask_ratio: f64,
    pub mask_kind: MaskKind,
    pub snapshot: Snapshot,
    pub table_score: Score,
    pub gamma: Gamma,
    pub finetune_epochs: usize,
    pub finetune_lr: f64,
    pub umap_prune_ratio: f64,
    pub sweep_clipped: bool,
}

/// [`MaskSnapshot`] as the file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Snapshot {
    LastBase,
    BestByValidation,
    Epoch(usize),
}

/// [`GammaSource`] as the file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gamma {
    MaskRatio,
    Quantile(f64),
    EpochLoss(usize),
    Manual(f64),
}

impl Default for RunSettings {
    fn default() -> RunSettings {
        RunSettings::of(&MaskPanel::default())
    }
}

impl RunSettings {
    /// The choices the panel shows now.
    pub fn of(panel: &MaskPanel) -> RunSettings {
        RunSettings {
            mask_ratio: panel.ratio,
            mask_kind: panel.kind,
            snapshot: match panel.snapshot {
                MaskSnapshot::LastBase => Snapshot::LastBase,
                MaskSnapshot::BestByValidation => Snapshot::BestByValidation,
                MaskSnapshot::Epoch(e) => Snapshot::Epoch(e),
            },
            table_score: panel.table_score,
            gamma: match panel.gamma_source {
                GammaSource::MaskRatio => Gamma::MaskRatio,
                GammaSource::Quantile(q) => Gamma::Quantile(q),
                GammaSource::EpochLoss(e) => Gamma::EpochLoss(e),
                GammaSource::Manual(g) => Gamma::Manual(g),
            },
            finetune_epochs: panel.ft_epochs,
            finetune_lr: panel.ft_lr,
            umap_prune_ratio: panel.prune_ratio,
            sweep_clipped: panel.sweep_clipped,
        }
    }

    /// Sets the panel's choices to these.
    pub fn apply(&self, panel: &mut MaskPanel) {
        panel.ratio = self.mask_ratio;
        panel.kind = self.mask_kind;
        panel.snapshot = match self.snapshot {
            Snapshot::LastBase => MaskSnapshot::LastBase,
            Snapshot::BestByValidation => MaskSnapshot::BestByValidation,
            Snapshot::Epoch(e) => MaskSnapshot::Epoch(e),
        };
        panel.table_score = self.table_score;
        panel.gamma_source = match self.gamma {
            Gamma::MaskRatio => GammaSource::MaskRatio,
            Gamma::Quantile(q) => GammaSource::Quantile(q),
            Gamma::EpochLoss(e) => GammaSource::EpochLoss(e),
            Gamma::Manual(g) => GammaSource::Manual(g),
        };
        panel.ft_epochs = self.finetune_epochs;
        panel.ft_lr = self.finetune_lr;
        panel.prune_ratio = self.umap_prune_ratio;
        panel.sweep_clipped = self.sweep_clipped;
    }

    /// The first value outside what the panel's controls allow, named.
    fn check(&self) -> Result<(), String> {
        let out = |field: &str, v: String, range: &str| Err(format!("{field} {v} is outside {range}"));
        if !(0.0..=0.95).contains(&self.mask_ratio) {
            return out("mask_ratio", self.mask_ratio.to_string(), "0 to 0.95");
        }
        if !(1..=500).contains(&self.finetune_epochs) {
            return out("finetune_epochs", self.finetune_epochs.to_string(), "1 to 500");
        }
        if !(1e-5..=1.0).contains(&self.finetune_lr) {
            return out("finetune_lr", self.finetune_lr.to_string(), "1e-5 to 1");
        }
        if !(0.0..=0.99).contains(&self.umap_prune_ratio) {
            return out("umap_prune_ratio", self.umap_prune_ratio.to_string(), "0 to 0.99");
        }
        match (self.gamma, self.snapshot) {
            (Gamma::Quantile(q), _) if !(0.5..=0.999).contains(&q) => out("gamma quantile", q.to_string(), "0.5 to 0.999"),
            (Gamma::Manual(g), _) if !(0.0..=3.0).contains(&g) => out("gamma manual", g.to_string(), "0 to 3"),
            (Gamma::EpochLoss(0), _) => out("gamma epoch_loss", "0".into(), "the epochs (from 1)"),
            (_, Snapshot::Epoch(0)) => out("snapshot epoch", "0".into(), "the epochs (from 1)"),
            _ => Ok(()),
        }
    }
}

/// The settings of run folder `dir`: None when it has no file; an error naming the file and what
/// is wrong with it.
pub fn read(dir: &Path) -> Result<Option<RunSettings>, String> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot be read: {e}", path.display())),
    };
    let settings: RunSettings = serde_json::from_str(&text).map_err(|e| format!("{}: not valid app settings: {e}", path.display()))?;
    settings.check().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(settings))
}

/// Writes the settings of run folder `dir`, atomically.
pub fn write(dir: &Path, settings: &RunSettings) -> Result<(), String> {
    let path = dir.join(FILE);
    let json = serde_json::to_string_pretty(settings).map_err(|e| e.to_string())?;
    crate::fsio::write_atomic(&path, json.as_bytes()).map_err(|e| format!("{}: cannot be written: {e}", path.display()))
}

enum Job {
    Read(PathBuf),
    Write(PathBuf, RunSettings),
}

/// What the settings thread reports.
#[derive(Debug)]
pub enum Reply {
    Read(PathBuf, Result<Option<RunSettings>, String>),
    WriteFailed(String),
}

/// The settings thread: jobs in, in order; replies out. It ends when this is dropped.
pub struct SettingsIo {
    jobs: Sender<Job>,
    pub replies: Receiver<Reply>,
}

impl SettingsIo {
    pub fn spawn() -> SettingsIo {
        let (jobs, inbox) = crossbeam_channel::unbounded::<Job>();
        let (outbox, replies) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("app-settings".into())
            .spawn(move || {
                for job in inbox {
                    let reply = match job {
                        Job::Read(dir) => {
                            let read = read(&dir);
                            Some(Reply::Read(dir, read))
                        }
                        Job::Write(dir, settings) => write(&dir, &settings).err().map(Reply::WriteFailed),
                    };
                    // The app is gone: so is the need for this thread.
                    if reply.is_some_and(|reply| outbox.send(reply).is_err()) {
                        return;
                    }
                }
            })
            .expect("spawning the app-settings thread");
        SettingsIo { jobs, replies }
    }

    pub fn read(&self, dir: PathBuf) {
        let _ = self.jobs.send(Job::Read(dir));
    }

    pub fn write(&self, dir: PathBuf, settings: RunSettings) {
        let _ = self.jobs.send(Job::Write(dir, settings));
    }
}

/// Which run's settings the panel follows, and what was last saved there.
#[derive(Default)]
pub struct Tracker {
    /// The run folder whose settings the panel shows and saves.
    pub run: Option<PathBuf>,
    /// Asked for this run's file, answer not in yet: nothing is saved until it is (saving the
    /// defaults first would overwrite the choices being restored).
    pub reading: Option<PathBuf>,
    /// What the file holds as far as this session knows (None: nothing yet, save what is shown).
    pub saved: Option<RunSettings>,
}

impl Tracker {
    /// A run was opened: read its file.
    pub fn opened(&mut self, io: &SettingsIo, dir: PathBuf) {
        self.run = None;
        self.reading = Some(dir.clone());
        io.read(dir);
    }

    /// A fresh run starts in `dir`: what the panel shows is saved there once it has an epoch.
    pub fn started(&mut self, dir: PathBuf) {
        (self.run, self.reading, self.saved) = (Some(dir), None, None);
    }

    /// The file of `dir` read: its settings go to the panel; returns the error to report, if any.
    pub fn answered(&mut self, dir: PathBuf, read: Result<Option<RunSettings>, String>, panel: &mut MaskPanel) -> Option<String> {
        if self.reading.as_ref() != Some(&dir) {
            return None;
        }
        self.reading = None;
        self.run = Some(dir);
        let (saved, problem) = match read {
            Ok(Some(s)) => {
                s.apply(panel);
                (s, None)
            }
            // No file: nothing to restore; a file appears once a choice changes.
            Ok(None) => (RunSettings::of(panel), None),
            Err(e) => (RunSettings::of(panel), Some(format!("{e}; the mask settings were left as they were"))),
        };
        self.saved = Some(saved);
        problem
    }

    /// What to write, and where, when the panel's choices differ from what was saved in the open
    /// run `open` (which must have an epoch: its folder exists).
    pub fn changes_to_save(&mut self, open: Option<&Path>, panel: &MaskPanel) -> Option<(PathBuf, RunSettings)> {
        let run = self.run.as_deref().filter(|r| Some(*r) == open && self.reading.is_none())?;
        let now = RunSettings::of(panel);
        if self.saved.as_ref() == Some(&now) {
            return None;
        }
        self.saved = Some(now.clone());
        Some((run.to_path_buf(), now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen() -> MaskPanel {
        let mut panel = MaskPanel::default();
        (panel.ratio, panel.kind, panel.snapshot, panel.table_score) = (0.2, MaskKind::Random, MaskSnapshot::Epoch(3), Score::Knn);
        (panel.gamma_source, panel.ft_epochs, panel.ft_lr, panel.prune_ratio, panel.sweep_clipped) = (GammaSource::Quantile(0.8), 4, 0.01, 0.3, true);
        panel
    }

    #[test]
    fn the_choices_go_through_the_file_and_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None), "a run from before the file opens without it");
        write(dir.path(), &RunSettings::of(&chosen())).unwrap();
        let back = read(dir.path()).unwrap().unwrap();
        let mut panel = MaskPanel::default();
        back.apply(&mut panel);
        assert_eq!(RunSettings::of(&panel), RunSettings::of(&chosen()));
        assert_ne!(RunSettings::of(&panel), RunSettings::default());
    }

    #[test]
    fn a_bad_file_is_refused_naming_it_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        for (text, problem) in [("{", "not valid app settings"), (r#"{"mask_ratio": 3.0}"#, "mask_ratio 3 is outside 0 to 0.95"), (r#"{"finetune_epochs": 0}"#, "finetune_epochs 0 is outside"), (r#"{"ratio": 0.2}"#, "unknown field `ratio`")] {
            std::fs::write(&path, text).unwrap();
            let e = read(dir.path()).unwrap_err();
            assert!(e.starts_with(&path.display().to_string()) && e.contains(problem), "{text}: {e}");
        }
        // A field left out takes its default.
        std::fs::write(&path, r#"{"mask_ratio": 0.1}"#).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(RunSettings { mask_ratio: 0.1, ..RunSettings::default() }));
    }

    #[test]
    fn nothing_is_saved_before_the_runs_file_is_read_nor_twice() {
        let (io, mut tracker, mut panel) = (SettingsIo::spawn(), Tracker::default(), chosen());
        let dir = PathBuf::from("run");
        tracker.opened(&io, dir.clone());
        assert_eq!(tracker.changes_to_save(Some(&dir), &panel), None, "the defaults would overwrite the file being read");
        let stored = RunSettings { mask_ratio: 0.05, ..RunSettings::default() };
        assert_eq!(tracker.answered(dir.clone(), Ok(Some(stored.clone())), &mut panel), None);
        assert_eq!(RunSettings::of(&panel), stored);
        assert_eq!(tracker.changes_to_save(Some(&dir), &panel), None, "nothing changed since it was read");
        panel.ratio = 0.3;
        assert_eq!(tracker.changes_to_save(Some(&dir), &panel).map(|(d, s)| (d, s.mask_ratio)), Some((dir.clone(), 0.3)));
        assert_eq!(tracker.changes_to_save(Some(&dir), &panel), None);
        // Another run shown: not this one's to save.
        panel.ratio = 0.4;
        assert_eq!(tracker.changes_to_save(Some(Path::new("other")), &panel), None);
        // A bad file: reported, the panel left as it is.
        tracker.opened(&io, dir.clone());
        let e = tracker.answered(dir, Err("run/app-settings.json: not valid app settings".into()), &mut panel);
        assert_eq!(panel.ratio, 0.4);
        assert!(e.unwrap().contains("run/app-settings.json"));
    }
}
