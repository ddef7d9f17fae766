//! Runs past one machine: a reproduction task is a pure function of its arguments that a
//! scheduler may kill, stop (SIGTERM) or requeue and rerun, ending with an uninterrupted task's
//! numbers; `unleash sweep` lists, runs and merges the tasks of a TOML grid. Each test drives the
//! real binary on tiny runs of the sample data.

mod common;

use common::{unleash, unleash_ok, wait_for_lines};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use unleash::run::{Phase, RunReader};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// One tiny reproduction task (seed 0 of 0..1): 3 base epochs, then four fine-tune arms of 2.
fn task_args(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = ["reproduce", "--seeds", "0..1", "--task-index", "0", "--epochs", "3", "--finetune-epochs", "2", "--train-limit", "300", "--device", "cpu"]
        .map(String::from)
        .to_vec();
    v.extend(["--out".into(), s(&root.join("runs")), "--summaries".into(), s(&root.join("summaries"))]);
    v
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_unleash")).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawning unleash")
}

/// A summary's numbers: everything but the wall-clock time.
fn summary_numbers(root: &Path) -> serde_json::Value {
    let path = root.join("summaries").join("seed-0.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
    v.as_object_mut().unwrap().remove("wall_seconds");
    v
}

#[test]
fn a_task_killed_in_base_training_and_stopped_in_a_fine_tune_ends_with_the_numbers_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    unleash_ok(&task_args(&whole));
    let total = RunReader::open(&whole.join("runs/seed-0")).unwrap().records.len();
    assert_eq!(total, 3 + 4 * 2);

    let cut = dir.path().join("cut");
    let run = cut.join("runs/seed-0");
    // A kill (SIGKILL: a node lost, a job past its grace time) inside base epoch 3.
    let mut child = spawn(&task_args(&cut));
    wait_for_lines(&run, 2, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(RunReader::open(&run).unwrap().records.len(), 2, "the kill did not land inside epoch 3; the test proves nothing");
    assert!(!cut.join("summaries/seed-0.json").exists());
    // The rerun continues the base phase; SIGTERM (a time limit, `scontrol requeue`) inside the
    // second epoch of the second arm (epoch 7) stops it cleanly, with status 130 and the way on.
    let mut child = spawn(&task_args(&cut));
    wait_for_lines(&run, 6, &mut child);
    let ok = Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status().unwrap().success();
    assert!(ok);
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(err.contains("SIGTERM") && err.contains("run the same command again"), "{err}");
    let stopped = RunReader::open(&run).unwrap();
    assert_eq!(stopped.records.len(), 6, "the stop did not land inside epoch 7; the test proves nothing");
    assert_eq!((stopped.records[5].phase, stopped.records[5].phase_epoch), (Phase::Um, 1), "half of the second arm");
    // The third try reruns that arm from its start snapshot and finishes the task.
    let out = unleash_ok(&task_args(&cut));
    assert!(String::from_utf8_lossy(&out.stderr).contains("from its first 5 epochs"), "the half arm is cut off, not continued");
    assert_eq!(summary_numbers(&cut), summary_numbers(&whole));
    let (a, b) = (RunReader::open(&whole.join("runs/seed-0")).unwrap(), RunReader::open(&run).unwrap());
    assert_eq!(b.records.len(), total);
    for (x, y) in a.records.iter().zip(&b.records) {
        assert_eq!((x.epoch, x.phase, x.gamma, x.train_loss, x.test_acc), (y.epoch, y.phase, y.gamma, y.train_loss, y.test_acc));
        assert_eq!(x.ood_mean, y.ood_mean, "epoch {}", x.epoch);
    }
    // A task whose summary exists is done: a rerun (a requeue after the end) leaves it.
    let again = unleash_ok(&task_args(&cut));
    assert!(String::from_utf8_lossy(&again.stderr).contains("skipping"));
}

#[test]
fn a_task_refuses_a_run_folder_of_other_settings_and_an_index_past_its_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = task_args(dir.path());
    // A folder as another try of the same task would find it, but started with other settings.
    let run = dir.path().join("runs/seed-0");
    let mut child = spawn(&args);
    wait_for_lines(&run, 1, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let at = args.iter().position(|a| a == "--finetune-epochs").unwrap();
    args[at + 1] = "3".into();
    let out = unleash(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("was started for another task") && err.contains("task.json"), "{err}");
    let at = args.iter().position(|a| a == "--task-index").unwrap();
    args[at + 1] = "2".into();
    let out = unleash(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("2 is outside the 2 seeds"), "{err}");
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn without_wall(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("wall_seconds");
    v
}

#[test]
fn a_sweep_lists_runs_and_merges_its_tasks_by_setting_and_names_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("g.toml");
    let g = s(&grid);
    std::fs::write(&grid, "out = \"sw\"\n[recipe]\nepochs = 1\nfinetune_epochs = 1\ntrain_limit = 300\ndevice = \"cpu\"\n[grid]\nseeds = \"0..1\"\nmask_ratio = [0.5, 0.7]\n").unwrap();
    let list = String::from_utf8(unleash_ok(&["sweep", "--grid", &g, "--list"].map(String::from)).stdout).unwrap();
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows, ["0\tseed 0\tmask_ratio 0.5\tto do", "1\tseed 0\tmask_ratio 0.7\tto do", "2\tseed 1\tmask_ratio 0.5\tto do", "3\tseed 1\tmask_ratio 0.7\tto do"]);
    // Tasks 0 and 2 by --index, task 1 by the index a Slurm array gives; task 3 never runs.
    for i in ["0", "2"] {
        unleash_ok(&["sweep", "--grid", &g, "--index", i].map(String::from));
    }
    let by_env = Command::new(env!("CARGO_BIN_EXE_unleash")).args(["sweep", "--grid", &g]).env("SLURM_ARRAY_TASK_ID", "1").output().unwrap();
    assert!(by_env.status.success(), "{}", String::from_utf8_lossy(&by_env.stderr));
    let sw = dir.path().join("sw");
    assert!(sw.join("mask_ratio-0.7/summaries/seed-0.json").exists());
    let list = String::from_utf8(unleash_ok(&["sweep", "--grid", &g, "--list"].map(String::from)).stdout).unwrap();
    assert_eq!(list.lines().map(|l| l.rsplit('\t').next().unwrap()).collect::<Vec<_>>(), ["done", "done", "done", "to do"]);

    unleash_ok(&["sweep", "--grid", &g, "--report"].map(String::from));
    let report = json(&sw.join("sweep-report.json"));
    assert_eq!((report["tasks"].as_u64(), report["finished"].as_u64()), (Some(4), Some(3)));
    assert_eq!(report["missing"].as_array().unwrap().len(), 1);
    assert_eq!((report["missing"][0]["index"].as_u64(), report["missing"][0]["why"].as_str()), (Some(3), Some("not run")));
    assert_eq!(report["settings"][0]["seeds"], serde_json::json!([0, 1]));
    assert_eq!(report["settings"][1]["seeds"], serde_json::json!([0]));
    let md = std::fs::read_to_string(sw.join("sweep-report.md")).unwrap();
    assert!(md.contains("3 of 4 tasks finished") && md.contains("| 3 | 1 | mask_ratio 0.7 | not run |"), "{md}");
    // Per setting, reproduce's own report of the same summaries: the same paired tables.
    let repro = dir.path().join("repro");
    let summaries = sw.join("mask_ratio-0.5/summaries");
    unleash_ok(&["reproduce", "--report-only", "--seeds", "0..1", "--out", &s(&repro), "--summaries", &s(&summaries)].map(String::from));
    assert_eq!(report["settings"][0]["paired"], json(&repro.join("reproduction.json"))["paired"]);
    assert_eq!(json(&sw.join("mask_ratio-0.5/reproduction.json"))["paired"], json(&repro.join("reproduction.json"))["paired"]);
    let n = report["settings"][0]["paired"][0]["auroc"]["n"].as_u64();
    assert_eq!(n, Some(2), "the two seeds of mask ratio 0.5 are pooled");
    // Tasks missing fail the merge only when asked.
    let strict = unleash(&["sweep", "--grid", &g, "--report", "--require-all"]);
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success() && err.contains("1 of 4 tasks have no summary (--require-all): 3"), "{err}");
    // A sweep task is reproduce's task: the same settings give the same summary.
    let alone = dir.path().join("alone");
    unleash_ok(&["reproduce", "--seeds", "0", "--epochs", "1", "--finetune-epochs", "1", "--train-limit", "300", "--um-mask-ratio", "0.7", "--no-report", "--out", &s(&alone.join("runs")), "--summaries", &s(&alone)].map(String::from));
    assert_eq!(without_wall(json(&alone.join("seed-0.json"))), without_wall(json(&sw.join("mask_ratio-0.7/summaries/seed-0.json"))));
    // An index past the grid is an error naming the file.
    let bad = unleash(&["sweep", "--grid", &g, "--index", "4"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("has 4 tasks"));
}
