//! The background worker: one thread owns the session (and so the model: burn modules are Send,
//! not Sync). It takes `Command`s and sends `WorkerEvent`s over crossbeam channels, calling a
//! repaint hook after each event. Pause and stop go through shared atomics, so the UI never waits
//! on it.
//!
//! Ordering rules (tested): commands run one at a time in arrival order; a Stop or Pause with no
//! job running is a no-op (the next job clears them); mask requests are coalesced: only the latest
//! queued one runs, and one that is being computed gives way as soon as a newer command arrives;
//! a job command while another job runs waits its turn; a panic inside a job is caught, reported
//! as an error event, and the worker goes on.
//!
//! Between commands the worker computes the mask sweep of the snapshot a base phase ended on (or
//! a reopened run's), one ratio at a time: a command that arrives preempts it between batches, and
//! the sweep goes on once the worker is idle again. A finished sweep is cached in the run folder.
//!
//! Reads of a run folder that need no session (a stage's score arrays, for the compare view) go
//! to a second thread, the reader, so that a job in progress does not hold them up: run folders
//! are made to be read while they are written.

use crate::config::ExperimentConfig;
use crate::data::DataBundle;
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::run::{EpochRecord, Phase, RunReader};
use crate::train::{Finetune, PhaseSpec, Session};
use crate::unleash::probe::{self, MaskProbe};
use crate::unleash::{AtypicalSet, Detection, MaskKind, MaskSweepPoint, PreviewSize};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many ratios the sweep computed without asking has.
pub const DEFAULT_SWEEP_POINTS: usize = 12;

#[derive(Debug, Clone)]
pub enum Command {
    /// Load the data, start a fresh model and train it (base phase), writing `out`.
    Train { config: ExperimentConfig, out: PathBuf },
    /// UM / UMAP / plain-CE fine-tune of the current run, from `from_epoch` (default: last base).
    Finetune { kind: Finetune, gamma: f64, epochs: usize, lr: f64, prune_ratio: f64, from_epoch: Option<usize> },
    /// gamma, atypical set, masked accuracy and OOD detection at a ratio, on a snapshot.
    Mask(MaskRequest),
    /// The sweep over `ratios` (computed between commands, like the default one).
    Sweep { ratios: Vec<f64>, kind: MaskKind, epoch: Option<usize> },
    /// Reopen a run folder (from the CLI or the app).
    OpenRun(PathBuf),
    /// Open an interrupted run and continue its base training from its last complete epoch
    /// (same numbers as if it had never stopped; see `unleash train --resume`).
    Resume(PathBuf),
    /// Find out which device a choice resolves to (reported as [`WorkerEvent::Device`]).
    ProbeDevice(crate::config::DeviceChoice),
    Export(ExportRequest),
    /// Panics on purpose (tests of the error path).
    #[doc(hidden)]
    Crash,
    Shutdown,
}

/// One question to the mask explorer; `id` comes back with every answer to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskRequest {
    pub id: u64,
    pub ratio: f64,
    pub kind: MaskKind,
    /// The snapshot to mask (default: the last base epoch).
    pub epoch: Option<usize>,
}

/// What to export and where (paths come from save dialogs, or from tests directly).
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub model: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub atypical_csv: Option<PathBuf>,
    pub contact_sheet: Option<PathBuf>,
    /// Create the files' missing folders (the app's own path question offers `<run>/export/`).
    pub create_folder: bool,
}

/// A question to the reader: one set's score arrays at an epoch of a run folder, answered by
/// [`WorkerEvent::Scores`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScoresRequest {
    pub run: PathBuf,
    pub epoch: usize,
    pub set: String,
}

/// Score arrays per score, as [`RunReader::scores`] reads them.
pub type ScoreArrays = std::collections::BTreeMap<crate::ood::Score, Vec<f32>>;

/// What the worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Sent by the UI; the worker has not begun it yet.
    Starting,
    LoadingData,
    Training(Phase),
    /// Masking a snapshot at a ratio.
    Mask { ratio: f64, epoch: usize },
    /// The sweep of a snapshot: `done` of `total` ratios.
    Sweep { epoch: usize, done: usize, total: usize },
    OpeningRun(PathBuf),
    Exporting,
    ProbingDevice,
}

