//! Training jobs: a new run's base phase, fine-tunes (UM, UMAP, plain CE) from a snapshot, and
//! the resume of an interrupted base phase.

use super::{urgency, Job, Worker, WorkerEvent};
use crate::config::ExperimentConfig;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::train::{Finetune, PhaseSpec, Session};
use std::path::PathBuf;

impl Worker {
    pub(super) fn train(&mut self, config: ExperimentConfig, out: PathBuf) -> Result<()> {
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
    pub(super) fn resume(&mut self, dir: PathBuf) -> Result<()> {
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

    pub(super) fn finetune(&mut self, kind: Finetune, gamma: f64, epochs: usize, lr: f64, prune_ratio: f64, from_epoch: Option<usize>) -> Result<()> {
        let s = self.session()?;
        let start = match from_epoch {
            Some(e) => e,
            None => crate::run::last_base_epoch(&s.records).ok_or_else(|| Error::Other("train a base model first".into()))?,
        };
        self.run_phase(kind.phase_spec(gamma, prune_ratio, epochs, lr, start))
    }

}
