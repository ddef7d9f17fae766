//! `unleash import`: checkpoints from PyTorch (the committed fixtures of
//! benches/make_import_fixtures.py) and from unleash's own export, hostile and broken files, and
//! every CLI job on an imported run.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use unleash::config::ModelKind;
use unleash::data::ImageShape;
use unleash::import::{load_checkpoint, ImportSpec, KeyMap};
use unleash::run::RunReader;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import").join(name)
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    unleash::fsio::read_npy_f32(&fixture(name)).unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const TINY: ImageShape = ImageShape { channels: 1, height: 4, width: 4 };

fn import_tiny(path: &Path, key_map: KeyMap) -> unleash::Result<unleash::model::Net> {
    load_checkpoint(ModelKind::SmallCnn, TINY, 10, &ImportSpec { model: path.to_path_buf(), key_map }, &unleash::device::cpu().device)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_pytorch_state_dict_gives_pytorchs_logits_and_features() {
    let net = import_tiny(&fixture("smallcnn_4x4.pt"), KeyMap::Unleash).unwrap();
    let (shape, input) = npy("input.npy");
    let device = unleash::device::cpu().device;
    let x = burn::tensor::Tensor::<4>::from_data(burn::tensor::TensorData::new(input, shape.clone()), &device);
    let out = net.forward(x);
    let logits = out.logits.into_data().try_to_vec::<f32>().unwrap();
    let features = out.features.into_data().try_to_vec::<f32>().unwrap();
    let (_, want_logits) = npy("logits.npy");
    let (_, want_features) = npy("features.npy");
    let (dl, df) = (max_abs_diff(&logits, &want_logits), max_abs_diff(&features, &want_features));
    assert!(dl < 1e-4 && df < 1e-4, "max abs difference to PyTorch: logits {dl}, features {df}");
    // Not trivially equal: the logits spread, so a wrong transpose or a zero layer would show.
    assert!(want_logits.iter().any(|v| v.abs() > 0.05), "the fixture's logits are not all near zero");
}

#[test]
fn a_mismatched_checkpoint_names_every_missing_unexpected_and_misshapen_key() {
    // For 8x8 images SmallCNN's fc1 takes 256 inputs; the fixture has 64. Three classes, not 10.
    let spec = ImportSpec { model: fixture("smallcnn_4x4.pt"), key_map: KeyMap::OpenOod };
    let err = load_checkpoint(ModelKind::SmallCnn, ImageShape { channels: 1, height: 8, width: 8 }, 3, &spec, &unleash::device::cpu().device).unwrap_err().to_string();
    assert!(err.contains("smallcnn_4x4.pt"), "names the file: {err}");
    assert!(err.contains("fc1.weight") && err.contains("fc2.weight") && err.contains("fc2.bias"), "every misshapen tensor: {err}");
    // A ResNet from the SmallCNN file: every ResNet tensor missing, every SmallCNN one unexpected.
    let err = load_checkpoint(ModelKind::Resnet18, TINY, 10, &spec, &unleash::device::cpu().device).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("blocks.7.conv2.weight") && err.contains("bn1.running_var"), "{err}");
    assert!(err.contains("unexpected") && err.contains("conv2.bias") && err.contains("fc1.weight"), "{err}");
}

#[test]
fn a_truncated_zip_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("smallcnn_4x4.pt")).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 30, 100, 0] {
        let p = dir.path().join(format!("cut{keep}.pt"));
        std::fs::write(&p, &bytes[..keep]).unwrap();
        let err = import_tiny(&p, KeyMap::Unleash).unwrap_err().to_string();
        assert!(err.contains(&format!("cut{keep}.pt")), "{keep} bytes: {err}");
    }
}

#[test]
fn a_pickle_calling_os_system_or_eval_runs_nothing_and_is_refused() {
    let marker = Path::new("/tmp/unleash-import-fixture-ran-code");
    let _ = std::fs::remove_file(marker);
    for name in ["pickle_os_system.pt", "pickle_builtins_eval.pt"] {
        let err = import_tiny(&fixture(name), KeyMap::Unleash).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains("no tensors"), "{name}: {err}");
        assert!(!marker.exists(), "{name}: the pickle's call was run");
    }
}