impl Job {
    pub fn describe(&self) -> String {
        match self {
            Job::Starting => "starting".into(),
            Job::LoadingData => "loading data".into(),
            Job::Training(p) => format!("{} training", p.name()),
            Job::Mask { ratio, epoch } => format!("masking epoch {epoch} at ratio {ratio:.3}"),
            Job::Sweep { epoch, done, total } => format!("mask sweep of epoch {epoch}: {done}/{total} ratios"),
            Job::OpeningRun(dir) => format!("opening {}", dir.display()),
            Job::Exporting => "exporting".into(),
            Job::ProbingDevice => "probing the device".into(),
        }
    }
}

/// The events the GUI gets: the engine's, and the worker's own.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    Engine(Event),
    /// A session is ready: its data (for thumbnails), class names, device and run folder.
    SessionReady { data: Arc<DataBundle>, class_names: Vec<String>, device: String, run_dir: Option<PathBuf> },
    /// A run was (re)opened: its history so far.
    RunLoaded { dir: PathBuf, records: Vec<EpochRecord>, loss_rows: Vec<Arc<Vec<f32>>>, config: Box<ExperimentConfig> },
    /// The device a choice resolved to.
    Device(String),
    /// A job started (the busy indicator); `Engine(Event::Idle)` ends it.
    Busy(Job),
    /// Work between commands (the sweep), or None when there is none.
    Background(Option<Job>),
    /// An answer to mask request `request`: first a preview (`answer.preview` is Some), then the
    /// complete gamma and atypical set (its `masked_detection` follows in `MaskDetection`).
    MaskAnswer { request: u64, answer: Arc<AtypicalSet> },
    /// The masked model's test accuracy and OOD detection on the complete sets, for `request`.
    MaskDetection { request: u64, detection: Arc<Detection> },
    /// Request `request` stopped before its complete answer: a newer command was waiting.
    MaskCutShort { request: u64 },
    /// Sweep points so far for a snapshot and mask kind (`complete` once every ratio is in).
    Sweep { epoch: usize, kind: MaskKind, points: Vec<MaskSweepPoint>, complete: bool },
    /// The reader's answer to `request`: the arrays, or why they cannot be read.
    Scores { request: ScoresRequest, scores: std::result::Result<Arc<ScoreArrays>, String> },
}

pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<WorkerEvent>,
    pub control: Arc<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The reader's queue (None once dropped, which ends the reader).
    reads: Option<Sender<ScoresRequest>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn send(&self, c: Command) {
        // The worker only stops on Shutdown; a closed channel means it is gone and the UI says so.
        let _ = self.commands.send(c);
    }

    /// Asks the reader for score arrays; false when it is gone.
    pub fn read_scores(&self, request: ScoresRequest) -> bool {
        self.reads.as_ref().is_some_and(|r| r.send(request).is_ok())
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.control.request_stop();
        let _ = self.commands.send(Command::Shutdown);
        self.reads = None;
        for t in [self.thread.take(), self.reader.take()].into_iter().flatten() {
            let _ = t.join();
        }
    }
}

/// How urgently the UI should redraw after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repaint {
    /// Something the user waits for (an epoch, a mask answer, an error, idle).
    Now,
    /// Progress within a pass or a batch: a redraw within ~100 ms is plenty, and coalescing them
    /// keeps the UI's own cost off the training threads.
    Soon,
}

/// Starts the worker and its reader; `repaint` is called after every event (the GUI passes
/// ctx.request_repaint or request_repaint_after).
pub fn spawn(repaint: impl Fn(Repaint) + Send + Sync + 'static) -> WorkerHandle {
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let (read_tx, read_rx) = crossbeam_channel::unbounded();
    let control = Control::new();
    let c2 = control.clone();
    let repaint: Arc<dyn Fn(Repaint) + Send + Sync> = Arc::new(repaint);
    let (reader_events, reader_repaint) = (ev_tx.clone(), repaint.clone());
    let reader = std::thread::Builder::new()
        .name("unleash-reader".into())
        .spawn(move || serve_reads(&read_rx, &reader_events, reader_repaint.as_ref()))
        .expect("spawning the reader thread");
    let thread = std::thread::Builder::new()
        .name("unleash-worker".into())
        .spawn(move || {
            let worker = Worker {
                session: None,
                inbox: cmd_rx.clone(),
                probes: Vec::new(),
                preview_sets: None,
                sweep: None,
                run_dir: None,
                last_mask: None,
                control: c2,
                events: ev_tx,
                repaint,
            };
            worker.run(cmd_rx)
        })
        .expect("spawning the worker thread");
    WorkerHandle { commands: cmd_tx, events: ev_rx, control, thread: Some(thread), reads: Some(read_tx), reader: Some(reader) }
}

