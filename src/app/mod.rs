//! The desktop app: the engine mirror (`state`) updated by the worker's events, and one panel per
//! view, each owning its widget state. A panel reads the mirror and returns what the user asked for
//! (an `Action`); the update loop carries it out. The UI thread never waits on the worker: commands
//! go out over a channel, events come back over another, and pause/stop are atomics.

mod atypical;
mod compare;
mod dialogs;
mod import;
mod losses;
mod mask;
mod palette;
mod plots;
mod settings;
mod setup;
pub mod state;
mod training;
mod widgets;

use crate::config::{DataConfig, DeviceChoice, ExperimentConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::worker::{self, Command, ExportRequest, MaskRequest, Repaint, ScoresRequest, WorkerHandle};
use eframe::egui;
use state::AppState;
pub use atypical::AtypicalPanel;
pub use compare::ComparePanel;
pub use losses::LossesPanel;
pub use mask::{MaskPanel, MaskSnapshot};
pub use setup::SetupPanel;
pub use training::TrainingPanel;
use std::path::PathBuf;
use std::time::Instant;

/// How the app starts.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// A run folder to open at start.
    pub run: Option<PathBuf>,
    /// Overrides the device of the default config (tests use the CPU).
    pub device: Option<DeviceChoice>,
    /// The experiment to set up instead of the sample data's.
    pub config: Option<ExperimentConfig>,
    /// The run folder a training started from the app writes.
    pub out: Option<PathBuf>,
    /// Start training at launch (`unleash gui --start`).
    pub start: bool,
    /// Never try the desktop's file dialog; ask for paths in the app (tests;
    /// `UNLEASH_NO_NATIVE_DIALOG=1`).
    pub no_native_dialogs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DialogPurpose {
    OpenRun,
    TrainSet,
    TestSet,
    AddOod,
    AddOodFolder,
    ValSet,
    ExportModel,
    ExportReport,
    ExportCsv,
    ExportSheet,
    /// A checkpoint to import as a new run.
    ImportModel,
}

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

/// What a panel asks of the app: the update loop carries it out (sends the worker its command,
/// opens a dialog, shows a sample).
#[derive(Debug)]
pub enum Action {
    /// Train a fresh model with the setup panel's experiment.
    Start,
    Pause(bool),
    Stop,
    /// Send the worker this command.
    Send(Command),
    /// A fine-tune: sent, and the training tab shown to watch it.
    Finetune(Command),
    /// The mask explorer's answer at its ratio, kind and snapshot.
    RequestMask,
    /// Read these score arrays (those not asked yet) off the UI thread.
    ReadScores(Vec<ScoresRequest>),
    Dialog(DialogPurpose),
    /// Open this training sample in the detail window.
    ShowSample(usize),
}

pub struct UnleashApp {
    /// The engine mirror; only `AppState::apply` and `AppState::sent` write it.
    pub state: AppState,
    pub tab: Tab,
    pub setup: SetupPanel,
    pub training: TrainingPanel,
    pub losses: LossesPanel,
    pub atypical: AtypicalPanel,
    pub mask: MaskPanel,
    pub compare: ComparePanel,
    /// The window's close button was pressed while a job ran: asking whether to stop it.
    confirm_close: bool,
    worker: WorkerHandle,
    dialog: Option<dialogs::PendingDialog>,
    /// The app's own path question, where no native dialog opens.
    pub path_prompt: Option<dialogs::PathPrompt>,
    /// File > Import model...'s window, once a checkpoint is chosen.
    pub import: Option<import::ImportPanel>,
    no_native_dialogs: bool,
    /// Seconds spent in `ui` per frame, for the frame-time figures.
    pub frame_times: Vec<f64>,
    /// UNLEASH_FRAME_STATS=path: frame times and the last mask latency are written there (JSON)
    /// every 100 frames and at exit.
    frame_stats: Option<PathBuf>,
    /// The mask explorer's choices kept with the run (`app-settings.json`), read and written off
    /// the UI thread.
    settings_io: settings::SettingsIo,
    settings: settings::Tracker,
}

impl UnleashApp {
    pub fn new(ctx: &egui::Context, options: AppOptions) -> UnleashApp {
        let repaint_ctx = ctx.clone();
        let worker = worker::spawn(move |urgency| match urgency {
            Repaint::Now => repaint_ctx.request_repaint(),
            Repaint::Soon => repaint_ctx.request_repaint_after(PROGRESS_FRAME),
        });
        let mut config = options.config.clone().unwrap_or_else(|| ExperimentConfig { data: DataConfig::sample(), train: TrainConfig { epochs: 10, ..TrainConfig::default() }, detectors: Default::default() });
        if let Some(d) = options.device {
            config.train.device = d;
        }
        let mut app = UnleashApp {
            state: AppState::new(),
            tab: Tab::Training,
            setup: SetupPanel::new(config),
            training: TrainingPanel::default(),
            losses: LossesPanel::default(),
            atypical: AtypicalPanel::default(),
            mask: MaskPanel::default(),
            compare: ComparePanel::default(),
            confirm_close: false,
            worker,
            dialog: None,
            path_prompt: None,
            import: None,
            no_native_dialogs: options.no_native_dialogs || std::env::var_os("UNLEASH_NO_NATIVE_DIALOG").is_some_and(|v| v == "1"),
            frame_times: Vec::new(),
            frame_stats: std::env::var_os("UNLEASH_FRAME_STATS").map(PathBuf::from),
            settings_io: settings::SettingsIo::spawn(),
            settings: settings::Tracker::default(),
        };
        if let Some(out) = &options.out {
            app.setup.out_dir = setup::absolute(&out.display().to_string());
        }
        app.probe_device();
        if let Some(run) = options.run {
            app.open_run(run);
        }
        if options.start {
            app.start_training();
        }
        app
    }

    fn probe_device(&mut self) {
        // The probe may take seconds (GPU drivers); the worker does it and reports the name.
        let choice = self.setup.config.train.device;
        match choice {
            DeviceChoice::Cpu => self.state.apply(worker::WorkerEvent::Device(crate::device::cpu().description)),
            _ => self.worker_send(Command::ProbeDevice(choice)),
        }
    }

    /// Sends the worker `cmd`, the mirror noting it (a job starting, a request in flight).
    pub fn send(&mut self, cmd: Command) {
        self.state.sent(&cmd);
        self.worker_send(cmd);
    }

    fn worker_send(&mut self, cmd: Command) {
        if self.worker.commands.send(cmd).is_err() {
            self.state.log(true, "the worker thread is gone; restart the app (finished epochs are on disk)");
        }
    }

    /// Starts base training with the current setup.
    pub fn start_training(&mut self) {
        if self.state.is_busy() {
            self.state.log(true, "a job is running; stop it before starting another");
            return;
        }
        if let Err(e) = self.setup.config.train.validate() {
            self.state.log(true, e.to_string());
            return;
        }
        // Relative to the working directory now, absolute from here on: the field says where it went.
        self.setup.out_dir = setup::absolute(&self.setup.out_dir);
        let out = PathBuf::from(&self.setup.out_dir);
        if out.join("events.jsonl").exists() {
            self.setup.out_dir = format!("{}-{}", self.setup.out_dir, self.state.records.len() + 1);
        }
        self.settings.started(PathBuf::from(&self.setup.out_dir));
        self.send(Command::Train { config: self.setup.config.clone(), out: PathBuf::from(&self.setup.out_dir) });
    }

    pub fn pause(&mut self, paused: bool) {
        self.worker.control.set_paused(paused);
        self.state.set_paused(paused);
    }

    pub fn stop(&mut self) {
        self.worker.control.request_stop();
    }

    /// Asks for the mask explorer's answer at the slider's ratio and snapshot (the worker
    /// coalesces a drag's requests, and answers to older ones are dropped by their id).
    pub fn request_mask(&mut self) {
        let Some(epoch) = self.mask_epoch() else { return };
        let req = MaskRequest { id: self.state.next_mask_request(), ratio: self.mask.ratio, kind: self.mask.kind, epoch: Some(epoch), score: self.mask.table_score };
        self.send(Command::Mask(req));
    }

    /// The epoch the mask explorer's snapshot choice names, if it exists yet.
    pub fn mask_epoch(&self) -> Option<usize> {
        self.mask.epoch(&self.state)
    }

    /// The mask explorer never opens empty: once a run has a trained snapshot and the worker is
    /// free, the answer at the current ratio is asked for (once per run and snapshot).
    fn auto_mask(&mut self) {
        if self.state.mask_retry && !self.state.is_busy() {
            // The answer the slider asked for was cut short by another job: ask again, after it.
            self.state.auto_mask_sent(None);
            self.request_mask();
            return;
        }
        let st = &self.state;
        if st.is_busy() || st.mask_pending || st.mask_result.is_some() || st.data.is_none() {
            return;
        }
        let Some(epoch) = self.mask_epoch() else { return };
        let key = (st.run_dir.clone(), epoch);
        if st.auto_masked.as_ref() == Some(&key) {
            return;
        }
        self.state.auto_mask_sent(Some(key));
        self.request_mask();
    }

    /// Opens a run folder (File > Open run ends here; tests call it directly).
    pub fn open_run(&mut self, dir: PathBuf) {
        self.send(Command::OpenRun(dir));
    }

    /// Stages' score arrays for the compare view, asked of the worker's reader the first time.
    fn read_scores(&mut self, requests: Vec<ScoresRequest>) {
        for request in requests {
            if self.state.stage_scores.get(&request).is_none() {
                let asked = self.worker.read_scores(request.clone());
                self.state.scores_asked(request, asked);
            }
        }
    }

    /// Carries out what a panel asked for.
    fn act(&mut self, action: Action, ctx: &egui::Context) {
        match action {
            Action::Start => self.start_training(),
            Action::Pause(paused) => self.pause(paused),
            Action::Stop => self.stop(),
            Action::Send(cmd) => self.send(cmd),
            Action::Finetune(cmd) => {
                self.tab = Tab::Training;
                self.send(cmd);
            }
            Action::RequestMask => self.request_mask(),
            Action::ReadScores(requests) => self.read_scores(requests),
            Action::Dialog(purpose) => self.open_dialog(purpose, ctx),
            Action::ShowSample(index) => self.atypical.selected_sample = Some(index),
        }
    }

    /// Exports straight to the given paths (the dialogs end here; tests call it directly).
    pub fn export_to(&mut self, req: ExportRequest) {
        self.send(Command::Export(req));
    }

    fn open_dialog(&mut self, purpose: DialogPurpose, ctx: &egui::Context) {
        if self.dialog.is_some() || self.path_prompt.is_some() {
            return;
        }
        let why = if self.no_native_dialogs { Some("file dialogs are off (UNLEASH_NO_NATIVE_DIALOG)".to_string()) } else { dialogs::no_native_dialog_reason() };
        if let Some(why) = why {
            self.ask_in_app(purpose, why);
            return;
        }
        let start_dir = std::env::current_dir().unwrap_or_default();
        let name = dialogs::suggested_name(purpose).map(str::to_string);
        self.dialog = Some(dialogs::PendingDialog::open(purpose, &start_dir, name, ctx));
    }

    /// Opens the app's own path question for `purpose`, saying why.
    fn ask_in_app(&mut self, purpose: DialogPurpose, why: String) {
        let data = &self.setup.config.data;
        let current = match purpose {
            DialogPurpose::TrainSet => Some(data.train.clone()),
            DialogPurpose::TestSet => Some(data.test.clone()),
            DialogPurpose::ValSet => Some(data.val_ood.clone()),
            _ => None,
        };
        self.state.log(false, format!("{why}: asking for the path in the app"));
        self.path_prompt = Some(dialogs::PathPrompt::new(purpose, self.state.run_dir.as_deref(), current.as_deref(), why));
    }

    fn poll_dialog(&mut self) {
        let Some(d) = &self.dialog else { return };
        let Some(answer) = d.poll() else { return };
        let purpose = d.purpose;
        self.dialog = None;
        match answer {
            dialogs::Answer::Picked(paths) => self.use_paths(purpose, paths),
            dialogs::Answer::Cancelled => {}
            dialogs::Answer::NeverShown => self.ask_in_app(purpose, "the file dialog closed at once (no desktop portal or zenity answered)".to_string()),
        }
    }

    /// The app's path question, while it is open.
    fn path_prompt_ui(&mut self, ctx: &egui::Context) {
        let Some(prompt) = &mut self.path_prompt else { return };
        let Some(answer) = prompt.ui(ctx) else { return };
        let purpose = prompt.purpose;
        self.path_prompt = None;
        if let Some(path) = answer {
            let exporting = dialogs::suggested_name(purpose).is_some();
            self.use_paths_with(purpose, vec![path], exporting);
        }
    }

    /// What a chosen path is for.
    fn use_paths(&mut self, purpose: DialogPurpose, paths: Vec<PathBuf>) {
        self.use_paths_with(purpose, paths, false);
    }

    /// `create_folder`: an export may create its missing folder (the app's own path question
    /// offers `<run>/export/`, which does not exist yet).
    fn use_paths_with(&mut self, purpose: DialogPurpose, paths: Vec<PathBuf>, create_folder: bool) {
        let first = paths[0].clone();
        let s = |p: &PathBuf| p.display().to_string();
        let export = |req: ExportRequest| ExportRequest { create_folder, ..req };
        match purpose {
            DialogPurpose::OpenRun => self.open_run(first),
            DialogPurpose::TrainSet => self.setup.config.data.train = s(&first),
            DialogPurpose::TestSet => self.setup.config.data.test = s(&first),
            DialogPurpose::ValSet => self.setup.config.data.val_ood = s(&first),
            DialogPurpose::AddOod | DialogPurpose::AddOodFolder => self.setup.config.data.ood.extend(paths.iter().map(s)),
            DialogPurpose::ExportModel => self.export_to(export(ExportRequest { model: Some(first), ..Default::default() })),
            DialogPurpose::ExportReport => self.export_to(export(ExportRequest { report: Some(first), ..Default::default() })),
            DialogPurpose::ExportCsv => self.export_to(export(ExportRequest { atypical_csv: Some(first), ..Default::default() })),
            DialogPurpose::ExportSheet => self.export_to(export(ExportRequest { contact_sheet: Some(first), ..Default::default() })),
            DialogPurpose::ImportModel => self.import = Some(import::ImportPanel::new(first, &self.setup.out_dir)),
        }
    }

    /// The import window, while it is open: Import sends the job to the worker.
    fn import_ui(&mut self, ctx: &egui::Context) {
        let Some(panel) = &mut self.import else { return };
        match panel.ui(ctx, &self.setup.config) {
            None => {}
            Some(import::ImportAnswer::Cancel) => self.import = None,
            Some(import::ImportAnswer::Import { config, spec, out }) => {
                self.import = None;
                self.send(Command::Import { config: *config, spec, out });
            }
        }
    }

    /// Applies every event the worker has sent since the last frame.
    pub fn drain_events(&mut self) {
        while let Ok(ev) = self.worker.events.try_recv() {
            // An opened run sets up the setup panel with its experiment, and the mask explorer
            // with the choices kept in it.
            if let worker::WorkerEvent::RunLoaded { config, dir, .. } = &ev {
                self.setup.config = (**config).clone();
                self.settings.opened(&self.settings_io, dir.clone());
            }
            self.state.apply(ev);
        }
    }

    /// The run's kept choices: those read go to the mask explorer (which asks for the answer at
    /// the restored ratio); those changed are saved once no drag is under way.
    fn sync_settings(&mut self, ctx: &egui::Context) {
        while let Ok(reply) = self.settings_io.replies.try_recv() {
            match reply {
                settings::Reply::Read(dir, read) => {
                    let before = (self.mask.ratio, self.mask.kind, self.mask.snapshot);
                    if let Some(problem) = self.settings.answered(dir, read, &mut self.mask) {
                        self.state.log(true, problem);
                    }
                    let moved = (self.mask.ratio, self.mask.kind, self.mask.snapshot) != before;
                    if moved && (self.state.mask_result.is_some() || self.state.mask_pending) {
                        self.request_mask();
                    }
                }
                settings::Reply::WriteFailed(e) => self.state.log(true, e),
            }
        }
        let dragging = ctx.input(|i| i.pointer.any_down());
        if dragging || self.state.records.is_empty() {
            return;
        }
        if let Some((dir, now)) = self.settings.changes_to_save(self.state.run_dir.as_deref(), &self.mask) {
            self.settings_io.write(dir, now);
        }
    }

    fn menu(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open run...").clicked() {
                    self.open_dialog(DialogPurpose::OpenRun, ui.ctx());
                    ui.close();
                }
                if ui.add_enabled(!self.state.is_busy(), egui::Button::new("Import model...")).on_hover_text("A PyTorch (.pt, .pth, .ckpt) or safetensors checkpoint as the first epoch of a new run, on the Setup panel's data and architecture").clicked() {
                    self.open_dialog(DialogPurpose::ImportModel, ui.ctx());
                    ui.close();
                }
                ui.separator();
                let has_model = self.state.data.is_some() && !self.state.records.is_empty();
                if ui.add_enabled(has_model, egui::Button::new("Export model (.bpk + .safetensors)...")).clicked() {
                    self.open_dialog(DialogPurpose::ExportModel, ui.ctx());
                    ui.close();
                }
                if ui.add_enabled(!self.state.records.is_empty(), egui::Button::new("Export report (markdown + JSON)...")).clicked() {
                    self.open_dialog(DialogPurpose::ExportReport, ui.ctx());
                    ui.close();
                }
                let has_mask = self.state.mask_result.is_some();
                if ui.add_enabled(has_mask, egui::Button::new("Export atypical list (CSV)...")).clicked() {
                    self.open_dialog(DialogPurpose::ExportCsv, ui.ctx());
                    ui.close();
                }
                if ui.add_enabled(has_mask, egui::Button::new("Export contact sheet (PNG)...")).clicked() {
                    self.open_dialog(DialogPurpose::ExportSheet, ui.ctx());
                    ui.close();
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.separator();
            ui.label(egui::RichText::new(&self.state.device).strong()).on_hover_text("The compute device: a GPU adapter name, or CPU");
            if let Some(dir) = &self.state.run_dir {
                ui.separator();
                ui.label(format!("run: {}", dir.display()));
            }
        });
    }

    /// Closing the window while a job runs asks first; "Stop and close" stops the job the way
    /// Stop does (finished epochs stay on disk, the run stays resumable), then closes.
    fn confirm_close(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) && self.state.is_busy() && !self.worker.control.stop_requested() {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.confirm_close = true;
        }
        if !self.confirm_close {
            return;
        }
        let what = self.state.busy.as_ref().map_or_else(|| "a job".to_string(), |j| j.describe());
        egui::Window::new("Close unleash?").collapsible(false).resizable(false).anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0]).show(ctx, |ui| {
            ui.label(format!("The worker is busy ({what}). Finished epochs are on disk; the epoch in flight is dropped and the run can be resumed."));
            ui.horizontal(|ui| {
                if ui.button("Stop and close").clicked() {
                    self.stop();
                    self.confirm_close = false;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
                if ui.button("Keep working").clicked() {
                    self.confirm_close = false;
                }
            });
        });
        if !self.state.is_busy() {
            // The job ended while the question was open.
            self.confirm_close = false;
        }
    }

    /// The setup panel, the tabs and the sample window: each reads the mirror and draws with its
    /// own state, and returns what the user asked for.
    fn panels(&mut self, ui: &mut egui::Ui) -> Vec<Action> {
        let mut asked = Vec::new();
        let view = &self.state;
        let setup = &mut self.setup;
        let left = egui::Panel::left("setup").default_size(330.0).show(ui, |ui| egui::ScrollArea::vertical().show(ui, |ui| setup.ui(ui, view)).inner);
        asked.extend(left.inner);
        // UM's gamma comes from the mask explorer's choices; the loss views draw it too.
        let gamma = self.mask.gamma(view);
        let (tab, training, losses, atypical, mask, compare) = (&mut self.tab, &mut self.training, &mut self.losses, &mut self.atypical, &mut self.mask, &mut self.compare);
        let central = egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                for (t, name) in Tab::ALL {
                    ui.selectable_value(tab, t, name);
                }
            });
            ui.separator();
            match *tab {
                Tab::Training => {
                    training.ui(ui, view);
                    None
                }
                Tab::Losses => losses.ui(ui, view, gamma),
                Tab::Atypical => atypical.ui(ui, view),
                Tab::Mask => mask.ui(ui, view),
                Tab::Compare => compare.ui(ui, view),
            }
        });
        asked.extend(central.inner);
        atypical.sample_window(ui.ctx(), view, mask.gamma(view));
        asked
    }

    fn write_frame_stats(&self) {
        if let Some(path) = &self.frame_stats {
            let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
            let json = serde_json::json!({"frame_seconds": self.frame_times, "mask_preview_latency_secs": secs(self.state.last_preview_latency), "mask_latency_secs": secs(self.state.last_mask_latency)});
            let _ = crate::fsio::write_atomic(path, json.to_string().as_bytes());
        }
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = false;
        ui.horizontal(|ui| {
            if let Some(e) = &self.state.last_error {
                ui.colored_label(egui::Color32::from_rgb(220, 60, 50), format!("Error: {e}"));
                if ui.small_button("Dismiss").clicked() {
                    dismiss = true;
                }
            } else {
                let job = match (&self.state.busy, &self.state.background) {
                    (Some(b), _) => Some(format!("Working: {}", self.state.job_text(b))),
                    (None, Some(b)) => Some(format!("In the background: {}", b.describe())),
                    (None, None) => None,
                };
                // The last message stays beside a job (an export's files while a sweep runs).
                match (job, self.state.messages.last()) {
                    (Some(j), Some((_, m))) => {
                        ui.label(j);
                        ui.separator();
                        ui.label(m);
                    }
                    (Some(j), None) => {
                        ui.label(j);
                    }
                    (None, Some((_, m))) => {
                        ui.label(m);
                    }
                    (None, None) => {
                        ui.label("Ready. Set up the data on the left and press Start.");
                    }
                }
            }
        });
        if dismiss {
            self.state.dismiss_error();
        }
    }
}

