//! Jobs on run folders: opening one (its history, then its session when the data and snapshots
//! are there), exports, and the reader thread's score arrays.

use super::{ExportRequest, Job, Repaint, ScoresRequest, Worker, WorkerEvent};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::run::RunReader;
use crate::train::Session;
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::Arc;

/// The reader: answers each request with [`RunReader::scores`], until the handle is dropped.
pub(super) fn serve_reads(requests: &Receiver<ScoresRequest>, events: &Sender<WorkerEvent>, repaint: &(dyn Fn(Repaint) + Send + Sync)) {
    for request in requests {
        let scores = RunReader::open(&request.run).and_then(|r| r.scores(request.epoch, &request.set)).map(Arc::new).map_err(|e| e.to_string());
        let _ = events.send(WorkerEvent::Scores { request, scores });
        repaint(Repaint::Now);
    }
}

impl Worker {
    /// Imports a checkpoint as a new run's first epoch (see [`crate::import::import_run`]), then
    /// opens that run as any other: its history, data and the mask explorer.
    pub(super) fn import_model(&mut self, config: crate::config::ExperimentConfig, spec: crate::import::ImportSpec, out: PathBuf) -> Result<()> {
        self.emit(WorkerEvent::Busy(Job::Importing(spec.model.clone())));
        let (events, repaint) = (self.events.clone(), self.repaint.clone());
        let mut sink = |e: Event| {
            let _ = events.send(WorkerEvent::Engine(e));
            repaint(Repaint::Soon);
        };
        let session = crate::import::import_run(config, &spec, &out, &self.control, &mut sink)?;
        // Its lock goes with it; the run opens like any other.
        drop(session);
        self.open_run(out)
    }

    pub(super) fn open_run(&mut self, dir: PathBuf) -> Result<()> {
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

    pub(super) fn export(&mut self, req: ExportRequest) -> Result<()> {
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