#[test]
fn a_tensor_whose_shape_disagrees_with_its_storage_is_refused() {
    for name in ["shape_exceeds_storage.pt", "shape_huge.pt"] {
        let err = import_tiny(&fixture(name), KeyMap::Unleash).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn a_file_that_is_not_a_checkpoint_or_has_another_extension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"PK\x03\x04 not really a zip at all").unwrap();
    assert!(import_tiny(&junk, KeyMap::Unleash).unwrap_err().to_string().contains("junk.pt"));
    let st = dir.path().join("junk.safetensors");
    // A safetensors header claiming 2^60 bytes of JSON.
    std::fs::write(&st, [0u8, 0, 0, 0, 0, 0, 0, 16, b'{', b'}']).unwrap();
    assert!(import_tiny(&st, KeyMap::Unleash).unwrap_err().to_string().contains("junk.safetensors"));
    let txt = dir.path().join("model.txt");
    std::fs::write(&txt, b"").unwrap();
    assert!(import_tiny(&txt, KeyMap::Unleash).unwrap_err().to_string().contains("unknown checkpoint type"));
    let missing = dir.path().join("absent.pt");
    assert!(import_tiny(&missing, KeyMap::Unleash).unwrap_err().to_string().contains("absent.pt"));
}

#[test]
fn a_key_map_file_renames_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // Renaming fc2 away: fc2 goes missing and "head.*" is unexpected; both named.
    let map = dir.path().join("map.toml");
    std::fs::write(&map, "rename = [[\"^fc2\\\\.\", \"head.\"]]\n").unwrap();
    let err = import_tiny(&fixture("smallcnn_4x4.pt"), KeyMap::File(map)).unwrap_err().to_string();
    assert!(err.contains("missing fc2.bias, fc2.weight") && err.contains("unexpected fc2.bias (as head.bias), fc2.weight (as head.weight)"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "rename = [[\"(\", \"x\"]]\n").unwrap();
    assert!(import_tiny(&fixture("smallcnn_4x4.pt"), KeyMap::File(bad)).unwrap_err().to_string().contains("regex"));
}

