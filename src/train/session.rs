//! A training session: the data, the device, the current model and its history. Base training,
//! UM fine-tuning, UMAP pruning and the plain-CE control are all phases of one loop; every epoch
//! of every phase is evaluated and written the same way, so the curves continue across phases.

use crate::eval::{self, EvalContext, LabelledPass, PreparedSet, SetScores};
pub use crate::eval::{score_metrics, Sets};
use super::cosine_lr;
use crate::config::{ExperimentConfig, ModelKind};
use crate::data::DataBundle;
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::events::{BatchProgress, Control, Event, Sink};
use crate::model::Net;
use crate::ood::Score;
use crate::run::{self, EpochRecord, Phase, RunWriter};
use crate::unleash::atypical::FullPass;
use crate::unleash::probe::PreviewSets;
use crate::unleash::{Detection, MaskProbe};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation;
use std::sync::Arc;
use std::time::Instant;

/// The training objective of a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    CrossEntropy,
    /// UM's flooding: L = |CE_mean(batch) - gamma| + gamma.
    Flooded { gamma: f64 },
}

impl Objective {
    pub fn gamma(self) -> Option<f64> {
        match self {
            Objective::CrossEntropy => None,
            Objective::Flooded { gamma } => Some(gamma),
        }
    }
}

/// One phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSpec {
    pub phase: Phase,
    pub epochs: usize,
    pub lr: f64,
    pub objective: Objective,
    /// UMAP: prune this fraction of every conv/linear weight with learned scores; weights frozen.
    pub umap_ratio: Option<f64>,
    /// Start from this epoch's snapshot (None: from the current model).
    pub from_epoch: Option<usize>,
}

pub struct Session {
    pub config: ExperimentConfig,
    pub data: Arc<DataBundle>,
    pub sets: Arc<Sets>,
    pub device: ComputeDevice,
    pub classes: usize,
    /// The current model, on the autodiff device.
    pub model: Net,
    pub records: Vec<EpochRecord>,
    /// Per-sample training loss of every epoch so far.
    pub loss_rows: Vec<Arc<Vec<f32>>>,
    /// Per-sample correctness of every epoch so far (rows of per_sample_correct.npy; missing or
    /// [`run::CORRECT_UNKNOWN`] for epochs written before it existed).
    pub correct_rows: Vec<Arc<Vec<u8>>>,
    /// Whether the records were computed on this session's device (a run reopened on another
    /// device recomputes the unmasked figures the mask explorer compares against).
    records_on_this_device: bool,
    pub writer: Option<RunWriter>,
    /// Whether `model` carries UMAP score reparameterizations.
    umap_active: bool,
    /// The snapshot the current model descends from, for the records.
    current_from: usize,
}

/// Everything an eval pass over all sets gives: the training pass, then every other set scored.
pub struct EpochEval {
    pub train: LabelledPass,
    pub scored: SetScores,
}

impl Session {
    /// The way into a new session: checks the experiment once, picks its device, loads its data
    /// and builds a fresh model (seeded); with `out`, starts writing a new run folder there. A run
    /// must pass the data protocol's rules too (see [`ExperimentConfig::validate`]); a session
    /// without one (`eval`, `bench`) only the recipe's.
    pub fn open(exp: ExperimentConfig, out: Option<&std::path::Path>) -> Result<Session> {
        match out {
            Some(_) => exp.validate()?,
            None => exp.train.validate()?,
        }
        let (device, data) = Session::load(&exp, exp.train.device)?;
        let mut s = Session::build(exp, device, Arc::new(data))?;
        if let Some(dir) = out {
            s.write_run(dir)?;
        }
        Ok(s)
    }

    /// The device and the data of an experiment.
    fn load(exp: &ExperimentConfig, device: crate::config::DeviceChoice) -> Result<(ComputeDevice, DataBundle)> {
        let device = crate::device::resolve(device)?;
        let mut data = exp.data.load()?;
        if let Some(norm) = &exp.train.normalization {
            data.norm = checked_normalization(norm, data.train.shape.channels)?;
        }
        Ok((device, data))
    }

