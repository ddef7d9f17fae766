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
