//! The mask explorer's jobs: a mask request (preview, then gamma and the atypical set, then the
//! masked model's detection), the sweep computed between commands, and its cache in the run folder.

use super::{Command, Job, DEFAULT_SWEEP_POINTS, MaskRequest, Repaint, Worker, WorkerEvent};
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::train::Session;
use crate::unleash::probe::{self, MaskProbe};
use crate::unleash::{Detection, MaskKind, MaskSweepPoint, PreviewSize};
use crossbeam_channel::{Receiver, Sender};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether a mask request got as far as its complete answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completed {
    Yes,
    No,
}

/// A sweep in progress.
pub(super) struct SweepJob {
    epoch: usize,
    kind: MaskKind,
    ratios: Vec<f64>,
    points: Vec<MaskSweepPoint>,
}

/// Snapshots kept under the mask explorer at once (the user compares two stages; a third is the
/// one being swept).
const PROBES_KEPT: usize = 3;

impl Worker {
    /// A mask request; one cut short by a newer command is said to be, so that the UI can ask
    /// again once that command is done.
    pub(super) fn mask_command(&mut self, req: MaskRequest) -> Result<()> {
        match self.mask(req) {
            Ok(Completed::Yes) => Ok(()),
            Ok(Completed::No) | Err(Error::Superseded) => {
                self.emit(WorkerEvent::MaskCutShort { request: req.id });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn sweep_command(&mut self, ratios: Vec<f64>, kind: MaskKind, epoch: Option<usize>) -> Result<()> {
        let epoch = self.mask_epoch(epoch)?;
        self.start_sweep(epoch, kind, ratios);
        Ok(())
    }

    /// The snapshot a mask applies to: the one asked for, or the last base epoch.
    fn mask_epoch(&self, epoch: Option<usize>) -> Result<usize> {
        let s = self.session()?;
        let epoch = epoch.or_else(|| crate::run::last_base_epoch(&s.records)).unwrap_or(s.records.len());
        if epoch == 0 || epoch > s.records.len() {
            return Err(Error::Other(format!("no epoch {epoch} to mask (complete epochs: 1 to {})", s.records.len())));
        }
        Ok(epoch)
    }

    /// The probe of snapshot `epoch` (built, with its snapshot loaded, on first use).
    fn probe(&mut self, epoch: usize) -> Result<&mut MaskProbe> {
        if let Some(i) = self.probes.iter().position(|p| p.epoch == epoch) {
            let p = self.probes.remove(i);
            self.probes.push(p);
        } else {
            let s = self.session.as_ref().ok_or_else(|| Error::Other("no model yet: train one or open a run with its data".into()))?;
            let model = snapshot_model(s, epoch)?;
            let preview = self.preview_sets.get_or_insert_with(|| Arc::new(probe::PreviewSets::new(&s.sets, PreviewSize::default()))).clone();
            let p = s.mask_probe(model, epoch, preview);
            if self.probes.len() >= PROBES_KEPT {
                self.probes.remove(0);
            }
            self.probes.push(p);
        }
        Ok(self.probes.last_mut().expect("pushed above"))
    }

    /// Progress of a pass: reported (coalesced by the UI), stoppable, and, when `preemptible`,
    /// abandoned as soon as a newer command waits.
    fn progress<'a>(events: &'a Sender<WorkerEvent>, control: &'a Control, inbox: &'a Receiver<Command>, label: String, epoch: usize, preemptible: bool) -> impl FnMut(usize, usize) -> Result<()> + 'a {
        move |done, total| {
            let _ = events.send(WorkerEvent::Engine(Event::Evaluating { epoch, set: label.clone(), done, total }));
            control.checkpoint()?;
            if preemptible && !inbox.is_empty() { Err(Error::Superseded) } else { Ok(()) }
        }
    }

    /// A mask request: a preview on the probe's subsets, then gamma and the atypical set on the
    /// whole training set, then the masked test accuracy and OOD detection. Each stage is
    /// reported as it ends; a newer command waiting ends the request early.
    fn mask(&mut self, req: MaskRequest) -> Result<Completed> {
        crate::config::check_mask_ratio(req.ratio)?;
        let epoch = self.mask_epoch(req.epoch)?;
        self.emit(WorkerEvent::Busy(Job::Mask { ratio: req.ratio, epoch }));
        let sets = self.session()?.sets.clone();
        let (events, control, inbox) = (self.events.clone(), self.control.clone(), self.inbox.clone());
        let (ratio, kind) = (req.ratio, req.kind);
        let superseded = || !inbox.is_empty();
        let probe = self.probe(epoch)?;
        let masked = probe.masked(ratio, kind, 0)?;
        let preview = probe.preview(&masked, ratio, kind)?;
        let _ = events.send(WorkerEvent::MaskAnswer { request: req.id, answer: Arc::new(preview) });
        (self.repaint)(Repaint::Now);
        if superseded() {
            return Ok(Completed::No);
        }
        let label = format!("mask {ratio:.3}");
        let probe = self.probe(epoch)?;
        // The unmasked reference is computed once per snapshot: not abandoned midway.
        probe.full_detection(&sets, &mut Self::progress(&events, &control, &inbox, format!("{label}: unmasked reference"), epoch, false))?;
        let set = Arc::new(probe.gamma_at(&masked, ratio, kind, &sets, &mut Self::progress(&events, &control, &inbox, label.clone(), epoch, true))?);
        // What the UI now shows is what an export writes, even if the detection pass is cut short.
        self.last_mask = Some(set.clone());
        self.emit(WorkerEvent::MaskAnswer { request: req.id, answer: set });
        if superseded() {
            return Ok(Completed::No);
        }
        let repaint = self.repaint.clone();
        let mut first_part = |detection: Detection| {
            let _ = events.send(WorkerEvent::MaskDetection { request: req.id, detection: Arc::new(detection) });
            repaint(Repaint::Now);
            Ok(())
        };
        let probe = self.probe(epoch)?;
        let mut progress = Self::progress(&events, &control, &inbox, label, epoch, true);
        let detection = probe.detection_in_order(&masked, &sets, Some(req.score), &mut progress, &mut first_part)?;
        self.emit(WorkerEvent::MaskDetection { request: req.id, detection: Arc::new(detection) });
        Ok(Completed::Yes)
    }

    /// The default sweep of a snapshot: from the run folder's cache when there, else computed
    /// between commands.
    pub(super) fn start_default_sweep(&mut self, epoch: usize) {
        let kind = MaskKind::Magnitude;
        if let Some(points) = self.run_dir.as_deref().and_then(|d| read_sweep_cache(d, epoch, kind)) {
            self.emit(WorkerEvent::Sweep { epoch, kind, points, complete: true });
            return;
        }
        self.start_sweep(epoch, kind, probe::default_sweep_ratios(DEFAULT_SWEEP_POINTS));
    }

    fn start_sweep(&mut self, epoch: usize, kind: MaskKind, ratios: Vec<f64>) {
        self.emit(WorkerEvent::Sweep { epoch, kind, points: Vec::new(), complete: false });
        self.emit(WorkerEvent::Background(Some(Job::Sweep { epoch, done: 0, total: ratios.len() })));
        self.sweep = Some(SweepJob { epoch, kind, ratios, points: Vec::new() });
    }

    /// One ratio of the sweep in progress. A command arriving meanwhile preempts it (the ratio is
    /// redone later); an error ends the sweep and is reported.
    pub(super) fn sweep_step(&mut self) {
        self.control.reset();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sweep_next()));
        match result {
            Ok(Err(Error::Superseded)) => return,
            Ok(Ok(())) => {}
            other => {
                self.sweep = None;
                self.report(other);
            }
        }
        if self.sweep.is_none() {
            self.emit(WorkerEvent::Background(None));
        }
    }

    fn sweep_next(&mut self) -> Result<()> {
        let Some(job) = self.sweep.as_ref() else { return Ok(()) };
        let (epoch, kind, ratio) = (job.epoch, job.kind, job.ratios[job.points.len()]);
        let total = job.ratios.len();
        let sets = self.session()?.sets.clone();
        let (events, control, inbox) = (self.events.clone(), self.control.clone(), self.inbox.clone());
        let probe = self.probe(epoch)?;
        let answer = probe.answer(ratio, kind, 0, &sets, &mut Self::progress(&events, &control, &inbox, format!("sweep {ratio:.3}"), epoch, true))?;
        let job = self.sweep.as_mut().expect("checked above");
        job.points.push(answer.sweep_point());
        let complete = job.points.len() == total;
        let points = job.points.clone();
        if complete {
            // Cached first, so that whoever sees the complete sweep can count on the file.
            self.sweep = None;
            if let Some(dir) = &self.run_dir {
                if let Err(e) = write_sweep_cache(dir, epoch, kind, &points) {
                    self.engine(Event::Info(format!("the sweep is not cached: {e}")));
                }
            }
        } else {
            self.emit(WorkerEvent::Background(Some(Job::Sweep { epoch, done: points.len(), total })));
        }
        self.emit(WorkerEvent::Sweep { epoch, kind, points, complete });
        Ok(())
    }

}