    /// A session on data already loaded (tests, and callers that share one data bundle); the
    /// recipe is checked. [`Session::open`] is the way in otherwise.
    pub fn new(config: ExperimentConfig, device: ComputeDevice, data: Arc<DataBundle>) -> Result<Session> {
        config.train.validate()?;
        Session::build(config, device, data)
    }

    /// A fresh model (seeded) on `data`, unchecked: the callers check the config.
    fn build(config: ExperimentConfig, device: ComputeDevice, data: Arc<DataBundle>) -> Result<Session> {
        let classes = data.train.num_classes;
        let sets = Arc::new(Sets {
            train: PreparedSet::new(&data.train, &data.norm),
            test: PreparedSet::new(&data.test, &data.norm),
            id_val: (!data.id_val.is_empty()).then(|| PreparedSet::new(&data.id_val, &data.norm)),
            val: PreparedSet::new(&data.val_ood, &data.norm),
            ood: data.ood.iter().map(|d| PreparedSet::new(d, &data.norm)).collect(),
        });
        let model = fresh_model(config.train.model, &data, classes, &device, config.train.seed)?;
        Ok(Session {
            config,
            data,
            sets,
            device,
            classes,
            model,
            records: Vec::new(),
            loss_rows: Vec::new(),
            correct_rows: Vec::new(),
            records_on_this_device: true,
            writer: None,
            umap_active: false,
            current_from: 0,
        })
    }

    /// The way back into a run folder, to continue it (UM, UMAP, control, an interrupted base
    /// training): same data, history and writer; the model is the snapshot of `epoch` (the last
    /// one by default), on `device` (the run's own by default).
    pub fn resume(dir: &std::path::Path, device: Option<crate::config::DeviceChoice>, epoch: Option<usize>) -> Result<Session> {
        let reader = run::RunReader::open(dir)?;
        let exp = reader.experiment()?;
        exp.train.validate()?;
        // Detector settings come back from disk: checked like new ones (a hand-edited knn_k = 0).
        exp.detectors.validate().map_err(|e| Error::run(dir, format!("config.json: {e}")))?;
        // Before reading the data: a changed file is named as changed, not as whatever it breaks.
        let unchecked = check_data_unchanged(dir, &reader.config, &exp)?;
        let (device, mut data) = Session::load(&exp, device.unwrap_or(exp.train.device))?;
        check_split_unchanged(dir, &reader.config, &data)?;
        data.warnings.extend(unchecked);
        let mut s = Session::build(exp, device, Arc::new(data))?;
        // The writer reads the per-sample rows once; the session keeps its own copies of them.
        let writer = RunWriter::continuing(&reader)?;
        s.loss_rows = writer.loss_rows().iter().cloned().map(Arc::new).collect();
        s.correct_rows = writer.correct_rows().iter().cloned().map(Arc::new).collect();
        s.records_on_this_device = reader.config.device.as_deref() == Some(s.device.description.as_str());
        s.records = reader.records.clone();
        s.writer = Some(writer);
        let last = reader.last_epoch().ok_or_else(|| Error::run(dir, "has no complete epoch yet"))?;
        let start = epoch.unwrap_or(last);
        s.load_snapshot(start)?;
        s.current_from = start;
        Ok(s)
    }

    /// Starts writing a new run folder, after checking the protocol rules (a new run must not
    /// select on a test distribution unless the user said so; config.json then says it too).
    pub fn create_run(&mut self, dir: &std::path::Path) -> Result<()> {
        self.config.validate()?;
        self.write_run(dir)
    }

    /// Starts the run folder of an imported model (see [`crate::import::import_run`]): the
    /// config checked, config.json naming the checkpoint.
    pub fn create_imported_run(&mut self, dir: &std::path::Path, from: crate::import::ImportedFrom) -> Result<()> {
        self.config.validate()?;
        self.write_run_with(dir, Some(from))
    }

