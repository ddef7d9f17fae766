//! A run folder is never lost: one writer at a time, damage contained and repairable, training
//! resumed to the same numbers after a kill or Ctrl-C, and runs of the first format still open.
//! Each test drives the real binary on the small sample-data setup of tests/common.

mod common;

use common::{small_args, train_run, unleash, unleash_ok, wait_for_lines};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use unleash::run::{EpochRecord, Phase, RunReader};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn train_args(epochs: usize, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["train".into(), "--epochs".into(), epochs.to_string(), "--seed".into(), "0".into(), "--out".into(), s(out)];
    args.extend(small_args());
    args
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_unleash")).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawning unleash")
}

/// Sends a signal through the shell's own `kill` (no kill binary or libc binding needed).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("sh").args(["-c", &format!("kill {sig} {}", child.id())]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

/// The numbers of a record: everything but the wall-clock timings.
fn numbers(r: &EpochRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("seconds");
    o.remove("samples_per_sec");
    v
}

fn assert_same_run(a: &Path, b: &Path) {
    let (ra, rb) = (RunReader::open(a).unwrap(), RunReader::open(b).unwrap());
    assert_eq!(ra.records.len(), rb.records.len());
    for (x, y) in ra.records.iter().zip(&rb.records) {
        assert_eq!(numbers(x), numbers(y), "epoch {} differs", x.epoch);
    }
    assert_eq!(std::fs::read(a.join("per_sample_loss.npy")).unwrap(), std::fs::read(b.join("per_sample_loss.npy")).unwrap());
    let last = ra.records.len();
    assert_eq!(weights(&ra.snapshot(last).unwrap()), weights(&rb.snapshot(last).unwrap()), "final weights differ");
    for e in std::fs::read_dir(unleash::run::epoch_dir(a, last)).unwrap() {
        let name = e.unwrap().file_name();
        if name.to_string_lossy().starts_with("scores_") {
            let other = unleash::run::epoch_dir(b, last).join(&name);
            assert_eq!(std::fs::read(unleash::run::epoch_dir(a, last).join(&name)).unwrap(), std::fs::read(other).unwrap(), "{name:?} differs");
        }
    }
}

/// A snapshot's weights: the tensor table and data of its safetensors export (a .bpk also holds
/// burn's parameter ids, which differ between processes; safetensors metadata order varies).
fn weights(bpk: &Path) -> (serde_json::Value, Vec<u8>) {
    let shape = unleash::data::ImageShape { channels: 1, height: 28, width: 28 };
    let net = unleash::model::Net::load_bpk(unleash::config::ModelKind::SmallCnn, shape, 10, bpk, &unleash::device::cpu().device).unwrap();
    let out = tempfile::tempdir().unwrap();
    let p = out.path().join("w.safetensors");
    net.save_safetensors(&p).unwrap();
    let bytes = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut table: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    table.as_object_mut().unwrap().remove("__metadata__");
    (table, bytes[8 + n..].to_vec())
}

/// One uninterrupted 3-epoch run, shared by the resume tests.
fn uninterrupted() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        // In cargo's scratch folder for integration tests, so that it outlives each test without
        // piling up in the system's temp folder.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability-uninterrupted");
        let _ = std::fs::remove_dir_all(&out);
        unleash_ok(&train_args(3, &out));
        out
    })
}

#[test]
fn a_second_writer_fails_at_once_naming_the_holder_and_the_run_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("r"), 1, 0);
    let mut first = spawn(&["control", "--run", &s(&run), "--epochs", "3", "--device", "cpu"].map(String::from));
    // Wait until the first job holds the run (its pid is in the lock file).
    let pid = first.id().to_string();
    let t = Instant::now();
    while !std::fs::read_to_string(run.join("writer.lock")).unwrap_or_default().contains(&format!("pid {pid}\n")) {
        assert!(first.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60), "the first writer never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let second = unleash(&["um", "--run", &s(&run), "--epochs", "1", "--gamma", "0.3", "--device", "cpu"]);
    let second_secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second writer ran: {err}");
    assert!(err.contains(&format!("pid {pid}")) && err.contains("control") && err.contains("started"), "{err}");
    // It failed before loading data or training (loading alone takes longer than this).
    assert!(first.try_wait().unwrap().is_none(), "the first writer finished before the second was refused; the test proves nothing");
    let status = first.wait().unwrap();
    assert!(status.success(), "the first writer failed");
    let r = RunReader::open(&run).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let phases: Vec<Phase> = r.records.iter().map(|r| r.phase).collect();
    assert_eq!(phases, [Phase::Base, Phase::Control, Phase::Control, Phase::Control]);
    assert!(second_secs < 30.0);
    // The lock went with the process: the next writer proceeds.
    unleash_ok(&["um", "--run", &s(&run), "--epochs", "1", "--gamma", "0.3", "--device", "cpu"].map(String::from));
    assert_eq!(RunReader::open(&run).unwrap().records.len(), 5);
}

