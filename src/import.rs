//! Bring your own model: reads a checkpoint trained elsewhere (a PyTorch `.pt`/`.pth`/`.ckpt`
//! state dict, or `.safetensors`) into one of unleash's architectures, and makes a run of it whose
//! first epoch is that model, evaluated as any epoch is (see [`import_run`]).
//!
//! A checkpoint is untrusted input. `.pt` files are pickles; burn's reader (`pytorch-reader`)
//! interprets only the calls PyTorch uses to rebuild tensors and ordered dicts, keeps any other
//! `GLOBAL`/`REDUCE` as an inert name (no code is ever run), and refuses an object it cannot
//! represent. Every reader error, and any panic of a reader, becomes an error naming the file.

use crate::config::{ExperimentConfig, ModelKind};
use crate::data::ImageShape;
use crate::error::{Error, Result};
use crate::events::{Control, Sink};
use crate::model::Net;
use crate::train::Session;
use burn::prelude::*;
use burn::store::{ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the checkpoint's tensor names become unleash's (PyTorch-style names of [`Net`], without
/// the enum variant: `conv1.weight`, `blocks.3.shortcut.bn.running_var`, `fc.bias`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMap {
    /// unleash's own names, as `unleash export` writes them.
    Unleash,
    /// OpenOOD's `ResNet18_32x32`: `layer{1-4}.{0,1}.*`, `shortcut.0`/`shortcut.1`, `fc`.
    OpenOod,
    /// torchvision's ResNet naming: `layer{1-4}.{0,1}.*`, `downsample.0`/`downsample.1`, `fc`.
    Torchvision,
    /// Rename rules from a TOML file: `rename = [["REGEX", "REPLACEMENT"], ...]`, applied in order.
    File(PathBuf),
}

impl KeyMap {
    pub fn parse(s: &str) -> KeyMap {
        match s.to_ascii_lowercase().as_str() {
            "unleash" | "own" => KeyMap::Unleash,
            "openood" => KeyMap::OpenOod,
            "torchvision" => KeyMap::Torchvision,
            _ => KeyMap::File(PathBuf::from(s)),
        }
    }

    pub fn name(&self) -> String {
        match self {
            KeyMap::Unleash => "unleash".into(),
            KeyMap::OpenOod => "openood".into(),
            KeyMap::Torchvision => "torchvision".into(),
            KeyMap::File(p) => p.display().to_string(),
        }
    }

    /// The rename rules (regex, replacement), in order. Every built-in map drops the wrappers
    /// that training scripts commonly add: `module.` (DataParallel) and a `state_dict.` level.
    pub fn rules(&self) -> Result<Vec<(String, String)>> {
        let mut rules = vec![(r"^state_dict\.".to_string(), String::new()), (r"^module\.".to_string(), String::new())];
        let resnet_stages = || (1..=4).flat_map(|layer| (0..2).map(move |b| (format!(r"^layer{layer}\.{b}\."), format!("blocks.{}.", 2 * (layer - 1) + b))));
        match self {
            KeyMap::Unleash => {}
            KeyMap::OpenOod => {
                rules.extend(resnet_stages());
                rules.push((r"\.shortcut\.0\.".into(), ".shortcut.conv.".into()));
                rules.push((r"\.shortcut\.1\.".into(), ".shortcut.bn.".into()));
                // Some OpenOOD-style scripts name the head `linear`.
                rules.push((r"^linear\.".into(), "fc.".into()));
            }
            KeyMap::Torchvision => {
                rules.extend(resnet_stages());
                rules.push((r"\.downsample\.0\.".into(), ".shortcut.conv.".into()));
                rules.push((r"\.downsample\.1\.".into(), ".shortcut.bn.".into()));
            }
            KeyMap::File(path) => rules.extend(read_key_map_file(path)?),
        }
        Ok(rules)
    }

    fn remapper(&self) -> Result<KeyRemapper> {
        let rules = self.rules()?;
        KeyRemapper::from_patterns(rules).map_err(|e| Error::config("key-map", format!("{}: a rule is not a valid regex: {e}", self.name())))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyMapFile {
    rename: Vec<(String, String)>,
}

fn read_key_map_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read the key map", e))?;
    let parsed: KeyMapFile = toml::from_str(&text).map_err(|e| Error::bad_data(path, format!("not a key map (expected rename = [[\"REGEX\", \"REPLACEMENT\"], ...]): {e}")))?;
    Ok(parsed.rename)
}

/// The checkpoint's container, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointFormat {
    /// `torch.save` of a state dict: `.pt`, `.pth`, `.ckpt`, `.bin`.
    Pytorch,
    Safetensors,
}

impl CheckpointFormat {
    pub fn of(path: &Path) -> Result<CheckpointFormat> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        match ext.as_str() {
            "pt" | "pth" | "ckpt" | "bin" => Ok(CheckpointFormat::Pytorch),
            "safetensors" => Ok(CheckpointFormat::Safetensors),
            _ => Err(Error::model(path, "unknown checkpoint type (expected .pt, .pth, .ckpt, .bin or .safetensors)")),
        }
    }
}

