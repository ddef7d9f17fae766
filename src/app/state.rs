//! The GUI's plain state: what the worker's events have told it, and what the user has chosen.
//! Panels read it and draw; only `apply` changes it from events.

use crate::config::ExperimentConfig;
use crate::data::DataBundle;
use crate::events::{BatchProgress, Event};
use crate::run::{EpochRecord, Phase};
use crate::unleash::{AtypicalSet, Detection, MaskKind, MaskSweepPoint};
use crate::worker::{Job, ScoreArrays, ScoresRequest, WorkerEvent};
use std::collections::HashMap;
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

/// Which snapshot the mask explorer masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSnapshot {
    /// The last base epoch (the paper's final stage).
    LastBase,
    /// The best base epoch by validation (the intermediate stage).
    BestByValidation,
    /// Any epoch, fine-tune ends included.
    Epoch(usize),
}

/// The sweep of one snapshot and mask kind, as far as it has come.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepView {
    pub epoch: usize,
    pub kind: MaskKind,
    pub points: Vec<MaskSweepPoint>,
    pub complete: bool,
}

/// A stage's score arrays, as far as the worker's reader has answered.
#[derive(Debug, Clone)]
pub enum StageScores {
    Loading,
    Loaded(Arc<ScoreArrays>),
    /// Why they cannot be read (e.g. the file is missing).
    Missing(String),
}

/// The score arrays the compare view asked for, by request (run folder, epoch, set).
#[derive(Debug, Default)]
pub struct ScoreCache {
    map: HashMap<ScoresRequest, StageScores>,
}

impl ScoreCache {
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// What is known of `request`; None when it was never asked.
    pub fn get(&self, request: &ScoresRequest) -> Option<&StageScores> {
        self.map.get(request)
    }

    /// What the app knows of `request` before the reader answers: Loading once asked.
    pub fn set(&mut self, request: ScoresRequest, state: StageScores) {
        self.map.insert(request, state);
    }

    /// An answer; one to a request no longer asked (the cache was cleared since) is dropped.
    fn answer(&mut self, request: ScoresRequest, scores: std::result::Result<Arc<ScoreArrays>, String>) {
        if let Some(entry) = self.map.get_mut(&request) {
            *entry = match scores {
                Ok(s) => StageScores::Loaded(s),
                Err(e) => StageScores::Missing(e),
            };
        }
    }
}


pub use crate::unleash::GammaSource;

pub struct AppState {
    pub config: ExperimentConfig,
    pub out_dir: String,
    pub device: String,
    pub tab: Tab,
    /// What the worker is doing, if anything.
    pub busy: Option<Job>,
    /// What it computes between commands (the mask sweep), if anything.
    pub background: Option<Job>,
    pub paused: bool,
    pub batch: Option<BatchProgress>,
    pub evaluating: Option<(String, usize, usize)>,
    pub records: Vec<EpochRecord>,
    pub loss_rows: Vec<Arc<Vec<f32>>>,
    pub run_dir: Option<PathBuf>,
    /// Score arrays of the stages compared (read off the UI thread).
    pub stage_scores: ScoreCache,
    pub data: Option<Arc<DataBundle>>,
    /// Names of the ID classes (label numbers where none are known).
    pub class_names: Vec<String>,
    pub mask_ratio: f64,
    pub mask_kind: MaskKind,
    pub mask_snapshot: MaskSnapshot,
    /// The latest answer for the latest request: a preview, or gamma and the atypical set of the
    /// complete training set.
    pub mask_result: Option<Arc<AtypicalSet>>,
    /// The complete answer's masked accuracy and OOD detection, once computed (kept beside the
    /// set, which the UI shares with the worker).
    pub mask_detection: Option<Arc<Detection>>,
    /// Id of the last mask request sent, when it was sent, and whether its complete answer is
    /// still to come.
    pub mask_request: u64,
    pub mask_requested_at: Option<Instant>,
    pub mask_pending: bool,
    /// Seconds from a request to its first (preview) and its complete answer.
    pub last_preview_latency: Option<Duration>,
    pub last_mask_latency: Option<Duration>,
    /// The mask request sent without the user asking (a run's first answer), by snapshot.
    pub auto_masked: Option<(Option<PathBuf>, usize)>,
    /// The latest mask request was cut short by another command: ask again when that one is done.
    pub mask_retry: bool,
    pub sweep: Option<SweepView>,
    /// The score the masked-detection table shows.
    pub mask_table_score: crate::ood::Score,
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
    /// The window's close button was pressed while a job ran: asking whether to stop it.
    pub confirm_close: bool,
    /// The base epochs the current run was started with (its config's, not the setup panel's).
    pub planned_epochs: Option<usize>,
    pub compare: [String; 2],
    pub compare_set: usize,
    pub compare_score: crate::ood::Score,
    /// Which scores the OOD curves show (MSP, MaxLogit, Energy) and whether per-set lines too.
    pub plot_scores: [bool; crate::ood::Score::ALL.len()],
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
            background: None,
            paused: false,
            batch: None,
            evaluating: None,
            records: Vec::new(),
            loss_rows: Vec::new(),
            run_dir: None,
            stage_scores: ScoreCache::default(),
            data: None,
            class_names: Vec::new(),
            mask_ratio: 0.5,
            mask_kind: MaskKind::Magnitude,
            mask_snapshot: MaskSnapshot::LastBase,
            mask_result: None,
            mask_detection: None,
            mask_request: 0,
            mask_requested_at: None,
            mask_pending: false,
            last_preview_latency: None,
            last_mask_latency: None,
            auto_masked: None,
            mask_retry: false,
            sweep: None,
            mask_table_score: crate::ood::Score::Energy,
            gamma_source: GammaSource::MaskRatio,
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
            confirm_close: false,
            planned_epochs: None,
            compare: ["best epoch".into(), "final".into()],
            compare_set: 0,
            compare_score: crate::ood::Score::Energy,
            plot_scores: crate::ood::Score::ALL.map(|s| s == crate::ood::Score::Energy),
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