#[test]
fn damage_in_events_is_contained_and_repaired_with_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let good = train_run(&dir.path().join("good"), 3, 0);
    let original = RunReader::open(&good).unwrap().records;
    let text = std::fs::read_to_string(good.join("events.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let copy = |name: &str, events: String| -> PathBuf {
        let d = dir.path().join(name);
        copy_dir(&good, &d);
        std::fs::write(d.join("events.jsonl"), events).unwrap();
        d
    };
    // Two writers appended epoch 3 twice (the issue's case): epoch 3 is in doubt, 1-2 are good.
    let twice = copy("twice", format!("{text}{}\n", lines[2]));
    // A bad line in the middle, and an epoch out of order.
    let bad = copy("bad", format!("{}\nnot json\n{}\n", lines[0], lines[2]));
    let swapped = copy("swapped", format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]));
    for (run, keep, line) in [(&twice, 2, 4), (&bad, 1, 2), (&swapped, 1, 2)] {
        let r = RunReader::open(run).unwrap();
        assert_eq!(r.records, original[..keep], "{}", run.display());
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("events.jsonl") && r.warnings[0].contains(&format!("line {line} ")), "{}", r.warnings[0]);
        for e in 1..=keep {
            assert!(r.snapshot(e).unwrap().exists());
        }
        // Readers work on the good epochs and print the warning.
        let out = unleash_ok(&["export", "--run", &s(run), "--report", &s(&run.join("rep"))].map(String::from));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("warning:") && err.contains(&format!("line {line} ")), "{err}");
        // A writer is refused until the run is repaired.
        let refused = unleash(&["control", "--run", &s(run), "--epochs", "1", "--device", "cpu"]);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && err.contains("damaged") && err.contains("unleash repair"), "{err}");
        assert_eq!(RunReader::open(run).unwrap().records.len(), keep, "the refused writer changed the run");
    }
    // Masking the damaged run works on its last good epoch.
    unleash_ok(&["mask", "--run", &s(&twice), "--ratios", "0.3", "--device", "cpu"].map(String::from));

    let damaged = std::fs::read(twice.join("events.jsonl")).unwrap();
    let out = unleash_ok(&["repair", "--run", &s(&twice)].map(String::from));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("epochs 1 to 2"), "{said}");
    let backups: Vec<PathBuf> = std::fs::read_dir(&twice).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.jsonl.damaged-")).collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read(&backups[0]).unwrap(), damaged, "the backup is not the original");
    let r = RunReader::open(&twice).unwrap();
    assert!(r.warnings.is_empty() && r.records == original[..2]);
    assert!(String::from_utf8_lossy(&unleash_ok(&["repair", "--run", &s(&twice)].map(String::from)).stdout).contains("nothing to repair"));
    // After the repair the run takes new epochs again, numbered on from the good prefix.
    unleash_ok(&["control", "--run", &s(&twice), "--epochs", "1", "--device", "cpu"].map(String::from));
    let r = RunReader::open(&twice).unwrap();
    assert_eq!(r.records.len(), 3);
    assert_eq!((r.records[2].epoch, r.records[2].phase), (3, Phase::Control));
}

#[test]
fn training_killed_at_epoch_2_of_3_and_resumed_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed");
    let mut child = spawn(&train_args(3, &out));
    wait_for_lines(&out, 2, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(RunReader::open(&out).unwrap().records.len(), 2, "the kill did not land inside epoch 3; the test proves nothing");
    // The same folder is refused as a new run, and resumed on request.
    let again = unleash(&train_args(3, &out).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    unleash_ok(&["train".into(), "--resume".into(), s(&out)]);
    assert_same_run(uninterrupted(), &out);
    // A complete run has nothing to resume.
    let done = unleash(&["train", "--resume", &s(&out)]);
    assert!(!done.status.success() && String::from_utf8_lossy(&done.stderr).contains("complete"));
}

#[test]
fn ctrl_c_stops_cleanly_prints_the_resume_command_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("interrupted");
    let mut child = spawn(&train_args(3, &out));
    wait_for_lines(&out, 1, &mut child);
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(err.contains(&format!("continue with: unleash train --resume {}", out.display())), "{err}");
    let kept = RunReader::open(&out).unwrap();
    assert!((1..3).contains(&kept.records.len()) && kept.warnings.is_empty());
    unleash_ok(&["train".into(), "--resume".into(), s(&out)]);
    assert_same_run(uninterrupted(), &out);
}