/// What a run records of the checkpoint it was imported from (config.json's `imported`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedFrom {
    pub file: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub format: CheckpointFormat,
    pub key_map: String,
}

/// What to import: the file and how its names map.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSpec {
    pub model: PathBuf,
    pub key_map: KeyMap,
}

/// Reads a checkpoint into a fresh `kind` model for `shape` images and `classes` classes, on
/// `device`. Every tensor the architecture needs must be in the file with its shape, and the
/// file may hold nothing else (BatchNorm's `num_batches_tracked` is accepted and ignored): all
/// the problems are named in one error.
pub fn load_checkpoint(kind: ModelKind, shape: ImageShape, classes: usize, spec: &ImportSpec, device: &Device) -> Result<Net> {
    let path = &spec.model;
    let format = CheckpointFormat::of(path)?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "read", e))?;
    if !meta.is_file() {
        return Err(Error::model(path, "not a file"));
    }
    let remapper = spec.key_map.remapper()?;
    let original = guarded(path, || file_keys(path, format))??;
    let renamed = rename_all(&spec.key_map.rules()?, &original)?;
    let mut net = Net::new(kind, shape, classes, device)?;
    let applied = guarded(path, || match format {
        CheckpointFormat::Pytorch => {
            let mut store = PytorchStore::from_file(path).remap(remapper).map_indices_contiguous(false).allow_partial(true).validate(false);
            apply(path, &mut net, &mut store)
        }
        CheckpointFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(burn::store::PyTorchToBurnAdapter)
                .skip_enum_variants(true)
                .remap(remapper)
                .map_indices_contiguous(false)
                .allow_partial(true)
                .validate(false);
            apply(path, &mut net, &mut store)
        }
    })??;
    let problems = mismatches(&applied, &renamed);
    if !problems.is_empty() {
        return Err(Error::model(
            path,
            format!("does not fit a {} for {shape} images and {classes} classes (key map: {}): {}", kind.key(), spec.key_map.name(), problems.join("; ")),
        ));
    }
    Ok(net)
}

/// Runs a reader, turning a panic inside it into an error naming the file: a reader must never
/// take the process down on a hostile file.
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| Error::model(path, "the file is corrupt (the reader failed)"))
}

fn apply<S: ModuleStore>(path: &Path, net: &mut Net, store: &mut S) -> Result<ApplyResult>
where
    S::Error: std::fmt::Display,
{
    net.load_from(store).map_err(|e| Error::model(path, format!("not a readable checkpoint: {e}")))
}

/// The tensor names in the file, as written there.
fn file_keys(path: &Path, format: CheckpointFormat) -> Result<Vec<String>> {
    let keys = match format {
        CheckpointFormat::Pytorch => PytorchStore::from_file(path).map_indices_contiguous(false).keys().map_err(|e| e.to_string()),
        CheckpointFormat::Safetensors => SafetensorsStore::from_file(path).map_indices_contiguous(false).keys().map_err(|e| e.to_string()),
    };
    let keys = keys.map_err(|e| Error::model(path, format!("not a readable checkpoint: {e}")))?;
    if keys.is_empty() {
        return Err(Error::model(path, "holds no tensors (is it a state dict? a whole pickled model or an optimizer state cannot be imported)"));
    }
    Ok(keys)
}

