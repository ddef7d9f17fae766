//! The engine mirror: what the worker's events have told the app. Panels read it (as a
//! `&RunView`) and draw; each panel's own widget state lives in the panel. Only this file writes
//! the mirror: `apply` for the worker's events, `sent` for the commands the app sends, and a few
//! notes of the app's own (a log line, pause, the auto-mask bookkeeping).

use crate::data::DataBundle;
use crate::events::{BatchProgress, Event};
use crate::run::{EpochRecord, Phase};
use crate::unleash::{AtypicalSet, Detection, MaskKind, MaskSweepPoint};
use crate::worker::{Command, Job, ScoreArrays, ScoresRequest, WorkerEvent};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    fn set(&mut self, request: ScoresRequest, state: StageScores) {
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


/// A phase the worker started in this session: where it began, how many epochs it was asked
/// for, and whether it has ended (finished, stopped or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseSeen {
    pub phase: Phase,
    /// The run epoch of the first epoch this start trained.
    pub first_epoch: usize,
    /// The epochs this start was asked for (those left, for a resumed phase).
    pub epochs: usize,
    pub ended: bool,
}

/// What a panel reads: the engine mirror, never written by a panel.
pub type RunView = AppState;

pub struct AppState {
    pub device: String,
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
    /// The latest answer for the latest request: a preview, or gamma and the atypical set of the
    /// complete training set.
    pub mask_result: Option<Arc<AtypicalSet>>,
    /// How many mask answers were taken (a view that pages the answer starts again on a new one).
    pub mask_answers: u64,
    /// The complete answer's masked accuracy and OOD detection, once computed (kept beside the
    /// set, which the UI shares with the worker).
    pub mask_detection: Option<Arc<Detection>>,
    /// Id of the last mask request sent, when it was sent, and whether its complete answer is
    /// still to come.
    pub mask_request: u64,
    pub mask_requested_at: Option<Instant>,
    pub mask_pending: bool,
    /// The ratio of the latest mask request: what the slider reads, which the worker computes
    /// once it has caught up with a drag's coalesced requests.
    pub mask_asked_ratio: Option<f64>,
    /// Seconds from a request to its first (preview) and its complete answer.
    pub last_preview_latency: Option<Duration>,
    pub last_mask_latency: Option<Duration>,
    /// The mask request sent without the user asking (a run's first answer), by snapshot.
    pub auto_masked: Option<(Option<PathBuf>, usize)>,
    /// The latest mask request was cut short by another command: ask again when that one is done.
    pub mask_retry: bool,
    pub sweep: Option<SweepView>,
    pub messages: Vec<(bool, String)>,
    pub last_error: Option<String>,
    pub exported: Vec<PathBuf>,
    /// The base epochs the current run was started with (its config's, not the setup panel's).
    pub planned_epochs: Option<usize>,
    /// The phases started in this session, in order. Records do not say how many epochs a
    /// fine-tune was asked for, so only these can be called cut short (see [`AppState::cut_short`]).
    pub phases_seen: Vec<PhaseSeen>,
}

impl Default for AppState {
    fn default() -> AppState {
        AppState::new()
    }
}