#[test]
fn a_second_ctrl_c_quits_at_once_and_the_run_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("quit");
    let mut child = spawn(&train_args(3, &out));
    wait_for_lines(&out, 1, &mut child);
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(20));
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    let r = RunReader::open(&out).unwrap();
    assert!(!r.records.is_empty() && r.warnings.is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn fixture_copy(dir: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-v1");
    let run = dir.join("run-v1");
    copy_dir(&fixture, &run);
    run
}

/// A run written by the first released format (no format_version field, no optimizer state) opens,
/// masks and exports with today's code; its metrics are there or marked absent, never an error.
#[test]
fn a_run_of_the_first_format_opens_masks_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixture_copy(dir.path());
    let r = RunReader::open(&run).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.config.format_version, 1);
    assert_eq!(r.records.len(), 2);
    for rec in &r.records {
        assert!(rec.test_acc > 0.1 && rec.test_acc <= 1.0, "epoch {}: test acc {}", rec.epoch, rec.test_acc);
        assert!(!rec.ood.is_empty() && !rec.ood_mean.is_empty());
    }
    let mask = unleash_ok(&["mask", "--run", &s(&run), "--ratios", "0.1,0.5", "--device", "cpu", "--json"].map(String::from));
    let m: serde_json::Value = serde_json::from_slice(&mask.stdout).unwrap();
    assert_eq!(m["epoch"], 2);
    assert_eq!(m["ratios"].as_array().unwrap().len(), 2);
    let out = dir.path().join("exp");
    std::fs::create_dir_all(&out).unwrap();
    unleash_ok(&["export", "--run", &s(&run), "--model", &s(&out.join("model")), "--report", &s(&out.join("report")), "--device", "cpu"].map(String::from));
    for f in ["model.bpk", "model.safetensors", "report.md", "report.json"] {
        assert!(out.join(f).metadata().unwrap().len() > 0, "{f} missing");
    }
    // It continues too: a fine-tune appends (lock and format checks included).
    unleash_ok(&["control", "--run", &s(&run), "--epochs", "1", "--device", "cpu"].map(String::from));
    assert_eq!(RunReader::open(&run).unwrap().records.len(), 3);
}

#[test]
fn a_run_of_a_newer_format_is_refused_by_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let run = fixture_copy(dir.path());
    let cfg_path = run.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["format_version"] = 99.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let e = RunReader::open(&run).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("format version 99"), "{e}");
    let out = unleash(&["export", "--run", &s(&run), "--report", &s(&dir.path().join("r"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("format version 99"), "{err}");
}

#[test]
fn a_new_run_records_its_format_version_and_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("r"), 1, 0);
    let r = RunReader::open(&run).unwrap();
    assert_eq!(r.config.format_version, unleash::run::FORMAT_VERSION);
    let optim = unleash::run::optimizer_path(&run, 1);
    let model = unleash::run::snapshot_path(&run, 1);
    let (o, m) = (optim.metadata().unwrap().len(), model.metadata().unwrap().len());
    // SGD momentum: one buffer per parameter, the size of the weights.
    assert!(o as f64 > 0.9 * m as f64 && (o as f64) < 1.2 * m as f64, "optimizer {o} B vs model {m} B");
}

fn worker_until_idle(w: &unleash::worker::WorkerHandle) -> Vec<String> {
    use unleash::events::Event;
    use unleash::worker::WorkerEvent;
    let mut errors = Vec::new();
    loop {
        match w.events.recv_timeout(Duration::from_secs(600)).expect("the worker went quiet") {
            WorkerEvent::Engine(Event::Error(e)) => errors.push(e),
            WorkerEvent::Engine(Event::Idle) => return errors,
            _ => {}
        }
    }
}

/// The app's side: opening a damaged run reports the damage (naming the line) and still opens;
/// the worker holds no lock while a run is merely open or between jobs; Resume continues an
/// interrupted base training to the uninterrupted run's numbers.
#[test]
fn the_app_worker_warns_of_damage_resumes_exactly_and_locks_only_while_writing() {
    use unleash::worker::{spawn, Command as Job};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("app");
    copy_dir(uninterrupted(), &run);
    // Epochs 1-2 as a kill after epoch 2 leaves them, then a damaged line.
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    let two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(run.join("events.jsonl"), format!("{two}garbage\n")).unwrap();
    let w = spawn(|_| {});
    w.send(Job::OpenRun(run.clone()));
    let errors = worker_until_idle(&w);
    assert!(errors.iter().any(|e| e.contains("events.jsonl") && e.contains("line 3 ")), "{errors:?}");
    // The run is open in the app, and a terminal can still write it.
    unleash_ok(&["repair", "--run", &s(&run)].map(String::from));
    w.send(Job::Resume(run.clone()));
    let errors = worker_until_idle(&w);
    assert!(errors.is_empty(), "{errors:?}");
    assert_same_run(uninterrupted(), &run);
    // Between jobs the worker holds no lock.
    unleash_ok(&["control", "--run", &s(&run), "--epochs", "1", "--device", "cpu"].map(String::from));
    // ...and a job after that sees the run changed under it rather than numbering epochs twice.
    w.send(Job::Finetune { kind: unleash::train::Finetune::Control, gamma: 0.0, epochs: 1, lr: 0.05, prune_ratio: 0.2, from_epoch: None });
    let errors = worker_until_idle(&w);
    assert!(errors.iter().any(|e| e.contains("changed by another job")), "{errors:?}");
    assert_eq!(RunReader::open(&run).unwrap().records.len(), 4);
}