    /// Starts the run folder of a checked config.
    fn write_run(&mut self, dir: &std::path::Path) -> Result<()> {
        self.write_run_with(dir, None)
    }

    fn write_run_with(&mut self, dir: &std::path::Path, imported: Option<crate::import::ImportedFrom>) -> Result<()> {
        let mut clashes = self.config.data.val_test_clashes()?;
        clashes.extend(self.config.data.shared_image_clashes(&self.data)?);
        let split = &self.data.id_val_split;
        let cfg = run::RunConfig {
            format_version: run::FORMAT_VERSION,
            experiment: Some(self.config.clone()),
            device: Some(self.device.description.clone()),
            classes: Some(self.classes),
            shape: Some(self.data.train.shape),
            normalization: Some(self.data.norm.clone()),
            train_samples: Some(self.data.train.len()),
            id_val_split: Some(split.clone()),
            validation_id: Some(self.data.validation_id_name().to_string()),
            val_ood: Some(self.data.val_ood.name.clone()),
            val_test_overlap: Some(run::ValTestOverlap { allowed: self.config.data.allow_val_test_overlap, clashes }),
            msp_stored_as: Some("log_msp".into()),
            score_columns: Score::ALL.iter().map(|s| s.key().to_string()).collect(),
            odin_stored_as: Some("temperature * (log_msp_T + log(classes))".into()),
            ood: self.data.ood.iter().map(|d| d.name.clone()).collect(),
            unleash_version: Some(env!("CARGO_PKG_VERSION").into()),
            data_fingerprints: Some(crate::data::provenance::fingerprints(&self.config.data)?),
            imported,
        };
        self.writer = Some(RunWriter::create(dir, &cfg)?);
        Ok(())
    }

    pub fn autodiff_device(&self) -> Device {
        self.device.device.clone().autodiff()
    }

    pub fn inference_device(&self) -> &Device {
        &self.device.device
    }

    /// The current model for inference (UMAP masks applied and baked in).
    pub fn inference_model(&self) -> Net {
        let m = self.model.valid();
        if self.umap_active { m.materialize() } else { m }
    }

    /// The inference model of this run's snapshot `epoch`, read from the run folder (the current
    /// model may have moved on, or be mid-epoch after a stop).
    pub fn snapshot_model(&self, epoch: usize) -> Result<Net> {
        let writer = self.writer.as_ref().ok_or_else(|| Error::Other("no run folder to load snapshots from".into()))?;
        let path = run::RunReader::open(&writer.dir)?.snapshot(epoch)?;
        Net::load_bpk(self.config.train.model, self.data.train.shape, self.classes, &path, self.inference_device())
    }

    /// Replaces the current model with a snapshot of this run.
    pub fn load_snapshot(&mut self, epoch: usize) -> Result<()> {
        let net = self.snapshot_model(epoch)?;
        self.model = net.train_on(&self.autodiff_device());
        self.umap_active = false;
        Ok(())
    }

    /// Runs a phase: its epochs, each followed by a full evaluation and a commit to the run folder.
    pub fn run_phase(&mut self, spec: &PhaseSpec, control: &Control, sink: Sink) -> Result<()> {
        validate_phase(spec)?;
        if let Some(w) = &mut self.writer {
            w.lock(spec.phase.name())?;
        }
        if let Some(e) = spec.from_epoch {
            self.load_snapshot(e)?;
            self.current_from = e;
        } else {
            // Continuing from the current model: the last epoch (0 for a fresh base run).
            self.current_from = self.records.len();
        }
        self.run_phase_epochs(spec, 1, None, control, sink)
    }