impl AppState {
    pub fn new() -> AppState {
        AppState {
            device: "device: probing...".into(),
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
            mask_result: None,
            mask_answers: 0,
            mask_detection: None,
            mask_request: 0,
            mask_requested_at: None,
            mask_pending: false,
            mask_asked_ratio: None,
            last_preview_latency: None,
            last_mask_latency: None,
            auto_masked: None,
            mask_retry: false,
            sweep: None,
            messages: Vec::new(),
            last_error: None,
            exported: Vec::new(),
            planned_epochs: None,
            phases_seen: Vec::new(),
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

    pub fn dismiss_error(&mut self) {
        self.last_error = None;
    }

    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
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

    /// The sweep of `epoch` and `kind`, if one has arrived.
    pub fn sweep_of(&self, epoch: Option<usize>, kind: MaskKind) -> Option<&SweepView> {
        let epoch = epoch?;
        self.sweep.as_ref().filter(|s| s.epoch == epoch && s.kind == kind)
    }

    /// What the app has just sent the worker, as far as the mirror follows it: a job starting,
    /// a mask request awaiting its answers, a device being probed, a run folder's caches gone.
    pub fn sent(&mut self, cmd: &Command) {
        match cmd {
            Command::Train { config, .. } => {
                self.busy = Some(Job::Starting);
                self.planned_epochs = Some(config.train.epochs);
                self.last_error = None;
                self.records.clear();
                self.loss_rows.clear();
                self.stage_scores.clear();
                self.phases_seen.clear();
            }
            Command::Resume(_) | Command::Finetune { .. } => self.busy = Some(Job::Starting),
            Command::OpenRun(_) => self.stage_scores.clear(),
            Command::Import { .. } => {
                self.busy = Some(Job::Starting);
                self.last_error = None;
                self.stage_scores.clear();
            }
            Command::ProbeDevice(_) => self.device = "device: probing...".into(),
            Command::Mask(req) => {
                self.mask_request = req.id;
                self.mask_asked_ratio = Some(req.ratio);
                self.mask_detection = None;
                self.mask_requested_at = Some(Instant::now());
                self.mask_pending = true;
            }
            _ => {}
        }
    }

    /// What `job` is doing, as the sidebar and the status bar say it. A mask job at a ratio the
    /// slider has left (the worker computes a drag's requests in turn, keeping only the latest)
    /// names the slider's ratio, so that the app never shows two ratios as the current one.
    pub fn job_text(&self, job: &Job) -> String {
        match (job, self.mask_asked_ratio) {
            (Job::Mask { ratio, epoch }, Some(asked)) if (ratio - asked).abs() > 1e-12 => format!("masking epoch {epoch}: catching up with the slider (ratio {asked:.3})"),
            _ => job.describe(),
        }
    }

    /// The id the next mask request gets.
    pub fn next_mask_request(&self) -> u64 {
        self.mask_request + 1
    }

    /// A mask request is about to go out without the user asking: for a run's snapshot
    /// (`key`), or again after one was cut short (`key` None).
    pub fn auto_mask_sent(&mut self, key: Option<(Option<PathBuf>, usize)>) {
        match key {
            Some(key) => self.auto_masked = Some(key),
            None => self.mask_retry = false,
        }
    }

    /// A stage's score arrays were asked of the worker's reader (`asked`), or could not be.
    pub fn scores_asked(&mut self, request: ScoresRequest, asked: bool) {
        let state = if asked { StageScores::Loading } else { StageScores::Missing("the worker thread is gone; restart the app".into()) };
        self.stage_scores.set(request, state);
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
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
            WorkerEvent::Background(job) => {
                // The background sweep's passes report progress too; it ends with the sweep
                // (a foreground job's progress is its own and ends with it).
                if job.is_none() && self.busy.is_none() {
                    self.evaluating = None;
                }
                self.background = job;
            }
            WorkerEvent::Device(d) => self.device = d,
            WorkerEvent::MaskAnswer { request, answer } => self.mask_answer(request, answer),
            WorkerEvent::MaskDetection { request, detection } => {
                if request == self.mask_request {
                    // The score on screen comes first; the answer is complete once nothing is pending.
                    let complete = detection.pending.is_empty();
                    self.mask_detection = Some(detection);
                    self.mask_pending = !complete;
                    if let (true, Some(t)) = (complete, self.mask_requested_at) {
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
                self.phases_seen.clear();
                self.clear_masks();
                self.data = None;
            }
            WorkerEvent::Engine(e) => self.apply_engine(e),
        }
    }

    fn apply_engine(&mut self, e: Event) {
        match e {
            Event::Info(s) => self.log(false, s),
            Event::PhaseStarted { phase, first_epoch, epochs, .. } => {
                if phase == Phase::Base && first_epoch == 1 {
                    self.records.clear();
                    self.loss_rows.clear();
                    self.phases_seen.clear();
                    self.clear_masks();
                }
                self.phases_seen.push(PhaseSeen { phase, first_epoch, epochs, ended: false });
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
                self.phases_ended();
                self.log(false, format!("{} phase {}", phase.name(), if stopped { "stopped" } else { "finished" }));
                self.batch = None;
            }
            Event::Exported(paths) => {
                // One line naming every file: the status bar shows the last message.
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                self.log(false, format!("exported {} file(s): {}", paths.len(), names.join(", ")));
                self.exported = paths;
            }
            Event::Error(msg) => {
                // A phase that fails ends without PhaseDone.
                self.phases_ended();
                self.mask_pending = false;
                self.log(true, msg);
            }
            Event::Idle => {
                self.phases_ended();
                self.busy = None;
                self.paused = false;
                self.evaluating = None;
            }
        }
    }
}

impl AppState {
    /// Every phase started so far has ended: the worker runs one job at a time.
    fn phases_ended(&mut self) {
        for p in &mut self.phases_seen {
            p.ended = true;
        }
    }

    /// (epochs done, epochs asked) of the fine-tune block holding `epoch` (see
    /// [`crate::run::phase_blocks`]) when it ended before the epochs it was asked for. Only a
    /// fine-tune this session saw starting can be told: a record does not say how many epochs
    /// its phase was asked for, so in a reopened run, or while the phase still runs, this is None.
    pub fn cut_short(&self, epoch: usize) -> Option<(usize, usize)> {
        let blocks = crate::run::phase_blocks(&self.records);
        let (_, _, block) = blocks.iter().find(|(_, _, b)| b.iter().any(|r| r.epoch == epoch))?;
        let (first, last) = (block.first()?, block.last()?);
        if first.phase == Phase::Base {
            return None;
        }
        // The start that trained the block's epochs (a resumed phase started again inside it).
        let seen = self.phases_seen.iter().rev().find(|s| s.phase == first.phase && (first.epoch..=last.epoch).contains(&s.first_epoch))?;
        let asked = seen.first_epoch - first.epoch + seen.epochs;
        let done = block.len();
        (seen.ended && done < asked).then_some((done, asked))
    }

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
        self.mask_answers += 1;
        self.mask_result = Some(answer);
    }
}


#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::run::tests::record;
    use crate::unleash::PreviewSize;
    use crate::worker::MaskRequest;

    /// A mask answer at `ratio` of epoch 1 with gamma `gamma`; a preview when `preview`.
    pub(crate) fn answer(ratio: f64, gamma: f64, preview: bool) -> Arc<AtypicalSet> {
        Arc::new(AtypicalSet {
            ratio,
            kind: MaskKind::Magnitude,
            epoch: 1,
            gamma,
            full_train_loss: 0.1,
            full_test_acc: 0.9,
            masked_test_acc: None,
            masked_train_acc: 0.8,
            samples: Vec::new(),
            masked_losses: Vec::new(),
            masked_detection: None,
            full_detection: None,
            preview: preview.then(PreviewSize::default),
        })
    }

    #[test]
    fn the_background_sweeps_progress_ends_with_the_sweep() {
        let mut st = AppState::new();
        let sweeping = Job::Sweep { epoch: 2, done: 11, total: 12 };
        st.apply(WorkerEvent::Background(Some(sweeping)));
        st.apply(WorkerEvent::Engine(Event::Evaluating { epoch: 2, set: "sweep 0.950".into(), done: 2000, total: 2000 }));
        assert!(st.evaluating.is_some());
        st.apply(WorkerEvent::Background(None));
        assert!(st.evaluating.is_none(), "a finished sweep's progress bar stays: {:?}", st.evaluating);
        // While a foreground job runs, its own progress stays.
        st.apply(WorkerEvent::Busy(Job::Training(Phase::Base)));
        st.apply(WorkerEvent::Engine(Event::Evaluating { epoch: 3, set: "mnist".into(), done: 10, total: 2000 }));
        st.apply(WorkerEvent::Background(None));
        assert!(st.evaluating.is_some());
    }

    fn mask(id: u64, ratio: f64) -> Command {
        Command::Mask(MaskRequest { id, ratio, kind: MaskKind::Magnitude, epoch: Some(1), score: crate::ood::Score::Energy })
    }

    #[test]
    fn only_the_answer_to_the_latest_request_sent_is_taken() {
        let mut st = AppState::new();
        st.sent(&mask(st.next_mask_request(), 0.3));
        st.sent(&mask(st.next_mask_request(), 0.6));
        assert_eq!((st.mask_request, st.mask_pending), (2, true));
        st.apply(WorkerEvent::MaskAnswer { request: 1, answer: answer(0.3, 1.0, false) });
        assert!(st.mask_result.is_none() && st.mask_answers == 0, "an answer to an older request is dropped");
        st.apply(WorkerEvent::MaskAnswer { request: 2, answer: answer(0.6, 2.0, true) });
        st.apply(WorkerEvent::MaskAnswer { request: 2, answer: answer(0.6, 2.5, false) });
        assert_eq!((st.mask_result.as_ref().map(|m| m.gamma), st.mask_answers), (Some(2.5), 2));
        assert!(st.last_preview_latency.is_some());
    }

    #[test]
    fn a_resumed_fine_tune_counts_the_epochs_before_its_restart() {
        let mut st = AppState::new();
        for e in 1..=2 {
            st.apply(WorkerEvent::Engine(Event::EpochDone { record: Box::new(record(e)), per_sample_loss: Arc::new(vec![0.5]) }));
        }
        let um = |epoch, phase_epoch| {
            let mut r = record(epoch);
            (r.phase, r.phase_epoch, r.from_epoch, r.gamma) = (Phase::Um, phase_epoch, 2, Some(0.1));
            WorkerEvent::Engine(Event::EpochDone { record: Box::new(r), per_sample_loss: Arc::new(vec![0.5]) })
        };
        st.apply(um(3, 1));
        // Restarted at its second epoch of three: two left.
        st.apply(WorkerEvent::Engine(Event::PhaseStarted { phase: Phase::Um, first_epoch: 4, epochs: 2, batches: 1, samples: 1 }));
        st.apply(um(4, 2));
        assert_eq!(st.cut_short(4), None, "still running");
        st.apply(WorkerEvent::Engine(Event::PhaseDone { phase: Phase::Um, stopped: true }));
        assert_eq!((st.cut_short(3), st.cut_short(4), st.cut_short(2)), (Some((2, 3)), Some((2, 3)), None));
    }

    #[test]
    fn sending_a_training_starts_the_mirror_afresh() {
        let mut st = AppState::new();
        st.apply(WorkerEvent::Engine(Event::EpochDone { record: Box::new(record(1)), per_sample_loss: Arc::new(vec![0.5]) }));
        st.log(true, "an old error");
        let config = crate::config::ExperimentConfig { data: crate::config::DataConfig::sample(), train: crate::config::TrainConfig { epochs: 7, ..Default::default() }, detectors: Default::default() };
        st.sent(&Command::Train { config, out: PathBuf::from("run") });
        assert!(st.records.is_empty() && st.loss_rows.is_empty() && st.last_error.is_none());
        assert_eq!((st.busy.clone(), st.planned_epochs), (Some(Job::Starting), Some(7)));
    }

    #[test]
    fn a_mask_job_behind_the_slider_names_the_sliders_ratio() {
        let mut st = AppState::new();
        let mask = |id, ratio| Command::Mask(MaskRequest { id, ratio, kind: MaskKind::Magnitude, epoch: Some(1), score: crate::ood::Score::Energy });
        let computing = Job::Mask { ratio: 0.48, epoch: 3 };
        assert_eq!(st.job_text(&computing), "masking epoch 3 at ratio 0.480");
        // A drag: the worker computes 0.48 while the slider already reads 0.2.
        st.sent(&mask(st.next_mask_request(), 0.48));
        st.sent(&mask(st.next_mask_request(), 0.2));
        assert_eq!(st.job_text(&computing), "masking epoch 3: catching up with the slider (ratio 0.200)");
        assert_eq!(st.job_text(&Job::Mask { ratio: 0.2, epoch: 3 }), "masking epoch 3 at ratio 0.200");
    }
}
