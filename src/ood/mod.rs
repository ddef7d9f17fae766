//! OOD scores and detection metrics.
pub mod metrics;
pub mod scores;

pub use metrics::Metrics;
pub use scores::Score;