    /// Continues an interrupted phase of `spec.epochs` epochs from the run's last complete epoch,
    /// with that epoch's snapshot (already loaded by [`Session::resume`]) and optimizer state,
    /// so that it ends where the uninterrupted phase would have: the learning rate and shuffle
    /// depend only on the epoch, and the momentum buffers come back from disk.
    pub fn resume_phase(&mut self, spec: &PhaseSpec, control: &Control, sink: Sink) -> Result<()> {
        validate_phase(spec)?;
        let w = self.writer.as_mut().ok_or_else(|| Error::Other("no run folder to resume".into()))?;
        w.lock(&format!("resume {}", spec.phase.name()))?;
        let dir = w.dir.clone();
        let last = self.records.last().ok_or_else(|| Error::run(&dir, "has no complete epoch to resume from"))?.clone();
        if last.phase != spec.phase {
            return Err(Error::run(&dir, format!("ends with a {} epoch; only an interrupted {} phase can be resumed", last.phase.name(), spec.phase.name())));
        }
        if last.phase_epoch >= spec.epochs {
            return Err(Error::run(&dir, format!("its {} phase is complete ({} of {} epochs); nothing to resume", spec.phase.name(), last.phase_epoch, spec.epochs)));
        }
        let path = run::optimizer_path(&dir, last.epoch);
        if !path.exists() {
            return Err(Error::run(&dir, format!("epoch {} has no optimizer state ({}; runs written before it was saved cannot be resumed exactly)", last.epoch, path.display())));
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
        self.current_from = last.from_epoch;
        self.run_phase_epochs(spec, last.phase_epoch + 1, Some((path, bytes)), control, sink)
    }

    /// The epochs `first_phase_epoch..=spec.epochs` of a phase; `optimizer`: saved state to start
    /// from (its file, for errors), else fresh momentum.
    fn run_phase_epochs(&mut self, spec: &PhaseSpec, first_phase_epoch: usize, optimizer: Option<(std::path::PathBuf, Vec<u8>)>, control: &Control, sink: Sink) -> Result<()> {
        let from_epoch = self.current_from;
        let train_cfg = self.config.train.clone();
        let ad = self.autodiff_device();
        if let Some(r) = spec.umap_ratio {
            let scored = crate::unleash::umap::attach_scores(self.inference_model(), r);
            self.model = scored.train_on(&ad);
            self.umap_active = true;
        } else if self.umap_active {
            // A non-UMAP phase after UMAP continues from the pruned weights (thawed: UMAP froze them).
            self.model = crate::unleash::umap::unfreeze(self.inference_model()).train_on(&ad);
            self.umap_active = false;
        }
        let n = self.sets.train.len();
        let batch = train_cfg.batch_size.min(n);
        let batches = n.div_ceil(batch);
        let total_steps = spec.epochs * batches;
        let first_epoch = self.records.len() + 1;
        let epochs_left = spec.epochs + 1 - first_phase_epoch;
        sink(Event::PhaseStarted { phase: spec.phase, first_epoch, epochs: epochs_left, batches, samples: n });
        let mut optim = SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(train_cfg.momentum).with_dampening(0.0).with_nesterov(false)))
            .with_weight_decay((train_cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(train_cfg.weight_decay as f32)))
            .init();
        if let Some((path, bytes)) = optimizer {
            optim = load_optimizer(optim, &path, bytes)?;
        }
        let phase_start = Instant::now();
        // Samples of the epochs before this call (a resumed phase), for the ETA only.
        let samples_before = (first_phase_epoch - 1) * n;
        let mut samples_done = 0usize;
        for phase_epoch in first_phase_epoch..=spec.epochs {
            let epoch = self.records.len() + 1;
            let epoch_start = Instant::now();
            let order = super::epoch_order(train_cfg.seed, super::OrderKey::of(spec.phase, epoch, phase_epoch), n);
            let (mut loss_sum, mut correct) = (0f64, 0usize);
            let mut lr = spec.lr;
            for (b, idx) in order.chunks(batch).enumerate() {
                control.checkpoint()?;
                let step = (phase_epoch - 1) * batches + b;
                lr = cosine_lr(spec.lr, step, total_steps);
                let (x, y, labels) = self.sets.train.gather(idx, &ad);
                let logits = self.model.logits(x);
                let host = eval::to_vec(logits.clone().detach())?;
                let pass = LabelledPass::from_logits(&host, self.classes, &labels)?;
                if !pass.mean_loss.is_finite() {
                    return Err(Error::Diverged { epoch, batch: b + 1, loss: pass.mean_loss as f32 });
                }
                loss_sum += pass.mean_loss * idx.len() as f64;
                correct += (pass.accuracy * idx.len() as f64).round() as usize;
                let loss = objective_loss(logits, y, idx.len(), spec.objective);
                let grads = GradientsParams::from_grads(loss.backward(), &self.model);
                self.model = optim.step(lr, self.model.clone(), grads);
                samples_done += idx.len();
                let elapsed = phase_start.elapsed().as_secs_f64().max(1e-9);
                let rate = samples_done as f64 / elapsed;
                sink(Event::Batch(BatchProgress {
                    phase: spec.phase,
                    epoch,
                    phase_epoch,
                    phase_epochs: spec.epochs,
                    batch: b + 1,
                    batches,
                    loss: pass.mean_loss,
                    samples_per_sec: rate,
                    eta_secs: (spec.epochs * n).saturating_sub(samples_before + samples_done) as f64 / rate,
                }));
            }
            let train_secs = epoch_start.elapsed().as_secs_f64();
            let evaluated = self.evaluate(epoch, control, sink)?;
            let record = self.record(spec, from_epoch, epoch, phase_epoch, lr, loss_sum / n as f64, correct as f64 / n as f64, &evaluated, train_secs, n)?;
            let snapshot = train_cfg.snapshot_every_epoch || phase_epoch == spec.epochs;
            // Base epochs only (what `train --resume` continues), beside the snapshot and before
            // the events line; a fine-tune is short and restarts from its start snapshot instead.
            if snapshot && spec.phase == Phase::Base && let Some(w) = &mut self.writer {
                let bytes = optim.into_bytes().map_err(|e| Error::Other(format!("cannot serialize the optimizer state of epoch {epoch}: {e}")))?;
                w.write_optimizer_state(epoch, &bytes)?;
            }
            self.commit(record, evaluated, snapshot, sink)?;
        }
        sink(Event::PhaseDone { phase: spec.phase, stopped: false });
        Ok(())
    }

    /// What the unmasked model of snapshot `epoch` gives, as the epoch's evaluation recorded it:
    /// its training pass and its detection. None where the records cannot say (an epoch written
    /// before per-sample correctness was recorded, a run reopened on another device).
    pub fn recorded_unmasked(&self, epoch: usize) -> Option<(FullPass, Detection)> {
        if !self.records_on_this_device || epoch == 0 {
            return None;
        }
        let record = self.records.get(epoch - 1).filter(|r| r.epoch == epoch)?;
        let (loss, correct) = (self.loss_rows.get(epoch - 1)?, self.correct_rows.get(epoch - 1)?);
        let full = FullPass::from_record(record, loss, correct).filter(|f| f.correct.len() == self.sets.train.len())?;
        Some((full, Detection::from_record(record)))
    }

    /// The mask explorer on snapshot `epoch` (`model` is its inference model), previewing on
    /// `preview`; the unmasked figures come from the records where they have them, so that a
    /// snapshot's first answer costs what any other does.
    pub fn mask_probe(&self, model: Net, epoch: usize, preview: Arc<PreviewSets>) -> MaskProbe {
        let probe = MaskProbe::new(model, epoch, self.eval_context(), self.config.detectors.clone(), preview);
        match self.recorded_unmasked(epoch) {
            Some((full, detection)) => probe.with_recorded(full, detection),
            None => probe,
        }
    }

    /// Commits the current model, untrained, as the first epoch of a new run: an imported
    /// checkpoint. It is evaluated and written exactly as a trained epoch (snapshot, every score
    /// array, the per-sample loss row, the events line); its training loss and accuracy are the
    /// eval-mode pass over the training set, since no training happened here; its `seconds` and
    /// `samples_per_sec` are of the evaluation over every set. `source` names the checkpoint in the record.
    pub fn commit_imported(&mut self, source: &str, control: &Control, sink: Sink) -> Result<()> {
        if !self.records.is_empty() {
            return Err(Error::Other("an imported model can only be the first epoch of a run".into()));
        }
        let spec = PhaseSpec { phase: Phase::Base, epochs: 1, lr: f64::MIN_POSITIVE, objective: Objective::CrossEntropy, umap_ratio: None, from_epoch: None };
        sink(Event::Info(format!("epoch 1: {source}, untrained here, scored in eval mode on every set")));
        let start = Instant::now();
        let evaluated = self.evaluate(1, control, sink)?;
        let secs = start.elapsed().as_secs_f64();
        let (loss, acc) = (evaluated.train.mean_loss, evaluated.train.accuracy);
        // Its speed is of that evaluation: every sample of every set, per second.
        let sets = &self.sets;
        let scored = sets.train.len() + sets.test.len() + sets.id_val.as_ref().map_or(0, |s| s.len()) + sets.val.len() + sets.ood.iter().map(|s| s.len()).sum::<usize>();
        let mut record = self.record(&spec, 0, 1, 1, 0.0, loss, acc, &evaluated, secs, scored)?;
        record.imported_from = Some(source.to_string());
        self.commit(record, evaluated, true, sink)
    }

    /// What every forward pass of this session needs besides the model and the samples.
    pub fn eval_context(&self) -> EvalContext {
        EvalContext { classes: self.classes, device: self.inference_device().clone(), batch: self.config.train.eval_batch_size, channel_std: self.data.norm.std.clone() }
    }

    /// Full evaluation of the current model on every set: the training pass (per-sample loss, and
    /// the features every detector is fitted on), then every score of every other set.
    pub fn evaluate(&self, epoch: usize, control: &Control, sink: Sink) -> Result<EpochEval> {
        let model = self.inference_model();
        let ctx = self.eval_context();
        let mut progress = |set: &str, done: usize, total: usize| -> Result<()> {
            sink(Event::Evaluating { epoch, set: set.to_string(), done, total });
            control.checkpoint()
        };
        let train_set = &self.sets.train;
        let train_pass = eval::embed(&model, train_set, ctx.batch, &ctx.device, &mut |done| progress(&train_set.name, done, train_set.len()))?;
        let train = LabelledPass::from_logits(&train_pass.logits, self.classes, &train_set.labels)?;
        let scored = eval::score_sets(&model, &self.sets, &ctx, &train_pass, &self.config.detectors, &mut progress)?;
        for problem in &scored.problems {
            sink(Event::Info(format!("epoch {epoch}: {problem}")));
        }
        Ok(EpochEval { train, scored })
    }

    #[allow(clippy::too_many_arguments)]
    fn record(&self, spec: &PhaseSpec, from_epoch: usize, epoch: usize, phase_epoch: usize, lr_end: f64, train_loss: f64, train_acc: f64, ev: &EpochEval, train_secs: f64, n: usize) -> Result<EpochRecord> {
        // Validation: the ID validation split against the validation OOD set. The ID test set is
        // for reporting only.
        let metrics = ev.scored.metrics(&self.sets)?;
        if !ev.train.mean_loss.is_finite() {
            return Err(Error::Diverged { epoch, batch: 0, loss: ev.train.mean_loss as f32 });
        }
        Ok(EpochRecord {
            epoch,
            phase: spec.phase,
            phase_epoch,
            from_epoch,
            gamma: spec.objective.gamma(),
            lr_end,
            train_loss,
            train_acc,
            train_eval_loss: ev.train.mean_loss,
            test_loss: ev.scored.test.mean_loss,
            test_acc: ev.scored.test.accuracy,
            val_name: self.sets.val.name.clone(),
            val_id_name: self.data.validation_id_name().to_string(),
            val: metrics.val,
            ood: metrics.ood,
            ood_mean: metrics.ood_mean,
            seconds: train_secs,
            samples_per_sec: n as f64 / train_secs.max(1e-9),
            detector_problems: ev.scored.problems.clone(),
            imported_from: None,
        })
    }

    /// Writes an epoch (snapshot, scores, loss row, events line) and reports it.
    fn commit(&mut self, record: EpochRecord, ev: EpochEval, snapshot: bool, sink: Sink) -> Result<()> {
        let epoch = record.epoch;
        let model = (snapshot && self.writer.is_some()).then(|| self.inference_model());
        if let Some(w) = &mut self.writer {
            if let Some(model) = model {
                w.epoch_dir(epoch)?;
                model.save_bpk(&run::snapshot_path(&w.dir, epoch))?;
            }
            w.write_scores(epoch, "id_test", &ev.scored.test_scores)?;
            if self.sets.id_val.is_some() {
                w.write_scores(epoch, "id_val", &ev.scored.id_val_scores)?;
            }
            w.write_scores(epoch, &format!("val_{}", self.sets.val.name), &ev.scored.val_scores)?;
            for (set, scores) in self.sets.ood.iter().zip(&ev.scored.ood_scores) {
                w.write_scores(epoch, &set.name, scores)?;
            }
        }
        let correct = ev.train.correct(&self.sets.train.labels);
        if let Some(w) = &mut self.writer {
            w.commit_epoch(&record, ev.train.per_sample_loss.clone(), &correct)?;
        }
        self.correct_rows.resize(self.loss_rows.len(), Arc::new(Vec::new()));
        self.correct_rows.push(Arc::new(correct.into_iter().map(u8::from).collect()));
        let losses = Arc::new(ev.train.per_sample_loss);
        self.loss_rows.push(losses.clone());
        self.records.push(record.clone());
        sink(Event::EpochDone { record: Box::new(record), per_sample_loss: losses });
        Ok(())
    }
}