/// The inference model of snapshot `epoch` (see [`Session::snapshot_model`]); a session without a
/// run folder has only its current model, the last epoch's.
fn snapshot_model(s: &Session, epoch: usize) -> Result<crate::model::Net> {
    match &s.writer {
        Some(_) => s.snapshot_model(epoch),
        None if epoch == s.records.len() => Ok(s.inference_model()),
        None => Err(Error::Other(format!("epoch {epoch} has no snapshot (no run folder)"))),
    }
}

/// Where a snapshot's sweep is cached: `mask/sweep_e<epoch>_<kind>.json` in the run folder.
pub fn sweep_cache_path(run: &Path, epoch: usize, kind: MaskKind) -> PathBuf {
    run.join("mask").join(format!("sweep_e{epoch}_{}.json", kind.key()))
}

fn read_sweep_cache(run: &Path, epoch: usize, kind: MaskKind) -> Option<Vec<MaskSweepPoint>> {
    let bytes = std::fs::read(sweep_cache_path(run, epoch, kind)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    // A cache from another snapshot or mask kind (a folder copied around) is ignored.
    if v["epoch"].as_u64() != Some(epoch as u64) || v["kind"].as_str() != Some(kind.key()) {
        return None;
    }
    serde_json::from_value(v["points"].clone()).ok()
}

fn write_sweep_cache(run: &Path, epoch: usize, kind: MaskKind, points: &[MaskSweepPoint]) -> Result<()> {
    let path = sweep_cache_path(run, epoch, kind);
    let dir = path.parent().expect("a file in mask/");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    let json = serde_json::json!({"epoch": epoch, "kind": kind.key(), "points": points});
    crate::fsio::write_atomic(&path, serde_json::to_string_pretty(&json).map_err(|e| Error::Other(e.to_string()))?.as_bytes())
}
