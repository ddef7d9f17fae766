//! Every CLI subcommand that the other end-to-end tests do not run, once each: what it writes on
//! good input, and its exit code and message on one bad argument.

mod common;
use common::*;
use std::path::Path;
use unleash::run::RunReader;

fn fails(args: &[&str]) -> String {
    let out = unleash(args);
    assert_eq!(out.status.code(), Some(1), "unleash {args:?} should fail with exit code 1");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn export_batch_order_train_config_metrics_column_and_eval_arch() {
    let dir = tempfile::tempdir().unwrap();

    // train --config: the TOML's settings are the run's.
    let toml = dir.path().join("exp.toml");
    let d = small_data();
    let ood: Vec<String> = d.ood.iter().map(|o| format!("{o:?}")).collect();
    std::fs::write(
        &toml,
        format!(
            "[data]\ntrain = {:?}\ntest = {:?}\nval_ood = {:?}\nood = [{}]\ntrain_limit = 600\n\n[train]\nepochs = 1\nseed = 5\ndevice = \"cpu\"\n",
            d.train,
            d.test,
            d.val_ood,
            ood.join(", ")
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    unleash_ok(&["train".into(), "--config".into(), s(&toml), "--out".into(), s(&run)]);
    let r = RunReader::open(&run).unwrap();
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.experiment().unwrap().train.seed, 5);
    std::fs::write(&toml, "[train]\nepochs = 1\nwarp_speed = true\n").unwrap();
    let e = fails(&["train", "--config", &s(&toml)]);
    assert!(e.contains("exp.toml") && e.contains("warp_speed"), "{e}");

    // export: every artefact; nothing asked for is an error.
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (model, report, csv, sheet) = (out.join("model"), out.join("report"), out.join("atypical"), out.join("sheet"));
    let printed = unleash_ok(&[
        "export".into(), "--run".into(), s(&run), "--model".into(), s(&model), "--report".into(), s(&report),
        "--atypical".into(), s(&csv), "--contact-sheet".into(), s(&sheet), "--ratio".into(), "0.9".into(), "--device".into(), "cpu".into(),
    ]);
    let printed = String::from_utf8_lossy(&printed.stdout).to_string();
    for f in [model.with_extension("bpk"), model.with_extension("safetensors"), report.with_extension("md"), report.with_extension("json"), csv.with_extension("csv")] {
        assert!(f.exists(), "{} missing", f.display());
        assert!(printed.contains(&s(&f)), "export names what it wrote: {printed}");
    }
    let csv_text = std::fs::read_to_string(csv.with_extension("csv")).unwrap();
    assert!(csv_text.starts_with("index,label,full_prediction,masked_prediction,full_loss,masked_loss,loss_increase\n"));
    let e = fails(&["export", "--run", &s(&run)]);
    assert!(e.contains("nothing to export"), "{e}");

    // batch-order: one line per epoch, each a permutation of the samples; a bad range is named.
    let o = unleash_ok(&["batch-order".into(), "--seed".into(), "0".into(), "--epochs".into(), "2..3".into(), "--samples".into(), "10".into()]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<Vec<usize>> = text.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let mut sorted = l.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
    assert_ne!(lines[0], lines[1]);
    let e = fails(&["batch-order", "--seed", "0", "--epochs", "3-2", "--samples", "10"]);
    assert!(e.contains("3-2") && e.contains("range"), "{e}");

    // metrics --column: the second column of a CSV; a column that is not there is named.
    let (id, od) = (dir.path().join("id.csv"), dir.path().join("ood.csv"));
    std::fs::write(&id, "a,b\n0,0.9\n0,0.8\n0,0.7\n").unwrap();
    std::fs::write(&od, "a,b\n1,0.1\n1,0.75\n").unwrap();
    let o = unleash_ok(&["metrics".into(), s(&id), s(&od), "--column".into(), "1".into(), "--json".into()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // ID 0.9, 0.8, 0.7 vs OOD 0.1, 0.75: 5 of 6 pairs ordered.
    assert!((v["auroc"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-12, "{v}");
    let e = fails(&["metrics", &s(&id), &s(&od), "--column", "5"]);
    assert!(e.contains("id.csv") && e.contains("no column 5"), "{e}");

    // eval --arch with explicit data: the recorded epoch's accuracy; the wrong architecture is named.
    let snap = run.join("epochs/0001/model.bpk");
    let mut args: Vec<String> = vec!["eval".into(), "--model".into(), s(&snap), "--arch".into(), "small-cnn".into(), "--json".into()];
    args.extend(small_args());
    let o = unleash_ok(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["id_test_accuracy"].as_f64(), Some(r.records[0].test_acc));
    let mut bad: Vec<String> = args.iter().map(|a| if a == "small-cnn" { "mlp".into() } else { a.clone() }).collect();
    bad.retain(|a| a != "--json");
    let bad_refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    let e = fails(&bad_refs);
    assert!(e.contains("model.bpk") && e.contains("mlp"), "{e}");

    // um's other gamma sources: a quantile of the start epoch's per-sample losses, the mean training
    // loss of an epoch (or of the best one by validation); each UM record carries that gamma.
    let loss_row = RunReader::open(&run).unwrap().loss_matrix().unwrap().unwrap().1.remove(0);
    let mut sorted: Vec<f64> = loss_row.iter().map(|&l| f64::from(l)).collect();
    sorted.sort_by(f64::total_cmp);
    let pos = 0.9 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let q90 = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64);
    let epoch1_loss = r.records[0].train_eval_loss;
    for (flag, value, expected) in [("--quantile", "0.9", q90), ("--gamma-epoch", "1", epoch1_loss), ("--gamma-epoch", "best", epoch1_loss)] {
        unleash_ok(&["um".into(), "--run".into(), s(&run), "--epoch".into(), "1".into(), flag.into(), value.into(), "--epochs".into(), "1".into(), "--device".into(), "cpu".into()]);
        let last = RunReader::open(&run).unwrap().records.last().unwrap().clone();
        let gamma = last.gamma.unwrap();
        assert!((gamma - expected).abs() < 1e-9 * expected.max(1.0), "{flag} {value}: gamma {gamma}, expected {expected}");
    }
    let e = fails(&["um", "--run", &s(&run), "--gamma-epoch", "soon", "--epochs", "1", "--device", "cpu"]);
    assert!(e.contains("'soon' is not an epoch number or 'best'"), "{e}");
}

/// `export --atypical` masks the snapshot the app's mask explorer, `mask` and `um` default to (the
/// last base epoch), not the run's last epoch, which may be a fine-tune's.
#[test]
fn export_masks_the_last_base_epoch_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("run"), 1, 0);
    unleash_ok(&["control", "--run", &s(&run), "--epochs", "1", "--device", "cpu"].map(String::from));
    assert_eq!(RunReader::open(&run).unwrap().records.len(), 2);
    let csv = |name: &str, epoch: Option<&str>| {
        let p = dir.path().join(name);
        let mut args: Vec<String> = ["export", "--run", &s(&run), "--atypical", &s(&p), "--ratio", "0.9", "--device", "cpu"].map(String::from).to_vec();
        if let Some(e) = epoch {
            args.extend(["--epoch".to_string(), e.to_string()]);
        }
        unleash_ok(&args);
        std::fs::read_to_string(p.with_extension("csv")).unwrap()
    };
    let default = csv("default", None);
    assert!(default.lines().count() > 1, "an atypical set to compare:\n{default}");
    assert_eq!(default, csv("base", Some("1")));
    assert_ne!(default, csv("control", Some("2")), "the fine-tune's snapshot gives another list");
}