/// Trains a 1-epoch run, exports it as safetensors, imports that into a new run: the imported
/// epoch scores exactly as the trained one did; then every CLI job works on the imported run.
#[test]
fn an_exported_model_imports_to_the_same_scores_and_every_job_runs_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let trained = train_run(&dir.path().join("trained"), 1, 3);
    let exported = dir.path().join("model");
    unleash_ok(&["export", "--run", &s(&trained), "--model", &s(&exported), "--device", "cpu"].map(String::from));
    let imported = dir.path().join("imported");
    let mut args: Vec<String> = ["import", "--model", &s(&exported.with_extension("safetensors")), "--arch", "small-cnn", "--out", &s(&imported)].map(String::from).to_vec();
    args.extend(small_args());
    unleash_ok(&args);

    let (a, b) = (RunReader::open(&trained).unwrap(), RunReader::open(&imported).unwrap());
    assert_eq!(b.records.len(), 1);
    let r = &b.records[0];
    assert_eq!((r.epoch, r.imported_from.as_deref()), (1, Some("model.safetensors")));
    assert_eq!(b.config.imported.as_ref().map(|i| i.sha256.len()), Some(64));
    assert_eq!(b.config.experiment.as_ref().unwrap().train.epochs, 1, "the base phase is complete");
    assert!(b.config.data_fingerprints.is_some());
    // Same model, same data, eval mode both times: the same numbers.
    assert_eq!(r.test_acc, a.records[0].test_acc);
    assert_eq!(r.val, a.records[0].val);
    assert_eq!(r.ood, a.records[0].ood);
    assert_eq!(b.scores(1, "id_test").unwrap(), a.scores(1, "id_test").unwrap());
    let (_, rows) = b.loss_matrix().unwrap().unwrap();
    assert_eq!(rows.len(), 1, "the loss history has one row");
    assert!((r.train_eval_loss - a.records[0].train_eval_loss).abs() < 1e-12);
    let names: Vec<String> = unleash::run::stages(&b.records).iter().map(|s| s.title()).collect();
    assert_eq!(names, vec!["imported (epoch 1)"]);

    // A normalisation given on the command line is the run's, for this job and every later one.
    let normed = dir.path().join("normed");
    let mut args: Vec<String> = ["import", "--model", &s(&exported.with_extension("safetensors")), "--arch", "small-cnn", "--normalize", "0.2860,0.3530", "--out", &s(&normed)].map(String::from).to_vec();
    args.extend(small_args());
    unleash_ok(&args);
    let c = RunReader::open(&normed).unwrap();
    assert_eq!(c.config.normalization.as_ref().map(|n| (n.mean.clone(), n.std.clone())), Some((vec![0.286], vec![0.353])));
    assert!(c.config.experiment.as_ref().unwrap().train.normalization.is_some());
    assert_ne!(c.scores(1, "id_test").unwrap(), b.scores(1, "id_test").unwrap(), "the model sees other inputs");
    unleash_ok(&["mask", "--run", &s(&normed), "--ratios", "0.5", "--device", "cpu"].map(String::from));

    let run = s(&imported);
    // Nothing to resume: the imported base phase is complete.
    let out = unleash(&["train", "--resume", &run]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("complete"), "{}", String::from_utf8_lossy(&out.stderr));
    unleash_ok(&["mask", "--run", &run, "--ratios", "0.1,0.5", "--device", "cpu"].map(String::from));
    unleash_ok(&["um", "--run", &run, "--epochs", "1", "--mask-ratio", "0.5", "--device", "cpu"].map(String::from));
    unleash_ok(&["control", "--run", &run, "--epochs", "1", "--epoch", "1", "--device", "cpu"].map(String::from));
    unleash_ok(&["umap", "--run", &run, "--epochs", "1", "--epoch", "1", "--gamma", "0.3", "--device", "cpu"].map(String::from));
    let report = dir.path().join("report");
    unleash_ok(&["export", "--run", &run, "--report", &s(&report), "--epoch", "1", "--device", "cpu"].map(String::from));
    let after = RunReader::open(&imported).unwrap();
    assert_eq!(after.records.len(), 4);
    assert!(after.records[1..].iter().all(|r| r.from_epoch == 1 && r.imported_from.is_none()), "fine-tunes start from the imported epoch");
    let titles: Vec<String> = unleash::run::stages(&after.records).iter().map(|s| s.name()).collect();
    assert_eq!(titles[0], "imported");
}

#[test]
fn a_bad_checkpoint_leaves_no_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let mut args: Vec<String> = ["import", "--model", &s(&fixture("pickle_os_system.pt")), "--arch", "small-cnn", "--out", &s(&out_dir)].map(String::from).to_vec();
    args.extend(small_args());
    let out = unleash(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pickle_os_system.pt"), "{err}");
    assert!(!out_dir.join("events.jsonl").exists());
}