/// Restores saved optimizer state; a corrupt or foreign file is an error naming it, not a panic.
fn load_optimizer(optim: burn::optim::ModuleOptimizer, path: &std::path::Path, bytes: Vec<u8>) -> Result<burn::optim::ModuleOptimizer> {
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| optim.from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))));
    match loaded {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(Error::bad_data(path, format!("not a readable optimizer state: {e}"))),
        Err(_) => Err(Error::bad_data(path, "the optimizer state is corrupt (the reader failed)")),
    }
}

fn validate_phase(spec: &PhaseSpec) -> Result<()> {
    let mut bad = Vec::new();
    if spec.epochs == 0 {
        bad.push("epochs must be at least 1".to_string());
    }
    if !(spec.lr.is_finite() && spec.lr > 0.0) {
        bad.push(format!("lr must be a positive number (got {})", spec.lr));
    }
    if let Objective::Flooded { gamma } = spec.objective {
        if !(gamma.is_finite() && gamma >= 0.0) {
            bad.push(format!("gamma must be >= 0 (got {gamma})"));
        }
    }
    if let Some(r) = spec.umap_ratio {
        if let Err(e) = crate::config::check_mask_ratio(r) {
            bad.push(e.to_string());
        }
    }
    crate::config::check(bad)
}

/// The batch loss to differentiate: mean CE, or UM's flooded CE.
pub fn objective_loss(logits: Tensor<2>, y: Tensor<1, Int>, n: usize, objective: Objective) -> Tensor<1> {
    let logp = activation::log_softmax(logits, 1);
    let ce = logp.gather(1, y.reshape([n, 1])).neg().mean();
    match objective {
        Objective::CrossEntropy => ce,
        Objective::Flooded { gamma } => ce.sub_scalar(gamma).abs().add_scalar(gamma),
    }
}

