//! The classifiers: SmallCNN, an MLP and a CIFAR-style ResNet-18. Each returns logits and the
//! penultimate features. [`Net`] is the one type the engine trains, masks, saves and loads.

pub mod fused;
pub mod mlp;
pub mod resnet;
pub mod small_cnn;

use crate::config::ModelKind;
use crate::data::ImageShape;
use crate::error::{Error, Result};
use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot, SafetensorsStore};
use std::path::Path;

pub use mlp::Mlp;
pub use resnet::ResNet18;
pub use small_cnn::SmallCnn;

/// Logits `[n, classes]` and penultimate features `[n, d]`.
pub struct Output {
    pub logits: Tensor<2>,
    pub features: Tensor<2>,
}

#[derive(Module, Debug)]
pub enum Net {
    SmallCnn(SmallCnn),
    Mlp(Mlp),
    Resnet18(ResNet18),
}

impl Net {
    /// A freshly initialised model for images of `shape` and `classes` classes, on `device`.
    pub fn new(kind: ModelKind, shape: ImageShape, classes: usize, device: &Device) -> Result<Net> {
        if classes < 2 {
            return Err(Error::config("classes", format!("a classifier needs at least 2 classes (the ID set has {classes})")));
        }
        Ok(match kind {
            ModelKind::SmallCnn => Net::SmallCnn(SmallCnn::new(shape, classes, device)?),
            ModelKind::Mlp => Net::Mlp(Mlp::new(shape, classes, device)),
            ModelKind::Resnet18 => Net::Resnet18(ResNet18::new(shape, classes, device)),
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Output {
        match self {
            Net::SmallCnn(m) => m.forward(x),
            Net::Mlp(m) => m.forward(x),
            Net::Resnet18(m) => m.forward(x),
        }
    }

    pub fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward(x).logits
    }

    /// The last linear layer (features -> logits) on the host, as the detectors use it: its
    /// effective weight (masks and UMAP scores applied), `[classes, dim]`.
    pub fn head(&self) -> Result<crate::ood::Head> {
        let fc = match self {
            Net::SmallCnn(m) => &m.fc2,
            Net::Mlp(m) => &m.fc2,
            Net::Resnet18(m) => &m.fc,
        };
        let [dim, classes] = fc.weight.val().dims();
        // burn stores [in, out]; the transpose is PyTorch's [out, in].
        let weight = host(fc.weight.val().transpose())?;
        let bias = match &fc.bias {
            Some(b) => b.val().try_into_vec_as::<f32>().map_err(|e| Error::Device(format!("cannot read the last layer's bias: {e:?}")))?,
            None => vec![0.0; classes],
        };
        Ok(crate::ood::Head { classes, dim, weight, bias })
    }

    /// Saves as burnpack (`.bpk`), atomically; the extension is added when missing.
    pub fn save_bpk(&self, path: &Path) -> Result<()> {
        let path = path.with_extension("bpk");
        crate::fsio::write_atomic_with(&path, |tmp| {
            let mut store = BurnpackStore::from_file(tmp).overwrite(true).auto_extension(false);
            self.save_into(&mut store).map_err(|e| Error::model(&path, format!("cannot save: {e}")))
        })
    }

    /// Saves as safetensors with PyTorch-style names (see README: Export), atomically.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        crate::fsio::write_atomic_with(path, |tmp| {
            // PyTorch layout: linear weights [out, in], BatchNorm weight/bias (see README: Export).
            // The enum variant ("SmallCnn.") is not part of a PyTorch module's names.
            let names = burn::store::KeyRemapper::new()
                .add_pattern(r"^(SmallCnn|Mlp|Resnet18)\.", "")
                .map_err(|e| Error::model(path, format!("name pattern: {e}")))?;
            let mut store = SafetensorsStore::from_file(tmp).overwrite(true).with_to_adapter(burn::store::BurnToPyTorchAdapter).remap(names);
            self.save_into(&mut store).map_err(|e| Error::model(path, format!("cannot save: {e}")))
        })
    }

    /// Loads a model file by its extension: `.safetensors` (PyTorch names and layout, as written by
    /// [`Net::save_safetensors`] or by PyTorch's `safetensors.torch.save_file` of the same
    /// architecture), anything else as burnpack.
    pub fn load(kind: ModelKind, shape: ImageShape, classes: usize, path: &Path, device: &Device) -> Result<Net> {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
            Net::load_safetensors(kind, shape, classes, path, device)
        } else {
            Net::load_bpk(kind, shape, classes, path, device)
        }
    }

    /// Loads weights from a `.bpk` into a model of the given architecture. A corrupt, truncated or
    /// foreign file (or one of another architecture) is an error, never a panic.
    pub fn load_bpk(kind: ModelKind, shape: ImageShape, classes: usize, path: &Path, device: &Device) -> Result<Net> {
        let mut store = BurnpackStore::from_file(path).auto_extension(false);
        Net::load_checked(kind, shape, classes, path, device, &mut store)
    }

    /// Loads PyTorch-style safetensors (names without the enum variant, linear weights
    /// `[out, in]`). Every tensor of the architecture must be there with its shape.
    pub fn load_safetensors(kind: ModelKind, shape: ImageShape, classes: usize, path: &Path, device: &Device) -> Result<Net> {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(burn::store::PyTorchToBurnAdapter)
            .skip_enum_variants(true)
            .validate(true)
            .allow_partial(false);
        Net::load_checked(kind, shape, classes, path, device, &mut store)
    }

    /// Applies a store to a fresh model; a corrupt, truncated, foreign or mismatched file is an
    /// error naming it, never a panic.
    fn load_checked(kind: ModelKind, shape: ImageShape, classes: usize, path: &Path, device: &Device, store: &mut impl burn::store::ModuleStore) -> Result<Net> {
        if !path.exists() {
            return Err(Error::model(path, "file not found"));
        }
        let mut fresh = Net::new(kind, shape, classes, device)?;
        // load_from can leave a model half-applied on error: only the fresh copy is touched.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fresh.load_from(store).map(|_| ())));
        match loaded {
            Ok(Ok(())) => Ok(fresh),
            Ok(Err(e)) => Err(Error::model(path, format!("{e} (is it a {} for {shape} images and {classes} classes?)", kind.key()))),
            Err(_) => Err(Error::model(path, "the file is corrupt (the reader failed)")),
        }
    }
}

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>().map_err(|e| Error::Device(format!("cannot read the last layer's weight: {e:?}")))
}

/// Checks that `dims` of a 4-D input match the model's expectations, for a clear error instead of
/// a shape panic deep inside a layer.
pub fn check_input(shape: ImageShape, x: &Tensor<4>) -> Result<()> {
    let [_, c, h, w] = x.dims();
    if [c, h, w] != [shape.channels, shape.height, shape.width] {
        return Err(Error::Mismatch(format!("input is {c}x{h}x{w} but the model expects {shape}")));
    }
    Ok(())
}