/// The PyTorch check of benches/torch_import_reference.py: with `UNLEASH_TORCH_REF` set to the
/// script's output folder, the imported ResNet18_32x32 (OpenOOD names) and SmallCNN give
/// PyTorch's logits and penultimate features on its fixed batches. Ignored by default: it needs
/// the script's files (and so torch) first.
#[test]
#[ignore = "needs the output of benches/torch_import_reference.py in UNLEASH_TORCH_REF"]
fn torch_reference_checkpoints_give_torchs_logits_and_features() {
    let dir = PathBuf::from(std::env::var("UNLEASH_TORCH_REF").expect("UNLEASH_TORCH_REF: the folder benches/torch_import_reference.py wrote"));
    let device = unleash::device::cpu().device;
    for (name, file, kind, shape, key_map) in [
        ("resnet", "resnet18_32x32.pt", ModelKind::Resnet18, ImageShape { channels: 3, height: 32, width: 32 }, KeyMap::OpenOod),
        ("smallcnn", "smallcnn.pt", ModelKind::SmallCnn, ImageShape { channels: 1, height: 28, width: 28 }, KeyMap::Unleash),
    ] {
        let net = load_checkpoint(kind, shape, 10, &ImportSpec { model: dir.join(file), key_map }, &device).unwrap();
        let read = |what: &str| unleash::fsio::read_npy_f32(&dir.join(format!("{name}_{what}.npy"))).unwrap();
        let (in_shape, input) = read("input");
        let out = net.forward(burn::tensor::Tensor::<4>::from_data(burn::tensor::TensorData::new(input, in_shape), &device));
        let logits = out.logits.into_data().try_to_vec::<f32>().unwrap();
        let features = out.features.into_data().try_to_vec::<f32>().unwrap();
        let (dl, df) = (max_abs_diff(&logits, &read("logits").1), max_abs_diff(&features, &read("features").1));
        println!("{name}: max abs difference to PyTorch: logits {dl:.3e}, features {df:.3e}");
        assert!(dl < 1e-4 && df < 1e-4, "{name}: logits {dl}, features {df}");
    }
}

/// Seeded mutations of the fixtures (byte flips, overwritten runs, cuts), read as `.pt` and as
/// `.safetensors`: every load either works or is an error naming the file; none takes the process
/// down. 300 mutants in CI; `UNLEASH_MUTANTS=N` runs more (a plan-less fuzz campaign without
/// cargo-fuzz's instrumentation; the fuzz target `import` is the coverage-guided one).
#[test]
fn mutated_checkpoints_load_or_fail_naming_the_file() {
    use rand::{Rng, SeedableRng};
    let count: usize = std::env::var("UNLEASH_MUTANTS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let trained = import_tiny(&fixture("smallcnn_4x4.pt"), KeyMap::Unleash).unwrap();
    let st = dir.path().join("seed.safetensors");
    trained.save_safetensors(&st).unwrap();
    let seeds: Vec<(Vec<u8>, &str)> = vec![
        (std::fs::read(fixture("smallcnn_4x4.pt")).unwrap(), "mutant.pt"),
        (std::fs::read(fixture("shape_exceeds_storage.pt")).unwrap(), "mutant.pt"),
        (std::fs::read(fixture("pickle_os_system.pt")).unwrap(), "mutant.pt"),
        (std::fs::read(&st).unwrap(), "mutant.safetensors"),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(25);
    let (mut loaded, mut caught) = (0, 0);
    let start = std::time::Instant::now();
    for _ in 0..count {
        let (good, name) = &seeds[rng.random_range(0..seeds.len())];
        let path = dir.path().join(name);
        let mut bytes = good.clone();
        match rng.random_range(0..3) {
            0 => (0..rng.random_range(1..8)).for_each(|_| {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }),
            1 => {
                let at = rng.random_range(0..bytes.len() - 8);
                let v: u8 = rng.random();
                bytes[at..at + 8].fill(v);
            }
            _ => bytes.truncate(rng.random_range(0..bytes.len())),
        }
        std::fs::write(&path, &bytes).unwrap();
        match import_tiny(&path, KeyMap::Unleash) {
            Ok(_) => loaded += 1,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(name), "{e}");
                caught += usize::from(e.contains("the reader failed"));
            }
        }
    }
    println!("{count} mutants in {:.1} s: {loaded} loaded (changes inside tensor data), {caught} reader panics caught", start.elapsed().as_secs_f64());
}

