//! A researcher's own data, laid out as such data usually is: image folders with a macOS zip's
//! leftovers, the standard MNIST file names, and data that changes after a run was made.

mod common;

use common::{sample, unleash, unleash_ok};
use std::path::{Path, PathBuf};
use unleash::config::DataConfig;
use unleash::data::idx;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn png(path: &Path, pixels: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(28, 28, pixels.to_vec()).unwrap().save(path).unwrap();
}

/// Image folders made from sample images: train with cat/ dog/ frog/ (Fashion-MNIST classes 0, 1
/// and 2) and a `__MACOSX/` beside them; test with frog/ and cat/ only.
fn folder_data(root: &Path) -> (PathBuf, PathBuf) {
    let ds = idx::load_pair(Path::new(&sample("fashion-t10k-images-idx3-ubyte.gz")), None).unwrap();
    let (train, test) = (root.join("train"), root.join("test"));
    let names = ["cat", "dog", "frog"];
    let mut counts = [0usize; 3];
    for i in 0..ds.len() {
        let c = ds.labels[i] as usize;
        if c >= 3 || counts[c] >= 12 {
            continue;
        }
        counts[c] += 1;
        // The first 8 of each class train; cats and frogs also have 4 test images each.
        let (dir, k) = if counts[c] <= 8 { (&train, counts[c]) } else { (&test, counts[c]) };
        if dir == &test && names[c] == "dog" {
            continue;
        }
        png(&dir.join(names[c]).join(format!("{k}.png")), ds.image(i));
        png(&train.join("__MACOSX").join(names[c]).join(format!("._{k}.png")), ds.image(i));
    }
    std::fs::write(train.join(".DS_Store"), b"\0").unwrap();
    (train, test)
}

#[test]
fn image_folders_label_the_test_set_by_class_name_and_skip_macos_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = folder_data(dir.path());
    let data = DataConfig {
        train: s(&train),
        test: s(&test),
        val_ood: "gaussian:20".into(),
        ood: vec!["uniform:20".into()],
        id_val_fraction: 0.0,
        ..DataConfig::sample()
    };
    let bundle = data.load().unwrap();
    assert_eq!(bundle.train.num_classes, 3, "__MACOSX is not a class");
    assert_eq!(bundle.train.class_names, vec!["cat", "dog", "frog"]);
    assert_eq!(data.class_names(&bundle.train).unwrap(), vec!["cat", "dog", "frog"], "the app and reports name them");
    // Test: cat/ (labels 0) then frog/ (labels 2, not 1 as its position among test folders).
    assert_eq!(bundle.test.labels, [vec![0; 4], vec![2; 4]].concat());
    let skipped: Vec<&String> = bundle.warnings.iter().filter(|w| w.contains("not data")).collect();
    assert_eq!(skipped.len(), 1, "one message: {:?}", bundle.warnings);
    assert!(skipped[0].contains("skipped 1 folder(s) and 1 file(s)") && skipped[0].contains("__MACOSX"), "{}", skipped[0]);
    // A test class that training lacks is named.
    png(&test.join("horse").join("1.png"), &[0; 784]);
    let e = data.load().unwrap_err().to_string();
    assert!(e.contains("'horse'") && e.contains(&s(&test)), "{e}");
}

/// The standard names in one folder per dataset, as MNIST ships and Debian installs them.
fn standard_layout(root: &Path) -> (String, String, String) {
    let mnist = root.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let copy = |from: &str, to: &str| std::fs::copy(sample(from), mnist.join(to)).unwrap();
    copy("mnist-train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz");
    copy("mnist-train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz");
    copy("mnist-t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz");
    copy("mnist-t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz");
    (s(&mnist.join("train-images-idx3-ubyte.gz")), s(&mnist.join("t10k-images-idx3-ubyte.gz")), s(&mnist))
}

