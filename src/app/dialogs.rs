//! Choosing a path: the desktop's file dialog (rfd, on its own thread: it blocks), or, where none
//! can open, the app's own path field. On Linux rfd needs a desktop portal on the D-Bus session
//! bus or the `zenity` program; minimal desktops, tiling window managers and remote X sessions
//! often have neither, and rfd then returns "cancelled" at once, so a dialog that never opened
//! would look like nothing happening. The app asks its own question instead, and says why.

use super::DialogPurpose;
use eframe::egui;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A dialog answered this fast was never shown: no one cancels a dialog within 300 ms.
const NEVER_SHOWN: Duration = Duration::from_millis(300);

/// A native dialog running on its own thread.
pub struct PendingDialog {
    pub purpose: DialogPurpose,
    rx: crossbeam_channel::Receiver<(Option<Vec<PathBuf>>, Duration)>,
}

/// What a pending dialog came back with.
pub enum Answer {
    Picked(Vec<PathBuf>),
    Cancelled,
    /// It closed at once: no dialog was shown; ask in the app.
    NeverShown,
}

impl PendingDialog {
    /// Starts the desktop's dialog for `purpose` in `start_dir`, suggesting `file_name` to save.
    pub fn open(purpose: DialogPurpose, start_dir: &Path, file_name: Option<String>, ctx: &egui::Context) -> PendingDialog {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let ctx = ctx.clone();
        let start_dir = start_dir.to_path_buf();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let d = rfd::FileDialog::new().set_directory(start_dir);
            let d = match file_name {
                Some(name) => d.set_file_name(name),
                None => d,
            };
            let picked = match purpose {
                DialogPurpose::OpenRun | DialogPurpose::AddOodFolder => d.pick_folder().map(|p| vec![p]),
                DialogPurpose::TrainSet | DialogPurpose::TestSet | DialogPurpose::ValSet => {
                    d.add_filter("datasets", &["gz", "ubyte", "idx", "bin"]).pick_file().map(|p| vec![p])
                }
                DialogPurpose::AddOod => d.add_filter("datasets", &["gz", "ubyte", "idx", "bin"]).pick_files(),
                DialogPurpose::ImportModel => d.add_filter("checkpoints", &["pt", "pth", "ckpt", "safetensors"]).pick_file().map(|p| vec![p]),
                DialogPurpose::ExportModel | DialogPurpose::ExportReport | DialogPurpose::ExportCsv | DialogPurpose::ExportSheet => {
                    d.save_file().map(|p| vec![p])
                }
            };
            let _ = tx.send((picked, t0.elapsed()));
            ctx.request_repaint();
        });
        PendingDialog { purpose, rx }
    }

    /// The answer, once the dialog has closed.
    pub fn poll(&self) -> Option<Answer> {
        let (picked, took) = self.rx.try_recv().ok()?;
        Some(match picked {
            Some(paths) if !paths.is_empty() => Answer::Picked(paths),
            _ if took < NEVER_SHOWN => Answer::NeverShown,
            _ => Answer::Cancelled,
        })
    }
}

/// Why no native dialog can open here, if that can be told before trying: on Linux and the BSDs,
/// neither a D-Bus session bus (for the desktop portal) nor `zenity` on PATH.
pub fn no_native_dialog_reason() -> Option<String> {
    if !cfg!(all(unix, not(target_os = "macos"))) {
        return None;
    }
    let has_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty());
    let has_zenity = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("zenity").is_file()));
    (!has_bus && !has_zenity).then(|| "no file dialog can open here (no D-Bus session for a desktop portal, and no zenity)".to_string())
}

/// The file name a save dialog suggests.
pub fn suggested_name(purpose: DialogPurpose) -> Option<&'static str> {
    match purpose {
        DialogPurpose::ExportModel => Some("model"),
        DialogPurpose::ExportReport => Some("report"),
        DialogPurpose::ExportCsv => Some("atypical.csv"),
        DialogPurpose::ExportSheet => Some("atypical.png"),
        _ => None,
    }
}

/// The app's own path question, where no native dialog opens.
pub struct PathPrompt {
    pub purpose: DialogPurpose,
    pub path: String,
    /// Why the app asks (no dialog could open).
    pub why: String,
}

impl PathPrompt {
    /// Pre-filled: exports go to `<run>/export/<name>`, a run is looked for in `runs/`, a data
    /// set starts from `current`.
    pub fn new(purpose: DialogPurpose, run_dir: Option<&Path>, current: Option<&str>, why: String) -> PathPrompt {
        let cwd = std::env::current_dir().unwrap_or_default();
        let path = match (suggested_name(purpose), purpose) {
            (Some(name), _) => run_dir.map_or_else(|| cwd.join("export"), |r| r.join("export")).join(name),
            (None, DialogPurpose::OpenRun) => run_dir.map_or_else(|| cwd.join("runs"), Path::to_path_buf),
            (None, _) => current.map_or_else(|| cwd.clone(), PathBuf::from),
        };
        PathPrompt { purpose, path: path.display().to_string(), why }
    }

    /// Draws the question; Some(path) when the user confirms, Some(None) when they cancel.
    pub fn ui(&mut self, ctx: &egui::Context) -> Option<Option<PathBuf>> {
        let mut answer = None;
        let verb = if suggested_name(self.purpose).is_some() { "Export" } else { "Open" };
        egui::Window::new("Choose a path").collapsible(false).resizable(false).anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0]).show(ctx, |ui| {
            ui.label(format!("{}: type the path.", capitalised(&self.why)));
            if suggested_name(self.purpose).is_some() {
                ui.label("Exports write the file(s) named here; a missing folder is created.");
            }
            ui.add(egui::TextEdit::singleline(&mut self.path).desired_width(560.0)).widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, true, "path"));
            ui.horizontal(|ui| {
                if ui.button(verb).clicked() && !self.path.trim().is_empty() {
                    answer = Some(Some(PathBuf::from(self.path.trim())));
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(None);
                }
            });
        });
        answer
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().collect::<String>() + c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_prefilled_into_the_runs_export_folder() {
        let p = PathPrompt::new(DialogPurpose::ExportReport, Some(Path::new("/r/run1")), None, "x".into());
        assert_eq!(p.path, "/r/run1/export/report");
        let p = PathPrompt::new(DialogPurpose::TrainSet, None, Some("/data/train.gz"), "x".into());
        assert_eq!(p.path, "/data/train.gz");
        let p = PathPrompt::new(DialogPurpose::OpenRun, Some(Path::new("/r/run1")), None, "x".into());
        assert_eq!(p.path, "/r/run1");
    }
}
