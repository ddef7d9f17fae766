//! What the engine reports while it works. The worker forwards these over a channel to the GUI;
//! the CLI renders the same events as progress bars and tables.

use crate::run::{EpochRecord, Phase};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone)]
pub enum Event {
    /// A line for the status bar / log (device chosen, data loaded, ...).
    Info(String),
    PhaseStarted { phase: Phase, first_epoch: usize, epochs: usize, batches: usize, samples: usize },
    Batch(BatchProgress),
    /// An evaluation pass over one set.
    Evaluating { epoch: usize, set: String, done: usize, total: usize },
    EpochDone { record: Box<EpochRecord>, per_sample_loss: Arc<Vec<f32>> },
    PhaseDone { phase: Phase, stopped: bool },
    /// A finished export: what was written where.
    Exported(Vec<std::path::PathBuf>),
    /// A job failed; the session stays usable.
    Error(String),
    /// The worker is idle again.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    pub phase: Phase,
    pub epoch: usize,
    pub phase_epoch: usize,
    pub phase_epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
    pub samples_per_sec: f64,
    /// Seconds left in the phase, from the rate so far (training batches only).
    pub eta_secs: f64,
}

/// Stop and pause requests, shared between whoever drives a job and the job itself. Atomics, not
/// locks: the UI never waits on the worker.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    pause: AtomicBool,
}

impl Control {
    pub fn new() -> Arc<Control> {
        Arc::new(Control::default())
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
    }

    pub fn set_paused(&self, paused: bool) {
        self.pause.store(paused, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Clears a stop request before a new job starts.
    pub fn reset(&self) {
        self.stop.store(false, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
    }

    /// Routes Ctrl-C (SIGINT) and SIGTERM here, for the CLI: the first one requests a stop (the
    /// job finishes or drops the epoch in flight, so the run stays complete and resumable); a
    /// second one exits at once with status 130 (the run is still safe: every file is written
    /// atomically and an epoch counts only once its events line is down). SIGTERM is what a batch
    /// scheduler (Slurm, Kubernetes) sends before it kills a job at its time limit or on
    /// preemption, so a scheduled job stops as cleanly as one stopped at the terminal.
    #[cfg(unix)]
    pub fn stop_on_ctrl_c(self: &Arc<Self>) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let control = self.clone();
        std::thread::Builder::new().name("ctrl-c".into()).spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                let name = if signal == SIGTERM { "SIGTERM" } else { "Ctrl-C" };
                if seen == 1 {
                    eprintln!("\n{name}: stopping: the epoch in flight is dropped, every complete epoch is kept (Ctrl-C or SIGTERM again to quit at once)");
                    control.request_stop();
                } else {
                    eprintln!("\nquit: the run keeps every complete epoch");
                    std::process::exit(130);
                }
            }
        })?;
        Ok(())
    }

    /// Blocks while paused; Err(Stopped) once a stop is requested.
    pub fn checkpoint(&self) -> crate::error::Result<()> {
        while self.is_paused() && !self.stop_requested() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if self.stop_requested() { Err(crate::error::Error::Stopped) } else { Ok(()) }
    }
}

/// Where events go: the worker's channel, the CLI's renderer, or nowhere.
pub type Sink<'a> = &'a mut dyn FnMut(Event);

/// A duration for people: "3m07s", "1h05m"; "?" when unknown.
pub fn format_secs(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, (s % 3600) / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}