/// The reader: answers each request with [`RunReader::scores`], until the handle is dropped.
fn serve_reads(requests: &Receiver<ScoresRequest>, events: &Sender<WorkerEvent>, repaint: &(dyn Fn(Repaint) + Send + Sync)) {
    for request in requests {
        let scores = RunReader::open(&request.run).and_then(|r| r.scores(request.epoch, &request.set)).map(Arc::new).map_err(|e| e.to_string());
        let _ = events.send(WorkerEvent::Scores { request, scores });
        repaint(Repaint::Now);
    }
}

/// Whether a mask request got as far as its complete answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completed {
    Yes,
    No,
}

/// A sweep in progress.
struct SweepJob {
    epoch: usize,
    kind: MaskKind,
    ratios: Vec<f64>,
    points: Vec<MaskSweepPoint>,
}

/// Snapshots kept under the mask explorer at once (the user compares two stages; a third is the
/// one being swept).
const PROBES_KEPT: usize = 3;

struct Worker {
    session: Option<Session>,
    /// The command queue, to see whether a newer command is already waiting.
    inbox: Receiver<Command>,
    /// The snapshots masks were applied to, most recent last.
    probes: Vec<MaskProbe>,
    /// The session's preview subsets, shared by its probes.
    preview_sets: Option<Arc<probe::PreviewSets>>,
    sweep: Option<SweepJob>,
    run_dir: Option<PathBuf>,
    /// The latest complete atypical set (what the export of CSV / contact sheet writes).
    last_mask: Option<Arc<AtypicalSet>>,
    control: Arc<Control>,
    events: Sender<WorkerEvent>,
    repaint: Arc<dyn Fn(Repaint) + Send + Sync>,
}

/// The events whose redraw can wait a little.
fn urgency(e: &WorkerEvent) -> Repaint {
    match e {
        WorkerEvent::Engine(Event::Batch(_) | Event::Evaluating { .. }) => Repaint::Soon,
        _ => Repaint::Now,
    }
}

impl Worker {
    fn emit(&self, e: WorkerEvent) {
        let urgency = urgency(&e);
        let _ = self.events.send(e);
        (self.repaint)(urgency);
    }

    fn engine(&self, e: Event) {
        self.emit(WorkerEvent::Engine(e));
    }

