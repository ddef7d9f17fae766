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

mod mask;
mod runs;
mod training;

pub use mask::sweep_cache_path;
use mask::SweepJob;
use runs::serve_reads;

use crate::config::ExperimentConfig;
use crate::data::DataBundle;
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::ood::Score;
use crate::run::{EpochRecord, Phase};
use crate::train::{Finetune, Session};
use crate::unleash::probe::{self, MaskProbe};
use crate::unleash::{AtypicalSet, Detection, MaskKind, MaskSweepPoint};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use std::path::PathBuf;
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
    /// Import a checkpoint as the first epoch of a new run folder `out` (data and architecture
    /// from `config`), then open that run.
    Import { config: ExperimentConfig, spec: crate::import::ImportSpec, out: PathBuf },
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
    /// The score on screen: its detection is computed, and sent, before the other scores'.
    pub score: Score,
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
    /// Importing a checkpoint into a new run folder.
    Importing(PathBuf),
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
            Job::Importing(path) => format!("importing {}", path.display()),
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
    /// The masked model's test accuracy and OOD detection on the complete sets, for `request`:
    /// first the request's score alone (the others listed in `detection.pending`), then all.
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
            Command::Mask(req) => self.mask_command(req),
            Command::Sweep { ratios, kind, epoch } => self.sweep_command(ratios, kind, epoch),
            Command::OpenRun(dir) => self.open_run(dir),
            Command::Import { config, spec, out } => self.import_model(config, spec, out),
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


    /// The session's class names; a bad names file is reported and the label numbers stand in.
    pub(super) fn class_names(&self, s: &Session) -> Vec<String> {
        s.config.data.class_names(&s.data.train).unwrap_or_else(|e| {
            self.engine(Event::Error(e.to_string()));
            (0..s.classes).map(|c| c.to_string()).collect()
        })
    }

    /// A new session or run: cached probes, sweeps and masks belong to the old one.
    pub(super) fn forget_run(&mut self) {
        self.probes.clear();
        self.preview_sets = None;
        self.sweep = None;
        self.last_mask = None;
        self.emit(WorkerEvent::Background(None));
    }

}