/// Rewrites a safetensors file: each tensor renamed by `rename` (None drops it), `running_var`
/// values scaled by `var_scale` (so that BatchNorm statistics that failed to apply would show),
/// and a `num_batches_tracked` (I64 scalar, as PyTorch saves it) added beside `bn1`.
fn rewrite_safetensors(bytes: &[u8], rename: impl Fn(&str) -> String, var_scale: f32) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let (mut out_header, mut out_data) = (serde_json::Map::new(), Vec::new());
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let [a, b] = [0, 1].map(|i| info["data_offsets"][i].as_u64().unwrap() as usize);
        let mut chunk = data[a..b].to_vec();
        if name.ends_with("running_var") {
            for v in chunk.chunks_exact_mut(4) {
                let x = f32::from_le_bytes(v.try_into().unwrap()) * var_scale;
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
        let start = out_data.len();
        out_data.extend_from_slice(&chunk);
        out_header.insert(rename(name), serde_json::json!({"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [start, out_data.len()]}));
    }
    let start = out_data.len();
    out_data.extend_from_slice(&7i64.to_le_bytes());
    out_header.insert(rename("bn1.num_batches_tracked"), serde_json::json!({"dtype": "I64", "shape": [], "data_offsets": [start, start + 8]}));
    let text = serde_json::to_vec(&out_header).unwrap();
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&text);
    file.extend_from_slice(&out_data);
    file
}

/// unleash's block names as OpenOOD's ResNet18_32x32 writes them.
fn openood_name(name: &str) -> String {
    let name = name.replace("shortcut.conv.", "shortcut.0.").replace("shortcut.bn.", "shortcut.1.");
    match name.strip_prefix("blocks.") {
        Some(rest) => {
            let (k, tail) = rest.split_once('.').unwrap();
            let k: usize = k.parse().unwrap();
            format!("layer{}.{}.{tail}", k / 2 + 1, k % 2)
        }
        None => name,
    }
}

/// A ResNet-18 written with OpenOOD's names, changed BatchNorm statistics and a
/// `num_batches_tracked` loads through `--key-map openood` into the same model as the same file
/// with unleash's names, and the file's statistics are the ones used (eval mode).
#[test]
fn a_resnet_with_openood_names_and_batchnorm_statistics_loads_in_eval_mode() {
    let dir = tempfile::tempdir().unwrap();
    let device = unleash::device::cpu().device;
    let shape = ImageShape { channels: 3, height: 8, width: 8 };
    let fresh = unleash::model::Net::new(ModelKind::Resnet18, shape, 10, &device).unwrap();
    let own = dir.path().join("own.safetensors");
    fresh.save_safetensors(&own).unwrap();
    let bytes = std::fs::read(&own).unwrap();
    let ours = dir.path().join("ours.safetensors");
    std::fs::write(&ours, rewrite_safetensors(&bytes, str::to_string, 4.0)).unwrap();
    let openood = dir.path().join("openood.safetensors");
    std::fs::write(&openood, rewrite_safetensors(&bytes, openood_name, 4.0)).unwrap();
    let written = std::fs::read(&openood).unwrap();
    let header_len = u64::from_le_bytes(written[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&written[8..8 + header_len]);
    assert!(header.contains("layer4.1.bn2.running_var") && header.contains("layer3.0.shortcut.1.weight") && !header.contains("blocks."), "{header}");

    let load = |path: &Path, key_map| load_checkpoint(ModelKind::Resnet18, shape, 10, &ImportSpec { model: path.to_path_buf(), key_map }, &device).unwrap();
    let x = burn::tensor::Tensor::<4>::random([4, 3, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let logits = |net: &unleash::model::Net| net.forward(x.clone()).logits.into_data().try_to_vec::<f32>().unwrap();
    let (a, b, before) = (logits(&load(&ours, KeyMap::Unleash)), logits(&load(&openood, KeyMap::OpenOod)), logits(&fresh));
    assert_eq!(a, b, "the same model by either name");
    assert!(max_abs_diff(&a, &before) > 1e-3, "the file's running variances (x4) are the ones used");
    // OpenOOD's names without the key map: every renamed tensor is named, once.
    let err = load_checkpoint(ModelKind::Resnet18, shape, 10, &ImportSpec { model: openood, key_map: KeyMap::Unleash }, &device).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("blocks.2.shortcut.conv.weight") && err.contains("unexpected") && err.contains("layer2.0.shortcut.0.weight"), "{err}");
    assert!(!err.contains("num_batches_tracked"), "accepted and ignored: {err}");
}
