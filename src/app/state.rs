//! The GUI's plain state: what the worker's events have told it, and what the user has chosen.
//! Panels read it and draw; only `apply` changes it from events.

use crate::config::ExperimentConfig;
use crate::data::DataBundle;
use crate::events::{BatchProgress, Event};
use crate::run::{EpochRecord, Phase};
use crate::unleash::{AtypicalSet, MaskKind, MaskSweepPoint};
use crate::worker::WorkerEvent;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Training,
    Losses,
    Atypical,
    Mask,
    Compare,
}

impl Tab {
    pub const ALL: [(Tab, &'static str); 5] = [
        (Tab::Training, "Training"),
        (Tab::Losses, "Per-sample loss"),
        (Tab::Atypical, "Atypical samples"),
        (Tab::Mask, "Mask ratio & UM"),
        (Tab::Compare, "Compare stages"),
    ];
}

/// How the user picks gamma for UM / UMAP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GammaSource {
    /// From the mask-ratio slider's result.
    Mask,
    /// A quantile of the final per-sample losses.
    Quantile(f64),
    /// The mean training loss at an epoch.
    Epoch(usize),
    Manual(f64),
}

pub struct AppState {
    pub config: ExperimentConfig,
    pub out_dir: String,
    pub device: String,
    pub tab: Tab,
    /// What the worker is doing, if anything.
    pub busy: Option<String>,
    pub paused: bool,
    pub batch: Option<BatchProgress>,
    pub evaluating: Option<(String, usize, usize)>,
    pub records: Vec<EpochRecord>,
    pub loss_rows: Vec<Arc<Vec<f32>>>,
    pub run_dir: Option<PathBuf>,
    pub data: Option<Arc<DataBundle>>,
    pub mask_ratio: f64,
    pub mask_kind: MaskKind,
    pub mask_result: Option<Arc<AtypicalSet>>,
    /// The ratio the slider last asked for, and when (for the latency shown and measured).
    pub mask_requested_at: Option<(f64, Instant)>,
    pub mask_pending: bool,
    pub last_mask_latency: Option<Duration>,
    pub sweep: Vec<MaskSweepPoint>,
    pub gamma_source: GammaSource,
    pub ft_epochs: usize,
    pub ft_lr: f64,
    pub prune_ratio: f64,
    pub messages: Vec<(bool, String)>,
    pub last_error: Option<String>,
    pub exported: Vec<PathBuf>,
    /// Epoch shown by the per-sample loss histogram (1-based; 0 = latest).
    pub loss_epoch: usize,
    /// The sample opened in the detail view.
    pub selected_sample: Option<usize>,
    pub gallery_sort_by_increase: bool,
    pub gallery_class: Option<u32>,
    pub gallery_page: usize,
    pub compare: [String; 2],
    pub compare_set: usize,
    pub compare_score: crate::ood::Score,
    /// Which scores the OOD curves show (MSP, MaxLogit, Energy) and whether per-set lines too.
    pub plot_scores: [bool; 3],
    pub plot_per_set: bool,
}

impl AppState {
    pub fn new(config: ExperimentConfig) -> AppState {
        AppState {
            config,
            out_dir: default_out_dir(),
            device: "device: probing...".into(),
            tab: Tab::Training,
            busy: None,
            paused: false,
            batch: None,
            evaluating: None,
            records: Vec::new(),
            loss_rows: Vec::new(),
            run_dir: None,
            data: None,
            mask_ratio: 0.5,
            mask_kind: MaskKind::Magnitude,
            mask_result: None,
            mask_requested_at: None,
            mask_pending: false,
            last_mask_latency: None,
            sweep: Vec::new(),
            gamma_source: GammaSource::Mask,
            ft_epochs: 10,
            ft_lr: 0.05,
            prune_ratio: 0.2,
            messages: Vec::new(),
            last_error: None,
            exported: Vec::new(),
            loss_epoch: 0,
            selected_sample: None,
            gallery_sort_by_increase: false,
            gallery_class: None,
            gallery_page: 0,
            compare: ["best epoch".into(), "final".into()],
            compare_set: 0,
            compare_score: crate::ood::Score::Energy,
            plot_scores: [false, false, true],
            plot_per_set: true,
        }
    }

