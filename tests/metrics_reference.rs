//! Our metrics against scikit-learn's, on the fixture made by
//! tests/fixtures/make_metrics_reference.py (ties, tiny sets, collinear ROC points, -0.0).

use unleash::ood::metrics;

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    id: Vec<f32>,
    ood: Vec<f32>,
    auroc: f64,
    fpr95: f64,
    aupr_in: f64,
    aupr_out: f64,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_case_equals_scikit_learn() {
    let f = fixture();
    assert!(f.cases.len() >= 20);
    for c in &f.cases {
        let m = metrics::compute(&c.id, &c.ood).unwrap();
        for (what, ours, theirs) in [("auroc", m.auroc, c.auroc), ("fpr95", m.fpr95, c.fpr95), ("aupr_in", m.aupr_in, c.aupr_in), ("aupr_out", m.aupr_out, c.aupr_out)] {
            assert!((ours - theirs).abs() <= 1e-9, "{}: {what} = {ours}, scikit-learn {theirs}", c.name);
        }
    }
}

#[test]
fn the_metrics_command_reads_score_files_and_matches() {
    let f = fixture();
    let c = f.cases.iter().find(|c| c.name == "rounded_overlap").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id.csv");
    let ood = dir.path().join("ood.txt");
    let mut id_text = String::from("score\n");
    for v in &c.id {
        id_text.push_str(&format!("{v}\n"));
    }
    std::fs::write(&id, id_text).unwrap();
    std::fs::write(&ood, c.ood.iter().map(|v| format!("{v}\n")).collect::<String>()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unleash")).args(["metrics", "--json"]).arg(&id).arg(&ood).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((v["auroc"].as_f64().unwrap() - c.auroc).abs() < 1e-9);
    assert!((v["fpr95"].as_f64().unwrap() - c.fpr95).abs() < 1e-9);
    assert!((v["aupr_in"].as_f64().unwrap() - c.aupr_in).abs() < 1e-9);
    assert!((v["aupr_out"].as_f64().unwrap() - c.aupr_out).abs() < 1e-9);
    assert_eq!(v["id_count"].as_u64().unwrap() as usize, c.id.len());
}

#[test]
fn the_metrics_command_names_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id.txt");
    let ood = dir.path().join("ood.txt");
    std::fs::write(&id, "0.5\n0.7\nbanana\n").unwrap();
    std::fs::write(&ood, "0.1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unleash")).arg("metrics").arg(&id).arg(&ood).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("id.txt") && err.contains("line 3") && err.contains("banana"), "{err}");
}

#[test]
fn ood_mean_is_the_plain_mean_of_each_sets_metrics() {
    use std::collections::BTreeMap;
    use unleash::ood::Score;
    let f = fixture();
    // Three sets, each with the fixture's metrics of a different case for every score.
    let mut per_set = BTreeMap::new();
    for (k, name) in ["fpr95_exact_19_of_20", "gaussian_0", "tiny_2v3"].iter().enumerate() {
        let c = f.cases.iter().find(|c| c.name == *name).unwrap();
        let m = metrics::compute(&c.id, &c.ood).unwrap();
        per_set.insert(format!("set{k}"), Score::ALL.iter().map(|&s| (s, m)).collect::<BTreeMap<_, _>>());
    }
    let mean = unleash::run::mean_over_sets(&per_set);
    for s in Score::ALL {
        let by_hand = |f: fn(&metrics::Metrics) -> f64| per_set.values().map(|m| f(&m[&s])).sum::<f64>() / 3.0;
        assert!((mean[&s].auroc - by_hand(|m| m.auroc)).abs() < 1e-15);
        assert!((mean[&s].fpr95 - by_hand(|m| m.fpr95)).abs() < 1e-15);
        assert!((mean[&s].aupr_in - by_hand(|m| m.aupr_in)).abs() < 1e-15);
        assert!((mean[&s].aupr_out - by_hand(|m| m.aupr_out)).abs() < 1e-15);
    }
    // A set missing a score does not pull that score's mean towards zero.
    per_set.get_mut("set0").unwrap().remove(&Score::Msp);
    let mean = unleash::run::mean_over_sets(&per_set);
    let two = (per_set["set1"][&Score::Msp].auroc + per_set["set2"][&Score::Msp].auroc) / 2.0;
    assert!((mean[&Score::Msp].auroc - two).abs() < 1e-15);
}