/// Each renamed key with the file's name for it, so that errors speak the file's language.
fn rename_all(rules: &[(String, String)], keys: &[String]) -> Result<BTreeMap<String, String>> {
    let pairs = KeyRemapper::from_patterns(rules.to_vec()).map_err(|e| Error::config("key-map", e.to_string()))?.to_regex_pairs();
    Ok(keys
        .iter()
        .map(|k| {
            let mut name = k.clone();
            for (re, to) in &pairs {
                if re.is_match(&name) {
                    name = re.replace_all(&name, to.as_str()).into_owned();
                }
            }
            (name, k.clone())
        })
        .collect())
}

/// Every missing, unexpected or misshapen tensor, each named (by the file's name where it has one).
fn mismatches(result: &ApplyResult, file_name: &BTreeMap<String, String>) -> Vec<String> {
    let named = |renamed: &str| match file_name.get(renamed) {
        Some(orig) if orig != renamed => format!("{orig} (as {renamed})"),
        _ => renamed.to_string(),
    };
    let mut out = Vec::new();
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| pytorch_name(p)).collect();
    if !missing.is_empty() {
        out.push(format!("missing {}", missing.join(", ")));
    }
    let unexpected: Vec<String> = result.unused.iter().filter(|k| !k.ends_with("num_batches_tracked")).map(|k| named(k)).collect();
    if !unexpected.is_empty() {
        out.push(format!("unexpected {}", unexpected.join(", ")));
    }
    for e in &result.errors {
        out.push(match e {
            ApplyError::ShapeMismatch { path, expected, found } => format!("{} has shape {:?} but the model needs {:?}", named(path), pytorch_shape(found.as_slice()), pytorch_shape(expected.as_slice())),
            ApplyError::DTypeMismatch { path, expected, found } => format!("{} is {found:?} but the model needs {expected:?}", named(path)),
            ApplyError::AdapterError { path, message } | ApplyError::LoadError { path, message } => format!("{}: {message}", named(path)),
        });
    }
    out
}

/// A shape as PyTorch writes it: burn keeps linear weights as `[in, out]`, PyTorch `[out, in]`.
fn pytorch_shape(dims: &[usize]) -> Vec<usize> {
    if dims.len() == 2 { vec![dims[1], dims[0]] } else { dims.to_vec() }
}

/// burn's BatchNorm calls its affine parameters gamma/beta; the file (PyTorch) weight/bias.
fn pytorch_name(path: &str) -> String {
    path.strip_suffix(".gamma").map(|p| format!("{p}.weight")).or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias"))).unwrap_or_else(|| path.to_string())
}

/// Size and SHA-256 of the checkpoint, for config.json.
pub fn describe(spec: &ImportSpec) -> Result<ImportedFrom> {
    use sha2::{Digest, Sha256};
    let path = &spec.model;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let digest = Sha256::digest(&bytes);
    Ok(ImportedFrom {
        file: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
        bytes: bytes.len() as u64,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        format: CheckpointFormat::of(path)?,
        key_map: spec.key_map.name(),
    })
}

/// `import`: a new run in `out` whose epoch 1 is the checkpoint, scored in eval mode on every
/// set of `exp` exactly as a trained epoch is (snapshot, score arrays, the per-sample loss row,
/// the events line). The checkpoint is read and checked before the run folder is created, so a
/// bad file leaves nothing behind. This is the one function a front end calls.
pub fn import_run(mut exp: ExperimentConfig, spec: &ImportSpec, out: &Path, control: &Control, sink: Sink) -> Result<Session> {
    // The run's base phase is the one imported epoch: complete, nothing for `train --resume`.
    exp.train.epochs = 1;
    exp.validate()?;
    let mut s = Session::open(exp, None)?;
    let net = load_checkpoint(s.config.train.model, s.data.train.shape, s.classes, spec, s.inference_device())?;
    let from = describe(spec)?;
    let source = from.file.file_name().map_or_else(|| "checkpoint".to_string(), |f| f.to_string_lossy().into_owned());
    s.create_imported_run(out, from)?;
    s.model = net.train_on(&s.autodiff_device());
    s.commit_imported(&source, control, sink)?;
    Ok(s)
}