/// Refuses a run whose data files changed since it was made, naming each changed file and what
/// changed: its per-sample records, split and snapshots belong to the data it was made from. A
/// run from before fingerprints opens with a warning (returned).
fn check_data_unchanged(dir: &std::path::Path, cfg: &run::RunConfig, exp: &ExperimentConfig) -> Result<Vec<String>> {
    use crate::data::provenance;
    let Some(recorded) = &cfg.data_fingerprints else {
        return Ok(vec![format!(
            "warning: {} was made before runs recorded their data's fingerprints: it cannot be checked that the data on disk is the data it was trained on",
            dir.display()
        )]);
    };
    let changes = provenance::changes(recorded, &provenance::fingerprints(&exp.data)?);
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    Err(Error::run(
        dir,
        format!(
            "its data changed since the run was made, so its per-sample records and snapshots no longer describe the data on disk: {} (restore the data, or train a new run on the new data)",
            changes.join("; ")
        ),
    ))
}

/// The ID validation split recomputed from the data on disk must be the one the run recorded:
/// every per-sample array indexes the training samples that split left.
fn check_split_unchanged(dir: &std::path::Path, cfg: &run::RunConfig, data: &DataBundle) -> Result<()> {
    if let Some(recorded) = &cfg.id_val_split {
        if recorded.indices != data.id_val_split.indices {
            return Err(Error::run(
                dir,
                format!(
                    "the ID validation split drawn from the training data on disk ({} samples held out) is not the one the run recorded ({} samples held out): the training data changed since the run was made",
                    data.id_val_split.count, recorded.count
                ),
            ));
        }
    }
    if let Some(n) = cfg.train_samples {
        if n != data.train.len() {
            return Err(Error::run(dir, format!("the run trained on {n} samples but the training data on disk leaves {}: the training data changed since the run was made", data.train.len())));
        }
    }
    Ok(())
}

