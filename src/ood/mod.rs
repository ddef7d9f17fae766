//! OOD scores and detection metrics.
pub mod detectors;
pub mod metrics;
pub mod scores;

pub use detectors::{DetectorConfig, Detectors, Embedded, Head};
pub use metrics::Metrics;
pub use scores::Score;