/// `--normalize`: `data` (the training set's own statistics, as unleash trains: None), `cifar10`
/// (OpenOOD's CIFAR-10 values), `imagenet`, `MEAN,STD` for every channel, or one mean per channel
/// then one std per channel (`M1,M2,M3,S1,S2,S3`).
pub fn parse_normalization(s: &str) -> Result<Option<crate::data::Normalization>> {
    let preset = |mean: [f32; 3], std: [f32; 3]| Ok(Some(crate::data::Normalization { mean: mean.to_vec(), std: std.to_vec() }));
    match s.to_ascii_lowercase().as_str() {
        "data" => return Ok(None),
        "cifar10" => return preset([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
        "imagenet" => return preset([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        _ => {}
    }
    let bad = || Error::config("normalize", format!("'{s}' is not data, cifar10, imagenet, MEAN,STD or M1,..,Mc,S1,..,Sc"));
    let values: Vec<f32> = s.split(',').map(|v| v.trim().parse::<f32>()).collect::<std::result::Result<_, _>>().map_err(|_| bad())?;
    if values.is_empty() || values.len() % 2 != 0 {
        return Err(bad());
    }
    let (mean, std) = values.split_at(values.len() / 2);
    Ok(Some(crate::data::Normalization { mean: mean.to_vec(), std: std.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(map: &KeyMap, key: &str) -> String {
        rename_all(&map.rules().unwrap(), &[key.to_string()]).unwrap().into_keys().next().unwrap()
    }

    #[test]
    fn openood_and_torchvision_names_map_onto_unleashs() {
        let cases = [
            ("layer1.0.conv1.weight", "blocks.0.conv1.weight"),
            ("layer2.1.bn2.running_var", "blocks.3.bn2.running_var"),
            ("layer3.0.shortcut.0.weight", "blocks.4.shortcut.conv.weight"),
            ("layer4.0.shortcut.1.bias", "blocks.6.shortcut.bn.bias"),
            ("layer4.1.conv2.weight", "blocks.7.conv2.weight"),
            ("module.fc.weight", "fc.weight"),
            ("bn1.num_batches_tracked", "bn1.num_batches_tracked"),
        ];
        for (from, to) in cases {
            assert_eq!(renamed(&KeyMap::OpenOod, from), to, "{from}");
        }
        assert_eq!(renamed(&KeyMap::Torchvision, "layer2.0.downsample.1.running_mean"), "blocks.2.shortcut.bn.running_mean");
        // unleash's own names stay as they are.
        assert_eq!(renamed(&KeyMap::Unleash, "blocks.5.conv1.weight"), "blocks.5.conv1.weight");
        assert_eq!(KeyMap::parse("OpenOOD"), KeyMap::OpenOod);
        assert_eq!(KeyMap::parse("maps/my.toml"), KeyMap::File("maps/my.toml".into()));
    }

    #[test]
    fn normalisations_parse_and_bad_ones_are_named() {
        assert_eq!(parse_normalization("data").unwrap(), None);
        let c = parse_normalization("cifar10").unwrap().unwrap();
        assert_eq!((c.mean[0], c.std[2]), (0.4914, 0.2616));
        let one = parse_normalization("0.5,0.25").unwrap().unwrap();
        assert_eq!((one.mean, one.std), (vec![0.5], vec![0.25]));
        let three = parse_normalization("1,2,3,4,5,6").unwrap().unwrap();
        assert_eq!((three.mean, three.std), (vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]));
        for bad in ["", "0.5", "a,b", "1,2,3"] {
            assert!(parse_normalization(bad).unwrap_err().to_string().contains("normalize"), "{bad}");
        }
    }

    #[test]
    fn checkpoint_types_come_from_the_extension() {
        assert_eq!(CheckpointFormat::of(Path::new("a/best.CKPT")).unwrap(), CheckpointFormat::Pytorch);
        assert_eq!(CheckpointFormat::of(Path::new("m.safetensors")).unwrap(), CheckpointFormat::Safetensors);
        assert!(CheckpointFormat::of(Path::new("m.onnx")).unwrap_err().to_string().contains("m.onnx"));
    }
}
