//! The Unleashing Mask method: masking a ratio of the weights, the loss constraint gamma and the
//! atypical samples it reveals, UM fine-tuning (a flooded phase of the training loop) and UMAP
//! (edge-popup scores with frozen weights).

pub mod answer;
pub mod atypical;
pub mod gamma;
pub mod mask;
pub mod probe;
pub mod umap;

pub use answer::{AtypicalSample, AtypicalSet, Detection, MaskSweepPoint, PreviewSize};
pub use gamma::GammaSource;
pub use mask::MaskKind;
pub use probe::MaskProbe;
