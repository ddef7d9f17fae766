//! unleash: Unleashing Mask (ICML 2023) for OOD detection. The engine (data, models, training,
//! the UM steps, OOD scores and metrics, run folders, export) knows nothing of its front ends: the
//! GUI (`app`, through the `worker`) and the CLI (`cli`, the only home of clap) drive it with the
//! same events, and neither imports the other.

pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod events;
pub mod fsio;
pub mod model;
pub mod ood;
pub mod run;
pub mod train;
pub mod export;
pub mod import;
pub mod worker;
pub mod unleash;

pub use error::{Error, Result};
#[cfg(feature = "gui")]
pub mod app;
pub mod cli;
pub mod plot;