/// A normalisation given in the config (an imported model's), checked against the data: one
/// mean and one positive std per channel (a single pair applies to every channel).
fn checked_normalization(norm: &crate::data::Normalization, channels: usize) -> Result<crate::data::Normalization> {
    let widen = |v: &[f32]| if v.len() == 1 { vec![v[0]; channels] } else { v.to_vec() };
    let (mean, std) = (widen(&norm.mean), widen(&norm.std));
    if mean.len() != channels || std.len() != channels {
        return Err(Error::config("normalization", format!("gives {} means and {} stds but the images have {channels} channels", norm.mean.len(), norm.std.len())));
    }
    if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::config("normalization", format!("every std must be a positive number (got {s})")));
    }
    if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
        return Err(Error::config("normalization", format!("every mean must be a number (got {m})")));
    }
    Ok(crate::data::Normalization { mean, std })
}

/// A seeded, fully initialised model on the autodiff device.
pub fn fresh_model(kind: ModelKind, data: &DataBundle, classes: usize, device: &ComputeDevice, seed: u64) -> Result<Net> {
    let ad = device.device.clone().autodiff();
    ad.seed(seed);
    let model = Net::new(kind, data.train.shape, classes, &ad)?;
    // Parameters initialise lazily, in access order: touch them all now, in module order, so the
    // seed alone fixes the initial weights.
    Ok(crate::unleash::mask::force_init(model))
}

impl Net {
    /// Moves a model onto an autodiff device for training.
    pub fn train_on(self, device: &Device) -> Net {
        self.to_device(device).train()
    }
}

#[cfg(test)]
mod tests {
    use super::checked_normalization;
    use crate::data::Normalization;

    #[test]
    fn a_given_normalisation_fits_the_channels_or_is_refused_by_name() {
        let one = Normalization { mean: vec![0.5], std: vec![0.25] };
        assert_eq!(checked_normalization(&one, 3).unwrap(), Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] });
        let rgb = Normalization { mean: vec![0.1, 0.2, 0.3], std: vec![1.0, 1.0, 1.0] };
        assert_eq!(checked_normalization(&rgb, 3).unwrap(), rgb);
        let err = checked_normalization(&rgb, 1).unwrap_err().to_string();
        assert!(err.contains("3 means") && err.contains("1 channels"), "{err}");
        let zero = Normalization { mean: vec![0.0], std: vec![0.0] };
        assert!(checked_normalization(&zero, 1).unwrap_err().to_string().contains("positive"));
    }
}
