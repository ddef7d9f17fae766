//! The desktop app (eframe). Filled in by the GUI work; see `run_gui`.
use crate::error::Result;
use std::path::PathBuf;

pub fn run_gui(_run: Option<PathBuf>) -> Result<()> {
    Err(crate::error::Error::Other("the desktop app is not built yet in this revision; use the CLI subcommands (unleash --help)".into()))
}