    fn run(mut self, commands: Receiver<Command>) {
        loop {
            let next = if self.sweep.is_some() {
                match commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match commands.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                }
            };
            let Some(mut cmd) = next else {
                self.sweep_step();
                continue;
            };
            // Coalesce mask requests: a slider drag queues many; only the latest matters.
            if matches!(cmd, Command::Mask(_)) {
                while let Some(next) = commands.try_iter().next() {
                    if matches!(next, Command::Mask(_)) {
                        cmd = next;
                    } else {
                        self.handle_caught(cmd);
                        cmd = next;
                        break;
                    }
                }
            }
            if matches!(cmd, Command::Shutdown) {
                break;
            }
            self.handle_caught(cmd);
        }
    }

    fn handle_caught(&mut self, cmd: Command) {
        if matches!(cmd, Command::Shutdown) {
            return;
        }
        self.control.reset();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(cmd)));
        self.report(result);
        self.engine(Event::Idle);
    }

    /// Turns a job's outcome into events.
    fn report(&self, result: std::thread::Result<Result<()>>) {
        match result {
            Ok(Ok(())) | Ok(Err(Error::Superseded)) => {}
            Ok(Err(Error::Stopped)) => self.engine(Event::Info("stopped".into())),
            Ok(Err(e)) => self.engine(Event::Error(e.to_string())),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                self.engine(Event::Error(format!("the worker failed: {msg} (the run folder keeps every finished epoch)")));
            }
        }
    }

    fn session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or_else(|| Error::Other("no model yet: train one or open a run with its data".into()))
    }

    fn handle(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::Train { config, out } => self.train(config, out),
            Command::Finetune { kind, gamma, epochs, lr, prune_ratio, from_epoch } => self.finetune(kind, gamma, epochs, lr, prune_ratio, from_epoch),
            Command::Mask(req) => match self.mask(req) {
                Ok(Completed::Yes) => Ok(()),
                Ok(Completed::No) | Err(Error::Superseded) => {
                    // Said, so that the UI can ask again once the newer command is done.
                    self.emit(WorkerEvent::MaskCutShort { request: req.id });
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Command::Sweep { ratios, kind, epoch } => {
                let epoch = self.mask_epoch(epoch)?;
                self.start_sweep(epoch, kind, ratios);
                Ok(())
            }
            Command::OpenRun(dir) => self.open_run(dir),
            Command::Resume(dir) => self.resume(dir),
            Command::ProbeDevice(choice) => {
                self.emit(WorkerEvent::Busy(Job::ProbingDevice));
                let d = crate::device::resolve(choice)?;
                self.emit(WorkerEvent::Device(d.description));
                Ok(())
            }
            Command::Export(req) => self.export(req),
            Command::Crash => panic!("crash requested"),
            Command::Shutdown => Ok(()),
        }
    }

    fn train(&mut self, config: ExperimentConfig, out: PathBuf) -> Result<()> {
        self.emit(WorkerEvent::Busy(Job::LoadingData));
        let s = Session::open(config.clone(), Some(&out))?;
        let data = s.data.clone();
        for w in &data.warnings {
            self.engine(Event::Info(w.clone()));
        }
        self.forget_run();
        self.run_dir = Some(out.clone());
        let class_names = self.class_names(&s);
        self.emit(WorkerEvent::SessionReady { data, class_names, device: s.device.description.clone(), run_dir: Some(out) });
        let spec = PhaseSpec::base(&config.train);
        self.session = Some(s);
        let result = self.run_phase(spec);
        // Even a stopped base phase leaves epochs worth exploring.
        if let Some(epoch) = self.session.as_ref().and_then(|s| crate::run::last_base_epoch(&s.records)) {
            self.start_default_sweep(epoch);
        }
        result
    }

    fn run_phase(&mut self, spec: PhaseSpec) -> Result<()> {
        self.run_phase_or_resume(spec, false)
    }

    /// Runs a phase, or (`resume`) continues an interrupted one from the run's last epoch.
    fn run_phase_or_resume(&mut self, spec: PhaseSpec, resume: bool) -> Result<()> {
        self.emit(WorkerEvent::Busy(Job::Training(spec.phase)));
        let events = self.events.clone();
        let control = self.control.clone();
        let s = self.session.as_mut().ok_or_else(|| Error::Other("no session".into()))?;
        let repaint = &self.repaint;
        let phase = spec.phase;
        let mut sink = |e| {
            let e = WorkerEvent::Engine(e);
            let urgency = urgency(&e);
            let _ = events.send(e);
            repaint(urgency);
        };
        let result = if resume { s.resume_phase(&spec, &control, &mut sink) } else { s.run_phase(&spec, &control, &mut sink) };
        // The run's lock is held only while a job writes: between jobs, a terminal may write it.
        if let Some(w) = s.writer.as_mut() {
            w.release_lock();
        }
        if matches!(result, Err(Error::Stopped)) {
            self.engine(Event::PhaseDone { phase, stopped: true });
        }
        result
    }

    /// Continues an interrupted base training (the app's Resume).
    fn resume(&mut self, dir: PathBuf) -> Result<()> {
        self.open_run(dir.clone())?;
        // Opening started the sweep of the last epoch; the training comes first.
        self.sweep = None;
        let s = self.session.as_ref().ok_or_else(|| Error::run(&dir, "cannot be resumed without its data and snapshots"))?;
        let spec = PhaseSpec::base(&s.config.train);
        let result = self.run_phase_or_resume(spec, true);
        if let Some(epoch) = self.session.as_ref().and_then(|s| crate::run::last_base_epoch(&s.records)) {
            self.start_default_sweep(epoch);
        }
        result
    }

    fn finetune(&mut self, kind: Finetune, gamma: f64, epochs: usize, lr: f64, prune_ratio: f64, from_epoch: Option<usize>) -> Result<()> {
        let s = self.session()?;
        let start = match from_epoch {
            Some(e) => e,
            None => crate::run::last_base_epoch(&s.records).ok_or_else(|| Error::Other("train a base model first".into()))?,
        };
        self.run_phase(kind.phase_spec(gamma, prune_ratio, epochs, lr, start))
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
            let s = self.session()?;
            let model = snapshot_model(s, epoch)?;
            let ctx = s.eval_context();
            let detectors = s.config.detectors.clone();
            let preview = match &self.preview_sets {
                Some(p) => p.clone(),
                None => Arc::new(probe::PreviewSets::new(&s.sets, PreviewSize::default())),
            };
            self.preview_sets = Some(preview.clone());
            let p = MaskProbe::new(model, epoch, ctx, detectors, preview);
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
        let probe = self.probe(epoch)?;
        let detection = probe.detection(&masked, &sets, &mut Self::progress(&events, &control, &inbox, label, epoch, true))?;
        self.emit(WorkerEvent::MaskDetection { request: req.id, detection: Arc::new(detection) });
        Ok(Completed::Yes)
    }

    /// The default sweep of a snapshot: from the run folder's cache when there, else computed
    /// between commands.
    fn start_default_sweep(&mut self, epoch: usize) {
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
    fn sweep_step(&mut self) {
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

    /// The session's class names; a bad names file is reported and the label numbers stand in.
    fn class_names(&self, s: &Session) -> Vec<String> {
        s.config.data.class_names(&s.data.train).unwrap_or_else(|e| {
            self.engine(Event::Error(e.to_string()));
            (0..s.classes).map(|c| c.to_string()).collect()
        })
    }

    /// A new session or run: cached probes, sweeps and masks belong to the old one.
    fn forget_run(&mut self) {
        self.probes.clear();
        self.preview_sets = None;
        self.sweep = None;
        self.last_mask = None;
        self.emit(WorkerEvent::Background(None));
    }

    fn open_run(&mut self, dir: PathBuf) -> Result<()> {
        self.emit(WorkerEvent::Busy(Job::OpeningRun(dir.clone())));
        let reader = RunReader::open(&dir)?;
        // Damage is shown, not fatal: the run opens up to the epoch before it.
        for w in &reader.warnings {
            self.engine(Event::Error(w.clone()));
        }
        let config = reader.experiment()?;
        let rows = reader.loss_matrix()?.map(|(_, r)| r).unwrap_or_default();
        self.emit(WorkerEvent::RunLoaded { dir: dir.clone(), records: reader.records.clone(), loss_rows: rows.into_iter().map(Arc::new).collect(), config: Box::new(config) });
        self.forget_run();
        self.run_dir = Some(dir.clone());
        // The data and last snapshot make masks and fine-tunes possible; without them the run is
        // still browsable.
        match Session::resume(&dir, None, None) {
            Ok(s) => {
                for w in &s.data.warnings {
                    self.engine(Event::Info(w.clone()));
                }
                let class_names = self.class_names(&s);
                self.emit(WorkerEvent::SessionReady { data: s.data.clone(), class_names, device: s.device.description.clone(), run_dir: Some(dir) });
                let last_base = crate::run::last_base_epoch(&s.records);
                self.session = Some(s);
                if let Some(epoch) = last_base {
                    self.start_default_sweep(epoch);
                }
            }
            Err(e) => {
                self.session = None;
                self.engine(Event::Info(format!("run opened for browsing only (masking and fine-tuning need its data and snapshots): {e}")));
            }
        }
        Ok(())
    }

    fn export(&mut self, req: ExportRequest) -> Result<()> {
        self.emit(WorkerEvent::Busy(Job::Exporting));
        if req.create_folder {
            for p in [&req.model, &req.report, &req.atypical_csv, &req.contact_sheet].into_iter().flatten() {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
                }
            }
        }
        let mut written = Vec::new();
        let s = self.session.as_ref();
        if let Some(p) = &req.model {
            let s = s.ok_or_else(|| Error::Other("no model to export".into()))?;
            written.extend(crate::export::export_model(&s.inference_model(), p)?);
        }
        if let Some(p) = &req.report {
            let (records, device) = match s {
                Some(s) => (s.records.clone(), s.device.description.clone()),
                None => (RunReader::open(self.run_dir.as_ref().ok_or_else(|| Error::Other("no run".into()))?)?.records, "?".into()),
            };
            written.extend(crate::export::export_report(&records, &device, p)?);
        }
        if req.atypical_csv.is_some() || req.contact_sheet.is_some() {
            let last = self.last_mask.clone().ok_or_else(|| Error::Other("compute an atypical set first (move the mask-ratio slider)".into()))?;
            if let Some(p) = &req.atypical_csv {
                written.extend(crate::export::export_atypical_csv(&last, p)?);
            }
            if let Some(p) = &req.contact_sheet {
                let s = s.ok_or_else(|| Error::Other("no data loaded".into()))?;
                written.extend(crate::export::export_contact_sheet(&s.data.train, &last, p)?);
            }
        }
        self.engine(Event::Exported(written));
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