#[test]
fn standard_mnist_names_are_one_family_and_shared_images_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mnist_train, mnist_test, _) = standard_layout(dir.path());
    let mut data = DataConfig { val_ood: mnist_train.clone(), ood: vec![mnist_test.clone()], ..DataConfig::sample() };
    let e = data.validate().unwrap_err().to_string();
    assert!(e.contains("same family") && e.contains("images-idx3-ubyte"), "train vs t10k of one folder: {e}");
    // The reverse: another dataset shipped under the same names, in a folder of its own (two
    // `mnist` folders in different places included), is another family.
    let other = dir.path().join("elsewhere").join("mnist");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(sample("textures-images-idx3-ubyte.gz"), other.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let other_data = DataConfig { val_ood: s(&other.join("t10k-images-idx3-ubyte.gz")), ..data.clone() };
    other_data.validate().unwrap();
    let bundle = other_data.load().unwrap();
    assert!(other_data.shared_image_clashes(&bundle).unwrap().is_empty());
    // The table names the set by its folder, not by its split ("t10k").
    assert_eq!(unleash::data::DataSource::parse(&mnist_test).unwrap().short_name(), "mnist");
    // A copy of test images under an unrelated name and folder passes the name rule but not the
    // content check.
    let copy_dir = dir.path().join("elsewhere");
    std::fs::create_dir_all(&copy_dir).unwrap();
    let copy = copy_dir.join("digits-images-idx3-ubyte.gz");
    std::fs::copy(&mnist_test, &copy).unwrap();
    data.val_ood = s(&copy);
    data.validate().unwrap();
    let bundle = data.load().unwrap();
    let e = data.shared_image_clashes(&bundle).unwrap_err().to_string();
    assert!(e.contains("shares 2000 of its 2000 images") && e.contains("test OOD set") && e.contains(&mnist_test), "{e}");
    // A new run is refused.
    let exp = unleash::config::ExperimentConfig { data: data.clone(), train: unleash::config::TrainConfig { device: unleash::config::DeviceChoice::Cpu, ..Default::default() }, detectors: Default::default() };
    let e = unleash::train::Session::open(exp.clone(), Some(&dir.path().join("run"))).err().expect("refused").to_string();
    assert!(e.contains("shares"), "{e}");
    // The override accepts it, and the run records it.
    data.allow_val_test_overlap = true;
    assert_eq!(data.shared_image_clashes(&bundle).unwrap().len(), 1);
    let exp = unleash::config::ExperimentConfig { data, ..exp };
    unleash::train::Session::open(exp, Some(&dir.path().join("run2"))).unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("run2").join("config.json")).unwrap()).unwrap();
    let clashes = cfg["val_test_overlap"]["clashes"].as_array().unwrap();
    assert!(clashes.iter().any(|c| c.as_str().unwrap().contains("shares")), "{clashes:?}");
}

#[test]
fn a_run_refuses_data_that_changed_and_detector_settings_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    // The training file as raw IDX, so that a changed pixel keeps the file's size.
    let data_dir = dir.path().join("fashion");
    std::fs::create_dir_all(&data_dir).unwrap();
    let images = data_dir.join("fashion-train-images-idx3-ubyte");
    let raw = idx::read_idx(Path::new(&sample("fashion-train-images-idx3-ubyte.gz"))).unwrap();
    let (n, keep) = (raw.dims[0], 400);
    let dims = [keep, raw.dims[1], raw.dims[2]];
    std::fs::write(&images, idx::encode_idx(&dims, &raw.data[..keep * 784])).unwrap();
    let labels = idx::read_idx(Path::new(&sample("fashion-train-labels-idx1-ubyte.gz"))).unwrap();
    assert!(n >= keep);
    std::fs::write(data_dir.join("fashion-train-labels-idx1-ubyte"), idx::encode_idx(&[keep], &labels.data[..keep])).unwrap();
    let run = dir.path().join("run");
    let args: Vec<String> = ["train", "--epochs", "1", "--out", &s(&run), "--train", &s(&images), "--test", &sample("fashion-t10k-images-idx3-ubyte.gz"), "--val-ood", "uniform:100:9", "--ood", "gaussian:100", "--device", "cpu"].map(String::from).to_vec();
    unleash_ok(&args);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let fps = cfg["data_fingerprints"].as_array().expect("fingerprints recorded");
    assert_eq!(fps[0]["role"], "train");
    assert_eq!(fps[0]["files"].as_array().unwrap().len(), 2, "images and labels: {fps:?}");

    // One pixel changed, same size: refused, naming the file and what changed.
    let mut bytes = std::fs::read(&images).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&images, &bytes).unwrap();
    let out = unleash(&["um", "--run", &s(&run), "--epochs", "1", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "um ran on changed data");
    assert!(err.contains(&s(&images)) && err.contains("content changed") && err.contains("training set"), "{err}");
    // Restored: it goes on.
    bytes[last] ^= 0xff;
    std::fs::write(&images, &bytes).unwrap();

    // A detector setting read back from config.json is checked like a new one (knn_k = 0 used to
    // panic at `k - 1`).
    let mut edited = cfg.clone();
    edited["experiment"]["detectors"]["knn_k"] = 0.into();
    std::fs::write(run.join("config.json"), serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
    let out = unleash(&["control", "--run", &s(&run), "--epochs", "1", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("knn_k must be at least 1") && !err.contains("panicked"), "{err}");
    std::fs::write(run.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    // A run from before fingerprints opens with a warning.
    let mut old = cfg.clone();
    old.as_object_mut().unwrap().remove("data_fingerprints");
    std::fs::write(run.join("config.json"), serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let out = unleash_ok(&["control", "--run", &s(&run), "--epochs", "1", "--device", "cpu"].map(String::from));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before runs recorded their data's fingerprints"), "{err}");
}
