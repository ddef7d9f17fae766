//! End-to-end runs of the CLI on the sample data: the run folder holds every metric of every
//! epoch, score arrays that reproduce them, per-sample losses; the same seed gives the same
//! numbers; masking, UM, UMAP and the control continue the run; errors name what is wrong.

mod common;
use common::*;
use unleash::ood::{metrics, Score};
use unleash::run::{Phase, RunReader};

fn strip_timing(mut v: serde_json::Value) -> serde_json::Value {
    v["seconds"] = 0.into();
    v["samples_per_sec"] = 0.into();
    v
}

#[test]
fn train_writes_a_complete_reproducible_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = train_run(&dir.path().join("a"), 2, 3);
    let run = RunReader::open(&a).unwrap();
    assert_eq!(run.records.len(), 2);
    for r in &run.records {
        assert_eq!(r.phase, Phase::Base);
        // Well above chance (0.10): 2 epochs on these 540 samples reach 0.40-0.50 (seeds 3 and 4).
        assert!(r.test_acc > 0.3 && r.test_acc <= 1.0, "test accuracy {}", r.test_acc);
        assert_eq!(r.val_name, "uniform-val");
        // Validation's ID side is the held-out split, never the ID test set.
        assert_eq!(r.val_id_name, "id_val");
        assert_eq!(r.ood.keys().cloned().collect::<Vec<_>>(), vec!["gaussian".to_string(), "textures".to_string()]);
        for m in r.ood.values().chain([&r.val, &r.ood_mean]) {
            // Every score but ODIN, which is opt-in.
            assert!(!m.contains_key(&Score::Odin));
            for s in Score::ALL.into_iter().filter(|&s| s != Score::Odin) {
                let v = m[&s];
                for x in [v.auroc, v.fpr95, v.aupr_in, v.aupr_out] {
                    assert!((0.0..=1.0).contains(&x), "{s:?}: {v:?}");
                }
            }
        }
        // The saved score arrays reproduce the recorded metrics exactly.
        let id = run.scores(r.epoch, "id_test").unwrap();
        assert_eq!(id[&Score::Energy].len(), 2000);
        let id_val = run.scores(r.epoch, "id_val").unwrap();
        assert_eq!(id_val[&Score::Energy].len(), 60);
        let val = run.scores(r.epoch, "val_uniform-val").unwrap();
        // ODIN's column is NaN (not computed) and reads back as absent.
        assert!(!id.contains_key(&Score::Odin) && id.len() == Score::ALL.len() - 1);
        for s in Score::ALL.into_iter().filter(|&s| s != Score::Odin) {
            assert_eq!(metrics::compute(&id_val[&s], &val[&s]).unwrap(), r.val[&s], "validation {s:?}");
        }
        for set in ["textures", "gaussian"] {
            let ood = run.scores(r.epoch, set).unwrap();
            for s in Score::ALL.into_iter().filter(|&s| s != Score::Odin) {
                assert_eq!(metrics::compute(&id[&s], &ood[&s]).unwrap(), r.ood[set][&s], "{set} {s:?}");
            }
        }
        assert!(run.snapshot(r.epoch).unwrap().exists());
    }
    // 600 samples: 60 held out (stratified, seeded), 540 trained on; the per-sample arrays index those.
    let split = run.config.id_val_split.as_ref().unwrap();
    assert_eq!((split.fraction, split.seed, split.count), (0.1, 0, 60));
    assert_eq!(split.indices.len(), 60);
    assert_eq!(run.config.train_samples, Some(540));
    assert_eq!(run.config.validation_id.as_deref(), Some("id_val"));
    assert!(!run.config.val_test_overlap.as_ref().unwrap().allowed);
    let (n, rows) = run.loss_matrix().unwrap().unwrap();
    assert_eq!((n, rows.len()), (540, 2));
    // Per-sample losses average to the recorded eval loss.
    let mean = rows[1].iter().map(|&l| f64::from(l)).sum::<f64>() / 540.0;
    assert!((mean - run.records[1].train_eval_loss).abs() < 1e-4);

    // eval of a snapshot reproduces that epoch's numbers.
    let snap = a.join("epochs/0002/model.bpk");
    let out = unleash_ok(&["eval".into(), "--model".into(), snap.display().to_string(), "--run".into(), a.display().to_string(), "--json".into(), "--device".into(), "cpu".into()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id_test_accuracy"].as_f64().unwrap(), run.records[1].test_acc);
    assert_eq!(v["ood"]["textures"]["energy"]["auroc"].as_f64().unwrap(), run.records[1].ood["textures"][&Score::Energy].auroc);
    // Every detector, for every OOD set, as the epoch recorded it (ODIN is opt-in: absent).
    let detectors = ["mahalanobis", "knn", "vim", "react", "ash", "dice"];
    for (set, metrics) in &run.records[1].ood {
        for key in detectors {
            let score = Score::from_key(key).unwrap();
            assert_eq!(v["ood"][set][key]["auroc"].as_f64(), Some(metrics[&score].auroc), "{set} {key}");
            assert!(v["ood"][set][key]["fpr95"].is_number() && v["ood"][set][key]["aupr_out"].is_number(), "{set} {key}");
        }
        assert!(v["ood"][set].get("odin").is_none(), "ODIN is off by default");
    }
    assert_eq!(v["detector_problems"].as_array().map(Vec::len), Some(0));
    // `metrics` of two of the run's score arrays: every score, as the epoch recorded them.
    let epoch2 = a.join("epochs/0002");
    let out = unleash_ok(&["metrics".into(), epoch2.join("scores_id_test.npy").display().to_string(), epoch2.join("scores_textures.npy").display().to_string(), "--json".into()]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["scores"].as_object().unwrap().len(), Score::ALL.len() - 1, "every score but ODIN: {m}");
    for (score, recorded) in &run.records[1].ood["textures"] {
        assert_eq!(m["scores"][score.key()]["auroc"].as_f64(), Some(recorded.auroc), "{score:?}");
    }
    let with_odin = unleash_ok(&["eval".into(), "--model".into(), snap.display().to_string(), "--run".into(), a.display().to_string(), "--json".into(), "--device".into(), "cpu".into(), "--odin".into()]);
    let w: serde_json::Value = serde_json::from_slice(&with_odin.stdout).unwrap();
    for set in run.records[1].ood.keys() {
        let auroc = w["ood"][set]["odin"]["auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auroc), "{set}: ODIN AUROC {auroc}");
        assert_eq!(w["ood"][set]["knn"], v["ood"][set]["knn"], "ODIN leaves the other scores alone");
    }

    // Determinism: the same seed on the same device gives identical numbers.
    let b = train_run(&dir.path().join("b"), 2, 3);
    let text = |p: &std::path::Path| std::fs::read_to_string(p.join("events.jsonl")).unwrap();
    let parse = |t: String| t.lines().map(|l| strip_timing(serde_json::from_str(l).unwrap())).collect::<Vec<_>>();
    assert_eq!(parse(text(&a)), parse(text(&b)));
    assert_eq!(std::fs::read(a.join("per_sample_loss.npy")).unwrap(), std::fs::read(b.join("per_sample_loss.npy")).unwrap());
    // Another seed gives other numbers.
    let c = train_run(&dir.path().join("c"), 1, 4);
    assert_ne!(parse(text(&c))[0]["train_loss"], parse(text(&a))[0]["train_loss"]);

    // mask, UM, UMAP and the control continue the run.
    let arg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = unleash_ok(&arg(&["mask", "--run", a.to_str().unwrap(), "--ratios", "0.3,0.7", "--json", "--device", "cpu"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ratios = v["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    assert!(ratios[1]["gamma"].as_f64().unwrap() >= ratios[0]["gamma"].as_f64().unwrap() - 1e-3);
    assert!(std::path::Path::new(ratios[1]["csv"].as_str().unwrap()).exists());
    unleash_ok(&arg(&["um", "--run", a.to_str().unwrap(), "--mask-ratio", "0.7", "--epochs", "1", "--device", "cpu"]));
    unleash_ok(&arg(&["umap", "--run", a.to_str().unwrap(), "--gamma", "0.4", "--prune-ratio", "0.2", "--epochs", "1", "--device", "cpu"]));
    unleash_ok(&arg(&["control", "--run", a.to_str().unwrap(), "--epochs", "1", "--device", "cpu"]));
    let run = RunReader::open(&a).unwrap();
    let phases: Vec<(Phase, usize)> = run.records.iter().map(|r| (r.phase, r.from_epoch)).collect();
    assert_eq!(phases, vec![(Phase::Base, 0), (Phase::Base, 0), (Phase::Um, 2), (Phase::Umap, 2), (Phase::Control, 2)]);
    assert_eq!(run.records[3].gamma, Some(0.4));
    // um --mask-ratio 0.7 trains with the gamma that mask reported for 0.7.
    assert_eq!(run.records[2].gamma, ratios[1]["gamma"].as_f64());
    assert_eq!(run.loss_matrix().unwrap().unwrap().1.len(), 5);

    // Clear errors: unknown epoch, bad ratio, missing snapshot.
    let err = |args: &[&str]| {
        let out = unleash(args);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let a_s = a.to_str().unwrap();
    assert!(err(&["um", "--run", a_s, "--epoch", "9", "--gamma", "0.1"]).contains("has no epoch 9"));
    assert!(err(&["mask", "--run", a_s, "--ratios", "1.0"]).contains("outside [0, 0.99]"));
    assert!(err(&["mask", "--run", a_s, "--ratios", "-0.2"]).contains("outside [0, 0.99]"));
    std::fs::remove_file(a.join("epochs/0001/model.bpk")).unwrap();
    assert!(err(&["um", "--run", a_s, "--epoch", "1", "--gamma", "0.1"]).contains("snapshot of epoch 1 is missing"));
    assert!(err(&["mask", "--run", "/nonexistent/run"]).contains("/nonexistent/run"));
}

#[test]
fn a_killed_run_stays_readable_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed");
    let mut args: Vec<String> = vec!["train".into(), "--epochs".into(), "30".into(), "--out".into(), out.display().to_string()];
    args.extend(small_args());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_unleash")).args(&args).stderr(std::process::Stdio::null()).spawn().unwrap();
    // SIGKILL once the first epoch is on disk: inside epoch 2 (an epoch takes far longer than the
    // 5 ms poll), a point fixed by the run's own progress rather than by a sleep.
    wait_for_lines(&out, 1, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let run = RunReader::open(&out).unwrap();
    let n = run.records.len();
    // Epoch 2 may just have been committed when the kill landed; anything from 1 on is a run cut
    // short, and 30 epochs are far off.
    assert!((1..30).contains(&n), "{n} epochs kept");
    assert_eq!(run.loss_matrix().unwrap().unwrap().1.len(), n);
    assert!(run.snapshot(n).unwrap().exists());
    // No temp files count as data; reopening and continuing works.
    unleash_ok(&["control", "--run", out.to_str().unwrap(), "--epochs", "1", "--device", "cpu"].map(String::from));
    assert_eq!(RunReader::open(&out).unwrap().records.len(), n + 1);
}

#[test]
fn a_half_written_events_line_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let a = train_run(&dir.path().join("a"), 1, 0);
    let mut text = std::fs::read_to_string(a.join("events.jsonl")).unwrap();
    text.push_str("{\"epoch\":2,\"phase\":\"ba");
    std::fs::write(a.join("events.jsonl"), &text).unwrap();
    assert_eq!(RunReader::open(&a).unwrap().records.len(), 1);
    // Damage in the middle cuts the run there, with a warning that names the file and line.
    std::fs::write(a.join("events.jsonl"), format!("garbage\n{text}")).unwrap();
    let run = RunReader::open(&a).unwrap();
    assert!(run.records.is_empty());
    assert!(run.warnings[0].contains("events.jsonl") && run.warnings[0].contains("line 1"), "{:?}", run.warnings);
}

#[test]
fn reproduce_writes_its_table_plot_and_rebuilds_them_from_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("repro");
    let o = out.display().to_string();
    let sums = dir.path().join("seeds");
    let sm = sums.display().to_string();
    let args = ["reproduce", "--seeds", "0..1", "--epochs", "1", "--finetune-epochs", "1", "--train-limit", "300", "--official-gamma", "--out", &o, "--summaries", &sm];
    unleash_ok(&args.map(String::from));
    for seed in 0..2 {
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(sums.join(format!("seed-{seed}.json"))).unwrap()).unwrap();
        assert_eq!(summary["seed"], seed);
        assert_eq!(summary["curve"].as_array().unwrap().len(), 6, "base and five fine-tune epochs");
        assert!(summary["gamma_official"].as_f64().is_some());
    }
    let md = std::fs::read_to_string(out.join("reproduction.md")).unwrap();
    for stage in unleash::cli::reproduce::STAGES {
        assert!(md.contains(stage), "{stage} missing from\n{md}");
    }
    for (comparison, _, _) in unleash::cli::reproduce::COMPARISONS {
        assert!(md.contains(comparison), "{comparison} missing from\n{md}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("reproduction.json")).unwrap()).unwrap();
    assert_eq!(json["seeds"][0]["stages"].as_array().unwrap().len(), unleash::cli::reproduce::STAGES.len());
    let png = image::open(out.join("auroc_vs_epoch.png")).unwrap();
    assert_eq!((png.width(), png.height()), (1000, 560));
    let run = RunReader::open(&out.join("seed-0")).unwrap();
    let phases: Vec<Phase> = run.records.iter().map(|r| r.phase).collect();
    assert_eq!(phases, vec![Phase::Base, Phase::Control, Phase::Um, Phase::Um, Phase::Umap, Phase::Um]);
    // Every score the seeds have (all but the opt-in ODIN), each comparison.
    assert_eq!(json["paired"].as_array().unwrap().len(), (Score::ALL.len() - 1) * unleash::cli::reproduce::COMPARISONS.len());
    // The table is rebuilt from the committed summaries alone (no run folders), with the same numbers.
    std::fs::remove_dir_all(&out).unwrap();
    unleash_ok(&["reproduce", "--seeds", "0,1", "--official-gamma", "--report-only", "--out", &o, "--summaries", &sm].map(String::from));
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("reproduction.json")).unwrap()).unwrap();
    assert_eq!(again["seeds"], json["seeds"]);
    assert_eq!(again["paired"], json["paired"]);
    assert!(out.join("auroc_vs_epoch.png").exists());
    // A finished seed is not run again; a missing summary is an error naming it.
    unleash_ok(&args.map(String::from));
    let out2 = unleash(&["reproduce", "--seeds", "0..2", "--official-gamma", "--report-only", "--out", &o, "--summaries", &sm]);
    assert!(!out2.status.success() && String::from_utf8_lossy(&out2.stderr).contains("seed-2.json"));
}

#[test]
fn batch_order_prints_the_batches_a_phase_trains_on() {
    use unleash::train::{epoch_order, OrderKey};
    let out = unleash_ok(&["batch-order", "--seed", "3", "--phase", "finetune", "--epochs", "1..2", "--samples", "50"].map(String::from));
    let lines: Vec<Vec<usize>> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split(' ').map(|i| i.parse().unwrap()).collect()).collect();
    assert_eq!(lines, vec![epoch_order(3, OrderKey::Finetune { phase_epoch: 1 }, 50), epoch_order(3, OrderKey::Finetune { phase_epoch: 2 }, 50)]);
    let base = unleash_ok(&["batch-order", "--seed", "3", "--epochs", "2..2", "--samples", "50"].map(String::from));
    let line: Vec<usize> = String::from_utf8(base.stdout).unwrap().trim().split(' ').map(|i| i.parse().unwrap()).collect();
    assert_eq!(line, epoch_order(3, OrderKey::Base { epoch: 2 }, 50));
    let bad = unleash(&["batch-order", "--seed", "3", "--phase", "warmup", "--epochs", "1..2", "--samples", "50"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("'warmup' is not base or finetune"));
}

#[test]
fn um_takes_gamma_from_a_random_mask_as_mask_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = train_run(&dir.path().join("a"), 1, 5);
    let a_s = a.to_str().unwrap();
    let arg = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = unleash_ok(&arg(&["mask", "--run", a_s, "--ratios", "0.3", "--mask", "random", "--seed", "4", "--json", "--device", "cpu"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let random_gamma = v["ratios"][0]["gamma"].as_f64().unwrap();
    let out = unleash_ok(&arg(&["mask", "--run", a_s, "--ratios", "0.3", "--json", "--device", "cpu"]));
    let magnitude_gamma = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["ratios"][0]["gamma"].as_f64().unwrap();
    assert_ne!(random_gamma, magnitude_gamma);
    unleash_ok(&arg(&["um", "--run", a_s, "--mask-ratio", "0.3", "--mask", "random", "--mask-seed", "4", "--epochs", "1", "--device", "cpu"]));
    let run = RunReader::open(&a).unwrap();
    assert_eq!(run.records[1].gamma, Some(random_gamma), "UM's gamma is what `mask --json` reported");
    let bad = unleash(&["um", "--run", a_s, "--mask", "bogus", "--epochs", "1"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("unknown mask 'bogus'"));
}

#[test]
fn mask_json_reports_masked_detection_that_eval_of_the_exported_masked_model_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("run"), 1, 0);
    let r = run.display().to_string();
    let out = unleash_ok(&["mask".into(), "--run".into(), r.clone(), "--ratios".into(), "0.7".into(), "--device".into(), "cpu".into(), "--json".into()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &v["ratios"][0];
    for key in ["ratio", "gamma", "atypical", "masked_test_acc"] {
        assert!(row[key].is_number(), "{key}: {row}");
    }
    for (entry, name) in [(row, "ratio 0.7"), (&v["full"], "full")] {
        for set in ["textures", "gaussian"] {
            for score in ["msp", "maxlogit", "energy"] {
                let m = &entry["ood"][set][score];
                assert!(m["auroc"].as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) && m["fpr95"].is_number(), "{name} {set} {score}: {m}");
                let mean = entry["ood_mean"][score]["auroc"].as_f64().unwrap();
                let by_hand = (entry["ood"]["textures"][score]["auroc"].as_f64().unwrap() + entry["ood"]["gaussian"][score]["auroc"].as_f64().unwrap()) / 2.0;
                assert!((mean - by_hand).abs() < 1e-12, "{name} {score}: ood_mean is the mean over the test sets");
            }
        }
        assert!(entry["val"]["energy"]["auroc"].is_number(), "{name}: the validation set is there too");
    }
    // Masking 70% of every layer moves the model: its figures differ from the unmasked one's.
    assert_ne!(row["ood_mean"]["energy"]["auroc"], v["full"]["ood_mean"]["energy"]["auroc"]);
    // The unmasked figures are the recorded epoch's.
    let rec = &RunReader::open(&run).unwrap().records[0];
    assert_eq!(v["full"]["test_acc"].as_f64().unwrap(), rec.test_acc);
    assert_eq!(v["full"]["ood"]["textures"]["energy"]["auroc"].as_f64().unwrap(), rec.ood["textures"][&Score::Energy].auroc);

    // The masked model, exported, evaluates to the same numbers.
    let model = dir.path().join("masked");
    unleash_ok(&["export".into(), "--run".into(), r.clone(), "--model".into(), model.display().to_string(), "--ratio".into(), "0.7".into(), "--masked".into(), "--device".into(), "cpu".into()]);
    let out = unleash_ok(&["eval".into(), "--model".into(), model.with_extension("bpk").display().to_string(), "--run".into(), r, "--json".into(), "--device".into(), "cpu".into()]);
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["id_test_accuracy"].as_f64(), row["masked_test_acc"].as_f64());
    for set in ["textures", "gaussian"] {
        for score in ["msp", "maxlogit", "energy"] {
            assert_eq!(e["ood"][set][score]["auroc"].as_f64(), row["ood"][set][score]["auroc"].as_f64(), "{set} {score}");
            assert_eq!(e["ood"][set][score]["fpr95"].as_f64(), row["ood"][set][score]["fpr95"].as_f64(), "{set} {score}");
        }
    }
}