    pub fn log(&mut self, error: bool, msg: impl Into<String>) {
        let msg = msg.into();
        if error {
            self.last_error = Some(msg.clone());
        }
        self.messages.push((error, msg));
        if self.messages.len() > 200 {
            self.messages.remove(0);
        }
    }

    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// gamma for a fine-tune, from the chosen source (None when not available yet).
    pub fn gamma(&self) -> Option<f64> {
        match self.gamma_source {
            GammaSource::Mask => self.mask_result.as_ref().map(|m| m.gamma),
            GammaSource::Quantile(q) => self
                .last_base_epoch()
                .and_then(|e| self.loss_rows.get(e - 1))
                .and_then(|row| crate::unleash::atypical::gamma_from_quantile(row, q)),
            GammaSource::Epoch(e) => self.records.get(e.wrapping_sub(1)).map(|r| r.train_eval_loss),
            GammaSource::Manual(g) => Some(g),
        }
    }

    pub fn last_base_epoch(&self) -> Option<usize> {
        crate::run::last_base_epoch(&self.records)
    }

    pub fn apply(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Busy(what) => self.busy = Some(what),
            WorkerEvent::SessionReady { data, device, run_dir } => {
                self.data = Some(data);
                self.device = device;
                if run_dir.is_some() {
                    self.run_dir = run_dir;
                }
            }
            WorkerEvent::RunLoaded { dir, records, loss_rows, config } => {
                self.log(false, format!("opened run {} ({} epochs)", dir.display(), records.len()));
                self.run_dir = Some(dir);
                self.records = records;
                self.loss_rows = loss_rows;
                self.config = *config;
                self.mask_result = None;
                self.sweep.clear();
                self.data = None;
            }
            WorkerEvent::Engine(e) => self.apply_engine(e),
        }
    }

    fn apply_engine(&mut self, e: Event) {
        match e {
            Event::Info(s) => {
                if let Some(d) = s.strip_prefix("device: ") {
                    self.device = d.to_string();
                }
                self.log(false, s);
            }
            Event::PhaseStarted { phase, first_epoch, .. } => {
                if phase == Phase::Base && first_epoch == 1 {
                    self.records.clear();
                    self.loss_rows.clear();
                    self.mask_result = None;
                    self.sweep.clear();
                }
            }
            Event::Batch(b) => {
                self.batch = Some(b);
                self.evaluating = None;
            }
            Event::Evaluating { set, done, total, .. } => self.evaluating = Some((set, done, total)),
            Event::EpochDone { record, per_sample_loss } => {
                self.records.push(*record);
                self.loss_rows.push(per_sample_loss);
                self.evaluating = None;
            }
            Event::PhaseDone { phase, stopped } => {
                self.log(false, format!("{} phase {}", phase.name(), if stopped { "stopped" } else { "finished" }));
                self.batch = None;
            }
            Event::MaskResult(set) => {
                // A result for an older ratio (the worker was busy with it when the slider moved
                // on) is shown, but the latest request is still pending.
                if let Some((_, t)) = self.mask_requested_at.filter(|(r, _)| *r == set.ratio) {
                    self.last_mask_latency = Some(t.elapsed());
                    self.mask_requested_at = None;
                    self.mask_pending = false;
                }
                self.gallery_page = 0;
                self.mask_result = Some(set);
            }
            Event::MaskTestAccuracy { ratio, epoch, accuracy } => {
                if let Some(m) = self.mask_result.as_mut().filter(|m| m.ratio == ratio && m.epoch == epoch) {
                    Arc::make_mut(m).masked_test_acc = Some(accuracy);
                }
            }
            Event::MaskSweep(points) => self.sweep = points,
            Event::Exported(paths) => {
                for p in &paths {
                    self.log(false, format!("wrote {}", p.display()));
                }
                self.exported = paths;
            }
            Event::Error(msg) => {
                self.mask_pending = false;
                self.log(true, msg);
            }
            Event::Idle => {
                self.busy = None;
                self.paused = false;
                self.evaluating = None;
            }
        }
    }
}

fn default_out_dir() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("runs/app-{secs}")
}