    /// gamma for a fine-tune from the mask tab's snapshot, from the chosen source (None when not
    /// available yet).
    pub fn gamma(&self) -> Option<f64> {
        match self.gamma_source.from_history(&self.records, &self.loss_rows, self.mask_epoch()?) {
            Some(from_history) => from_history.ok(),
            // A preview's gamma is an estimate on a subset: UM waits for the complete one.
            None => self.mask_result.as_ref().filter(|m| m.preview.is_none()).map(|m| m.gamma),
        }
    }

    /// The name of class `label`.
    pub fn class_name(&self, label: u32) -> String {
        self.class_names.get(label as usize).cloned().unwrap_or_else(|| label.to_string())
    }

    pub fn last_base_epoch(&self) -> Option<usize> {
        crate::run::last_base_epoch(&self.records)
    }

    /// An opened run whose base training stopped before its configured epochs (and went no
    /// further): (epochs done, epochs planned).
    pub fn resumable(&self) -> Option<(usize, usize)> {
        let last = self.records.last()?;
        let planned = self.planned_epochs?;
        (last.phase == Phase::Base && last.phase_epoch < planned && self.data.is_some()).then_some((last.phase_epoch, planned))
    }

    /// The epoch the mask explorer's snapshot choice names, if it exists yet.
    pub fn mask_epoch(&self) -> Option<usize> {
        match self.mask_snapshot {
            MaskSnapshot::LastBase => self.last_base_epoch(),
            MaskSnapshot::BestByValidation => crate::run::best_by_validation(&self.records, crate::ood::Score::Energy, Some(Phase::Base)),
            MaskSnapshot::Epoch(e) => (1..=self.records.len()).contains(&e).then_some(e),
        }
    }

    /// The sweep of the snapshot and mask kind now chosen, if one has arrived.
    pub fn current_sweep(&self) -> Option<&SweepView> {
        let epoch = self.mask_epoch()?;
        self.sweep.as_ref().filter(|s| s.epoch == epoch && s.kind == self.mask_kind)
    }

    /// Forgets every mask answer (a new run, or a new base phase).
    fn clear_masks(&mut self) {
        self.mask_result = None;
        self.mask_detection = None;
        self.mask_pending = false;
        self.sweep = None;
        self.auto_masked = None;
        self.mask_retry = false;
    }

    pub fn apply(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Busy(job) => self.busy = Some(job),
            WorkerEvent::Background(job) => self.background = job,
            WorkerEvent::Device(d) => self.device = d,
            WorkerEvent::MaskAnswer { request, answer } => self.mask_answer(request, answer),
            WorkerEvent::MaskDetection { request, detection } => {
                if request == self.mask_request {
                    self.mask_detection = Some(detection);
                    self.mask_pending = false;
                    if let Some(t) = self.mask_requested_at {
                        self.last_mask_latency = Some(t.elapsed());
                    }
                }
            }
            WorkerEvent::MaskCutShort { request } => {
                if request == self.mask_request {
                    self.mask_pending = false;
                    self.mask_retry = true;
                }
            }
            WorkerEvent::Sweep { epoch, kind, points, complete } => self.sweep = Some(SweepView { epoch, kind, points, complete }),
            WorkerEvent::Scores { request, scores } => self.stage_scores.answer(request, scores),
            WorkerEvent::SessionReady { data, class_names, device, run_dir } => {
                self.data = Some(data);
                self.class_names = class_names;
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
                self.planned_epochs = Some(config.train.epochs);
                self.config = *config;
                self.clear_masks();
                self.data = None;
            }
            WorkerEvent::Engine(e) => self.apply_engine(e),
        }
    }

    fn apply_engine(&mut self, e: Event) {
        match e {
            Event::Info(s) => self.log(false, s),
            Event::PhaseStarted { phase, first_epoch, .. } => {
                if phase == Phase::Base && first_epoch == 1 {
                    self.records.clear();
                    self.loss_rows.clear();
                    self.clear_masks();
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

impl AppState {
    /// An answer to a mask request; answers to older requests (still arriving after the slider
    /// moved on) are dropped.
    fn mask_answer(&mut self, request: u64, answer: Arc<AtypicalSet>) {
        if request != self.mask_request {
            return;
        }
        let elapsed = self.mask_requested_at.map(|t| t.elapsed());
        if answer.preview.is_some() {
            self.last_preview_latency = elapsed;
        } else {
            // The complete answer replaces the preview; its detection follows separately.
            self.mask_detection = None;
        }
        self.gallery_page = 0;
        self.mask_result = Some(answer);
    }
}

fn default_out_dir() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("runs/app-{secs}")
}
