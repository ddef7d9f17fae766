//! Every malformed input gets a clear error naming the file and the problem; nothing panics and
//! no reader allocates from an unchecked header.

use std::io::Write;
use std::path::{Path, PathBuf};
use unleash::config::{DataConfig, ExperimentConfig, TrainConfig};
use unleash::data::{cifar, folder, idx, DataBundle, DataSource};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: usize, h: usize, w: usize) -> Vec<u8> {
    idx::encode_idx(&[n, h, w], &vec![7u8; n * h * w])
}

fn labels(v: &[u8]) -> Vec<u8> {
    idx::encode_idx(&[v.len()], v)
}

fn err_of<T: std::fmt::Debug>(r: unleash::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn idx_wrong_magic() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "x-images-idx3-ubyte", b"\x12\x34\x08\x03rest-of-file");
    let e = err_of(idx::read_idx(&p));
    assert!(e.contains("x-images-idx3-ubyte") && e.contains("bad magic"), "{e}");
}

#[test]
fn idx_unsupported_type() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "f.idx", b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd");
    assert!(err_of(idx::read_idx(&p)).contains("not supported"));
}

#[test]
fn idx_truncated_payload_and_header() {
    let d = tempfile::tempdir().unwrap();
    let mut bytes = images(10, 28, 28);
    bytes.truncate(bytes.len() - 100);
    let p = write(d.path(), "t-images-idx3-ubyte", &bytes);
    let e = err_of(idx::read_idx(&p));
    assert!(e.contains("t-images-idx3-ubyte") && e.contains("truncated"), "{e}");
    let p = write(d.path(), "h-images-idx3-ubyte", &images(10, 28, 28)[..7]);
    assert!(err_of(idx::read_idx(&p)).contains("truncated"));
}

#[test]
fn idx_header_claiming_2_pow_32_items_does_not_allocate() {
    let d = tempfile::tempdir().unwrap();
    // 0xFFFFFFFF images of 28x28: 3.4 TB claimed, 10 bytes present.
    let mut bytes = vec![0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28];
    bytes.extend_from_slice(&[1; 10]);
    let p = write(d.path(), "huge-images-idx3-ubyte", &bytes);
    let e = err_of(idx::read_idx(&p));
    assert!(e.contains("huge-images-idx3-ubyte") && e.contains("refusing"), "{e}");
    // A claim under the hard cap but far beyond the file: read, never pre-allocated.
    let mut bytes = vec![0, 0, 8, 3, 0, 0x10, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28];
    bytes.extend_from_slice(&[1; 10]);
    let p = write(d.path(), "big-images-idx3-ubyte", &bytes);
    assert!(err_of(idx::read_idx(&p)).contains("truncated"));
}

#[test]
fn idx_trailing_data() {
    let d = tempfile::tempdir().unwrap();
    let mut bytes = images(2, 4, 4);
    bytes.extend_from_slice(b"extra");
    let p = write(d.path(), "trail-images-idx3-ubyte", &bytes);
    assert!(err_of(idx::read_idx(&p)).contains("more data than its header"));
}

#[test]
fn idx_gzip_corrupt_and_gzip_ok() {
    let d = tempfile::tempdir().unwrap();
    let good = gz(&images(3, 4, 4));
    let p = write(d.path(), "ok-images-idx3-ubyte.gz", &good);
    assert_eq!(idx::read_idx(&p).unwrap().dims, vec![3, 4, 4]);
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[12..mid] {
        *b ^= 0x5a;
    }
    let p = write(d.path(), "bad-images-idx3-ubyte.gz", &bad);
    let e = err_of(idx::read_idx(&p));
    assert!(e.contains("bad-images-idx3-ubyte.gz") && (e.contains("corrupt gzip") || e.contains("truncated") || e.contains("magic")), "{e}");
    let p = write(d.path(), "cut-images-idx3-ubyte.gz", &good[..good.len() / 2]);
    let e = err_of(idx::read_idx(&p));
    // A cut gzip stream ends early: the reader says so (truncated), or the decoder does.
    assert!(e.contains("cut-images-idx3-ubyte.gz") && (e.contains("truncated") || e.contains("corrupt gzip")), "{e}");
}

#[test]
fn idx_zero_items() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "zero-images-idx3-ubyte", &images(0, 28, 28));
    write(d.path(), "zero-labels-idx1-ubyte", &labels(&[]));
    let e = err_of(idx::load_pair(&p, None));
    assert!(e.contains("zero-images-idx3-ubyte") && e.contains("zero images"), "{e}");
}

#[test]
fn idx_image_and_label_counts_differ() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c-images-idx3-ubyte", &images(3, 4, 4));
    write(d.path(), "c-labels-idx1-ubyte", &labels(&[1, 2]));
    let e = err_of(idx::load_pair(&p, None));
    assert!(e.contains("c-labels-idx1-ubyte") && e.contains("2 labels") && e.contains("3 images"), "{e}");
}

#[test]
fn test_labels_beyond_the_training_classes() {
    let d = tempfile::tempdir().unwrap();
    let tr = write(d.path(), "tr-images-idx3-ubyte", &images(4, 8, 8));
    write(d.path(), "tr-labels-idx1-ubyte", &labels(&[0, 1, 2, 1]));
    let te = write(d.path(), "te-images-idx3-ubyte", &images(2, 8, 8));
    write(d.path(), "te-labels-idx1-ubyte", &labels(&[0, 9]));
    let e = err_of(DataBundle::load(
        &DataSource::parse(tr.to_str().unwrap()).unwrap(),
        &DataSource::parse(te.to_str().unwrap()).unwrap(),
        &DataSource::parse("gaussian:5").unwrap(),
        &[],
        None,
    ));
    assert!(e.contains("te-images-idx3-ubyte") && e.contains("test labels use 10 classes") && e.contains("tr-images-idx3-ubyte has 3"), "{e}");
}

