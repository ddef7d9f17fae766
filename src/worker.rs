//! The background worker: one thread owns the session (and so the model: burn modules are Send,
//! not Sync). It takes `Command`s and sends `Event`s over crossbeam channels, calling a repaint
//! hook after each event. Pause and stop go through shared atomics, so the UI never waits on it.
//!
//! Ordering rules (tested): commands run one at a time in arrival order; a Stop or Pause with no
//! job running is a no-op (the next job clears them); mask requests are coalesced: only the latest
//! queued one runs; a job command while another job runs waits its turn; a panic inside a job is
//! caught, reported as an error event, and the worker goes on.

use crate::commands::Finetune;
use crate::config::ExperimentConfig;
use crate::data::DataBundle;
use crate::error::{Error, Result};
use crate::events::{Control, Event};
use crate::run::{EpochRecord, Phase, RunReader};
use crate::train::{Objective, PhaseSpec, Session};
use crate::unleash::atypical::FullPass;
use crate::unleash::{AtypicalSet, MaskKind};
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Command {
    /// Load the data, start a fresh model and train it (base phase), writing `out`.
    Train { config: ExperimentConfig, out: PathBuf },
    /// UM / UMAP / plain-CE fine-tune of the current run, from `from_epoch` (default: last base).
    Finetune { kind: Finetune, gamma: f64, epochs: usize, lr: f64, prune_ratio: f64, from_epoch: Option<usize> },
    /// gamma, atypical set and masked accuracy at a ratio, on a snapshot (default: last base).
    Mask { ratio: f64, kind: MaskKind, epoch: Option<usize> },
    /// The gamma-vs-ratio curve.
    Sweep { ratios: Vec<f64>, kind: MaskKind, epoch: Option<usize> },
    /// Reopen a run folder (from the CLI or the app).
    OpenRun(PathBuf),
    /// Open an interrupted run and continue its base training from its last complete epoch
    /// (same numbers as if it had never stopped; see `unleash train --resume`).
    Resume(PathBuf),
    /// Find out which device a choice resolves to (reported as an Info "device: ..." event).
    ProbeDevice(crate::config::DeviceChoice),
    Export(ExportRequest),
    /// Panics on purpose (tests of the error path).
    #[doc(hidden)]
    Crash,
    Shutdown,
}

/// What to export and where (paths come from save dialogs, or from tests directly).
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub model: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub atypical_csv: Option<PathBuf>,
    pub contact_sheet: Option<PathBuf>,
}

/// Extra events the GUI needs beyond the engine's.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    Engine(Event),
    /// A session is ready: its data (for thumbnails), device and run folder.
    SessionReady { data: Arc<DataBundle>, device: String, run_dir: Option<PathBuf> },
    /// A run was (re)opened: its history so far.
    RunLoaded { dir: PathBuf, records: Vec<EpochRecord>, loss_rows: Vec<Arc<Vec<f32>>>, config: Box<ExperimentConfig> },
    /// A job started (for the busy indicator).
    Busy(String),
}

pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<WorkerEvent>,
    pub control: Arc<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn send(&self, c: Command) {
        // The worker only stops on Shutdown; a closed channel means it is gone and the UI says so.
        let _ = self.commands.send(c);
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.control.request_stop();
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the worker; `repaint` is called after every event (the GUI passes ctx.request_repaint).
pub fn spawn(repaint: impl Fn() + Send + 'static) -> WorkerHandle {
    let (ctx_tx, ctx_rx) = crossbeam_channel::unbounded();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let control = Control::new();
    let c2 = control.clone();
    let thread = std::thread::Builder::new()
        .name("unleash-worker".into())
        .spawn(move || Worker { session: None, inbox: ctx_rx.clone(), full: None, run_dir: None, last_mask: None, control: c2, events: ev_tx, repaint: Box::new(repaint) }.run(ctx_rx))
        .expect("spawning the worker thread");
    WorkerHandle { commands: ctx_tx, events: ev_rx, control, thread: Some(thread) }
}

/// When a mask's test-accuracy pass runs relative to reporting its gamma and atypical set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestPass {
    /// Both passes, then one result (the gamma curve).
    Before,
    /// Report gamma and the set at once, then the accuracy unless a newer command waits (the slider).
    AfterReporting,
}

struct Worker {
    session: Option<Session>,
    /// The command queue, to see whether a newer command is already waiting.
    inbox: Receiver<Command>,
    /// The full model's pass for the snapshot masks are applied to (reused across ratios).
    full: Option<(usize, FullPass)>,
    run_dir: Option<PathBuf>,
    /// The latest atypical set (what the export of CSV / contact sheet writes).
    last_mask: Option<Arc<AtypicalSet>>,
    control: Arc<Control>,
    events: Sender<WorkerEvent>,
    repaint: Box<dyn Fn() + Send>,
}