impl eframe::App for UnleashApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let t0 = Instant::now();
        self.drain_events();
        self.poll_dialog();
        self.sync_settings(ui.ctx());
        self.auto_mask();
        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        // What the panels ask for is carried out once they are all drawn.
        for action in self.panels(ui) {
            self.act(action, ui.ctx());
        }
        self.path_prompt_ui(ui.ctx());
        self.import_ui(ui.ctx());
        self.confirm_close(ui.ctx());
        self.frame_times.push(t0.elapsed().as_secs_f64());
        if self.frame_times.len() % 100 == 0 {
            self.write_frame_stats();
        }
        if self.state.is_busy() {
            // The busy time and spinner move on between events (a slow batch), without spinning.
            ui.ctx().request_repaint_after(PROGRESS_FRAME);
        }
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.write_frame_stats();
    }
}

/// The longest a progress event waits for its redraw: at most 2 frames/s from progress, so that
/// drawing (software OpenGL on most CPU-only machines, on the cores that train) stays small next to
/// training. Epochs, answers and errors still redraw at once.
const PROGRESS_FRAME: std::time::Duration = std::time::Duration::from_millis(500);

/// Opens the app window (glow renderer: runs on any OpenGL, including software).
pub fn run_gui(mut app_options: AppOptions) -> Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_title("unleash - Unleashing Mask for OOD detection").with_inner_size([1400.0, 900.0]).with_min_inner_size([900.0, 600.0]),
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    if app_options.device.is_none() {
        app_options.device = std::env::var("UNLEASH_DEVICE").ok().map(|d| DeviceChoice::parse(&d)).transpose()?;
    }
    eframe::run_native("unleash", options, Box::new(move |cc| Ok(Box::new(UnleashApp::new(&cc.egui_ctx, app_options)))))
        .map_err(|e| Error::Other(format!("cannot open the window: {e} (is a display available? the CLI subcommands work without one)")))
}