#[test]
fn ood_set_with_another_shape_fails_before_training() {
    let d = tempfile::tempdir().unwrap();
    let tr = write(d.path(), "a-images-idx3-ubyte", &images(4, 8, 8));
    write(d.path(), "a-labels-idx1-ubyte", &labels(&[0, 1, 0, 1]));
    let ood = write(d.path(), "o-images-idx3-ubyte", &images(4, 6, 6));
    let src = |p: &Path| DataSource::parse(p.to_str().unwrap()).unwrap();
    let e = err_of(DataBundle::load(&src(&tr), &src(&tr), &DataSource::parse("uniform:3").unwrap(), &[src(&ood)], None));
    assert!(e.contains("o-images-idx3-ubyte") && e.contains("1x6x6") && e.contains("1x8x8"), "{e}");
    // Channels differ: a CIFAR (3x32x32) set against a 1x32x32 ID set.
    let ood = write(d.path(), "c.bin", &[0u8; 3073]);
    let tr = write(d.path(), "g-images-idx3-ubyte", &images(2, 32, 32));
    write(d.path(), "g-labels-idx1-ubyte", &labels(&[0, 1]));
    let e = err_of(DataBundle::load(&src(&tr), &src(&tr), &DataSource::parse("uniform:3").unwrap(), &[src(&ood)], None));
    assert!(e.contains("c.bin") && e.contains("3x32x32"), "{e}");
}

#[test]
fn cifar_truncated_empty_and_bad_label() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "short.bin", &[0u8; 3000]);
    let e = err_of(cifar::load_files(&[p]));
    assert!(e.contains("short.bin") && e.contains("3073"), "{e}");
    let p = write(d.path(), "empty.bin", &[]);
    assert!(err_of(cifar::load_files(&[p])).contains("empty"));
    let mut rec = vec![0u8; 3073 * 2];
    rec[3073] = 12;
    let p = write(d.path(), "label.bin", &rec);
    let e = err_of(cifar::load_files(&[p]));
    assert!(e.contains("label.bin") && e.contains("record 1") && e.contains("label 12"), "{e}");
    let ok = write(d.path(), "ok.bin", &[1u8; 3073 * 3]);
    assert_eq!(cifar::load_files(&[ok]).unwrap().len(), 3);
}

fn png(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_pixel(w, h, image::Luma([90])).save(path).unwrap();
}

#[test]
fn image_folder_rules() {
    let d = tempfile::tempdir().unwrap();
    // No images at all.
    let e = err_of(folder::load(d.path(), None));
    assert!(e.contains("no PNG or JPEG"), "{e}");
    // Classes from subfolders; an unreadable file is skipped; a text file is ignored.
    for (class, n) in [("cat", 2), ("dog", 3)] {
        std::fs::create_dir(d.path().join(class)).unwrap();
        for i in 0..n {
            png(&d.path().join(class).join(format!("{i}.png")), 8, 8);
        }
    }
    std::fs::write(d.path().join("dog").join("broken.png"), b"not a png").unwrap();
    std::fs::write(d.path().join("dog").join("notes.txt"), b"hello").unwrap();
    let ds = folder::load(d.path(), None).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.num_classes, 2);
    assert_eq!(ds.labels, vec![0, 0, 1, 1, 1]);
    assert!(ds.labelled);
    // RGB forced by the ID set.
    assert_eq!(folder::load(d.path(), Some(3)).unwrap().shape.channels, 3);
    // Mixed sizes: an error naming the odd file.
    png(&d.path().join("dog").join("9.png"), 10, 8);
    let e = err_of(folder::load(d.path(), None));
    assert!(e.contains("9.png") && e.contains("10x8") && e.contains("8x8"), "{e}");
    // A flat folder is an unlabelled (OOD) set.
    let flat = tempfile::tempdir().unwrap();
    png(&flat.path().join("a.png"), 8, 8);
    let ds = folder::load(flat.path(), None).unwrap();
    assert!(!ds.labelled);
}

#[test]
fn config_errors_list_every_bad_field() {
    let bad = TrainConfig { lr: 0.0, batch_size: 0, epochs: 0, ..TrainConfig::default() };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("lr") && e.contains("batch_size") && e.contains("epochs"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "exp.toml", b"[data]\ntrain = 'a'\ntest = 'b'\n[train]\nmodel = 'vgg16'\n");
    let e = ExperimentConfig::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("exp.toml") && e.contains("vgg16"), "{e}");
    let p = write(d.path(), "neg.toml", b"[data]\ntrain = 'a'\ntest = 'b'\n[train]\nlr = -1.0\nbatch_size = 0\n");
    let e = ExperimentConfig::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("lr") && e.contains("batch_size"), "{e}");
    // The sample data a config falls back to is where the app looks for it.
    let sample = DataConfig::sample();
    for p in [&sample.train, &sample.test] {
        assert!(std::path::Path::new(p).is_file(), "{p}");
    }
}

#[test]
fn cli_rejects_bad_values_with_the_field_named() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_unleash")).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&["train", "--lr", "-0.1", "--epochs", "1"]).contains("lr"));
    assert!(run(&["train", "--batch", "0", "--epochs", "1"]).contains("batch_size"));
    assert!(run(&["train", "--model", "vgg"]).contains("unknown model 'vgg'"));
    assert!(run(&["train", "--device", "tpu"]).contains("unknown device 'tpu'"));
    assert!(run(&["train", "--train", "/nonexistent/x-images-idx3-ubyte.gz", "--epochs", "1"]).contains("/nonexistent/x-images-idx3-ubyte.gz"));
}
