//! The command-line wing: the terminal renderer, the subcommands, `reproduce`, `sweep` and `bench`, and
//! every clap argument struct. The engine, the worker and the app never import it.

pub mod args;
pub mod bench;
pub mod commands;
mod render;
pub mod reproduce;
pub mod sweep;

pub use render::*;