impl Worker {
    fn emit(&self, e: WorkerEvent) {
        let _ = self.events.send(e);
        (self.repaint)();
    }

    fn engine(&self, e: Event) {
        self.emit(WorkerEvent::Engine(e));
    }

    fn run(mut self, commands: Receiver<Command>) {
        while let Ok(mut cmd) = commands.recv() {
            // Coalesce mask requests: a slider drag queues many; only the latest matters.
            if matches!(cmd, Command::Mask { .. }) {
                while let Some(next) = commands.try_iter().next() {
                    if matches!(next, Command::Mask { .. }) {
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
        match result {
            Ok(Ok(())) => {}
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
        self.engine(Event::Idle);
    }

    fn session(&mut self) -> Result<&mut Session> {
        self.session.as_mut().ok_or_else(|| Error::Other("no model yet: train one or open a run with its data".into()))
    }

    fn handle(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::Train { config, out } => self.train(config, out),
            Command::Finetune { kind, gamma, epochs, lr, prune_ratio, from_epoch } => self.finetune(kind, gamma, epochs, lr, prune_ratio, from_epoch),
            Command::Mask { ratio, kind, epoch } => {
                self.emit(WorkerEvent::Busy(format!("masking at ratio {ratio:.3}")));
                let set = Arc::new(self.mask(ratio, kind, epoch, TestPass::AfterReporting)?);
                self.last_mask = Some(set);
                Ok(())
            }
            Command::Sweep { ratios, kind, epoch } => {
                let mut points = Vec::new();
                for r in ratios {
                    self.emit(WorkerEvent::Busy(format!("gamma curve: ratio {r:.2}")));
                    points.push(self.mask(r, kind, epoch, TestPass::Before)?.sweep_point());
                    self.engine(Event::MaskSweep(points.clone()));
                }
                Ok(())
            }
            Command::OpenRun(dir) => self.open_run(dir),
            Command::Resume(dir) => self.resume(dir),
            Command::ProbeDevice(choice) => {
                let d = crate::device::resolve(choice)?;
                self.engine(Event::Info(format!("device: {}", d.description)));
                Ok(())
            }
            Command::Export(req) => self.export(req),
            Command::Crash => panic!("crash requested"),
            Command::Shutdown => Ok(()),
        }
    }

    fn train(&mut self, config: ExperimentConfig, out: PathBuf) -> Result<()> {
        self.emit(WorkerEvent::Busy("loading data".into()));
        config.train.validate()?;
        let device = crate::device::resolve(config.train.device)?;
        let data = Arc::new(config.data.load()?);
        let mut s = Session::new(config.clone(), device, data.clone())?;
        s.create_run(&out)?;
        self.full = None;
        self.run_dir = Some(out.clone());
        self.emit(WorkerEvent::SessionReady { data, device: s.device.description.clone(), run_dir: Some(out) });
        self.emit(WorkerEvent::Busy("training".into()));
        let spec = PhaseSpec { phase: Phase::Base, epochs: config.train.epochs, lr: config.train.lr, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
        self.session = Some(s);
        self.run_phase(spec)
    }

    fn run_phase(&mut self, spec: PhaseSpec) -> Result<()> {
        self.run_phase_or_resume(spec, false)
    }

    /// Runs a phase, or (`resume`) continues an interrupted one from the run's last epoch.
    fn run_phase_or_resume(&mut self, spec: PhaseSpec, resume: bool) -> Result<()> {
        let events = self.events.clone();
        let control = self.control.clone();
        let s = self.session.as_mut().ok_or_else(|| Error::Other("no session".into()))?;
        let repaint = &self.repaint;
        let phase = spec.phase;
        let mut sink = |e| {
            let _ = events.send(WorkerEvent::Engine(e));
            repaint();
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

    fn finetune(&mut self, kind: Finetune, gamma: f64, epochs: usize, lr: f64, prune_ratio: f64, from_epoch: Option<usize>) -> Result<()> {
        let s = self.session()?;
        let start = match from_epoch {
            Some(e) => e,
            None => crate::run::last_base_epoch(&s.records).ok_or_else(|| Error::Other("train a base model first".into()))?,
        };
        let (phase, objective, umap_ratio) = match kind {
            Finetune::Um => (Phase::Um, Objective::Flooded { gamma }, None),
            Finetune::Umap => (Phase::Umap, Objective::Flooded { gamma }, Some(prune_ratio)),
            Finetune::Control => (Phase::Control, Objective::CrossEntropy, None),
        };
        self.emit(WorkerEvent::Busy(format!("{} fine-tune", phase.name())));
        self.run_phase(PhaseSpec { phase, epochs, lr, objective, umap_ratio, from_epoch: Some(start) })
    }

    /// gamma and the atypical set of a mask ratio, and the masked test accuracy (a second pass):
    /// for the slider, gamma and the set are reported first and the test pass is skipped when a
    /// newer command is already waiting.
    fn mask(&mut self, ratio: f64, kind: MaskKind, epoch: Option<usize>, test_pass: TestPass) -> Result<AtypicalSet> {
        crate::config::check_mask_ratio(ratio)?;
        let events = self.events.clone();
        let s = self.session.as_mut().ok_or_else(|| Error::Other("no model yet: train one or open a run with its data".into()))?;
        let epoch = match epoch {
            Some(e) => e,
            None => crate::run::last_base_epoch(&s.records).unwrap_or(s.records.len()),
        };
        if epoch == 0 {
            return Err(Error::Other("no trained epoch to mask yet".into()));
        }
        let model = if s.records.len() == epoch && !s.records.is_empty() && s.records.last().is_some_and(|r| r.phase == Phase::Base) {
            s.inference_model()
        } else {
            let path = RunReader::open(&s.writer.as_ref().ok_or_else(|| Error::Other("no run folder".into()))?.dir)?.snapshot(epoch)?;
            crate::model::Net::load_bpk(s.config.train.model, s.data.train.shape, s.classes, &path, s.inference_device())?
        };
        let repaint = &self.repaint;
        let control = self.control.clone();
        let mut progress = |d: usize, t: usize| {
            let _ = events.send(WorkerEvent::Engine(Event::Evaluating { epoch, set: format!("mask {ratio:.3}"), done: d, total: t }));
            repaint();
            control.checkpoint()
        };
        let full = match &self.full {
            Some((e, f)) if *e == epoch => f.clone(),
            _ => {
                let f = s.full_pass(&model, epoch, &mut progress)?;
                self.full = Some((epoch, f.clone()));
                f
            }
        };
        let masked = crate::unleash::atypical::masked_model(&model, ratio, kind, 0)?;
        let mut set = s.mask_gamma(&masked, &full, ratio, kind, &mut progress)?;
        if test_pass == TestPass::AfterReporting {
            // What the UI now shows is what an export writes, even if the test pass is stopped.
            let shown = Arc::new(set.clone());
            self.last_mask = Some(shown.clone());
            let _ = events.send(WorkerEvent::Engine(Event::MaskResult(shown)));
            repaint();
            if !self.inbox.is_empty() {
                return Ok(set);
            }
        }
        let accuracy = s.masked_test_accuracy(&masked, &mut progress)?;
        set.masked_test_acc = Some(accuracy);
        if test_pass == TestPass::AfterReporting {
            let _ = events.send(WorkerEvent::Engine(Event::MaskTestAccuracy { ratio, epoch, accuracy }));
            repaint();
        }
        Ok(set)
    }

    /// Continues an interrupted base training (the app's Resume).
    fn resume(&mut self, dir: PathBuf) -> Result<()> {
        self.open_run(dir.clone())?;
        let s = self.session.as_ref().ok_or_else(|| Error::run(&dir, "cannot be resumed without its data and snapshots"))?;
        let train = &s.config.train;
        let spec = PhaseSpec { phase: Phase::Base, epochs: train.epochs, lr: train.lr, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
        self.emit(WorkerEvent::Busy("resuming training".into()));
        self.run_phase_or_resume(spec, true)
    }

    fn open_run(&mut self, dir: PathBuf) -> Result<()> {
        self.emit(WorkerEvent::Busy(format!("opening {}", dir.display())));
        let reader = RunReader::open(&dir)?;
        // Damage is shown, not fatal: the run opens up to the epoch before it.
        for w in &reader.warnings {
            self.engine(Event::Error(w.clone()));
        }
        let config: ExperimentConfig = serde_json::from_value(reader.config["experiment"].clone())
            .map_err(|e| Error::run(&dir, format!("config.json does not describe an experiment: {e}")))?;
        let rows = reader.loss_matrix()?.map(|(_, r)| r).unwrap_or_default();
        self.emit(WorkerEvent::RunLoaded { dir: dir.clone(), records: reader.records.clone(), loss_rows: rows.into_iter().map(Arc::new).collect(), config: Box::new(config) });
        self.full = None;
        self.run_dir = Some(dir.clone());
        // The data and last snapshot make masks and fine-tunes possible; without them the run is
        // still browsable.
        match Session::resume(&dir, None, None) {
            Ok(s) => {
                self.emit(WorkerEvent::SessionReady { data: s.data.clone(), device: s.device.description.clone(), run_dir: Some(dir) });
                self.session = Some(s);
            }
            Err(e) => {
                self.session = None;
                self.engine(Event::Info(format!("run opened for browsing only (masking and fine-tuning need its data and snapshots): {e}")));
            }
        }
        Ok(())
    }

    fn export(&mut self, req: ExportRequest) -> Result<()> {
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
