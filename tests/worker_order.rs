//! Commands arriving in any order have defined outcomes: jobs run one at a time in arrival order;
//! a slider's burst of mask requests queued behind a job collapses into its latest; Stop and
//! Pause with nothing running are no-ops; a panic inside a job is reported and the worker goes on.

mod common;
use std::time::Duration;
use unleash::events::Event;
use unleash::unleash::MaskKind;
use unleash::worker::{spawn, Command, WorkerEvent};

fn next(rx: &crossbeam_channel::Receiver<WorkerEvent>) -> WorkerEvent {
    rx.recv_timeout(Duration::from_secs(300)).expect("the worker went quiet")
}

#[test]
fn queued_commands_run_in_order_and_mask_requests_coalesce() {
    let dir = tempfile::tempdir().unwrap();
    let w = spawn(|| {});
    // Stop and pause with nothing running: no effect on what comes next.
    w.control.request_stop();
    w.control.set_paused(true);
    w.control.set_paused(false);
    w.send(Command::Train { config: common::small_experiment(1, 0), out: dir.path().join("one") });
    for r in [0.1, 0.2, 0.3] {
        w.send(Command::Mask { ratio: r, kind: MaskKind::Magnitude, epoch: None });
    }
    w.send(Command::Crash);
    w.send(Command::Train { config: common::small_experiment(1, 1), out: dir.path().join("two") });
    let mut log = Vec::new();
    let mut idle = 0;
    while idle < 4 {
        match next(&w.events) {
            WorkerEvent::Engine(Event::EpochDone { record, .. }) => log.push(format!("epoch {}", record.epoch)),
            WorkerEvent::Engine(Event::MaskResult(m)) => log.push(format!("mask {}", m.ratio)),
            WorkerEvent::Engine(Event::MaskTestAccuracy { ratio, .. }) => log.push(format!("test acc {ratio}")),
            WorkerEvent::Engine(Event::Error(e)) => log.push(if e.contains("crash requested") { "panic reported".into() } else { format!("error {e}") }),
            WorkerEvent::Engine(Event::Idle) => idle += 1,
            _ => {}
        }
    }
    // The masked test-accuracy pass is skipped: a newer command (Crash) was already waiting.
    assert_eq!(log, vec!["epoch 1", "mask 0.3", "panic reported", "epoch 1"]);
    assert!(dir.path().join("two/events.jsonl").exists());
}

#[test]
fn a_lone_mask_request_reports_gamma_first_then_the_masked_test_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let w = spawn(|| {});
    w.send(Command::Train { config: common::small_experiment(1, 0), out: dir.path().join("run") });
    while !matches!(next(&w.events), WorkerEvent::Engine(Event::Idle)) {}
    w.send(Command::Mask { ratio: 0.5, kind: MaskKind::Magnitude, epoch: None });
    let mut seen = Vec::new();
    loop {
        match next(&w.events) {
            WorkerEvent::Engine(Event::MaskResult(m)) => {
                assert_eq!(m.masked_test_acc, None, "gamma and the atypical set come before the test pass");
                seen.push(format!("mask {}", m.ratio));
            }
            WorkerEvent::Engine(Event::MaskTestAccuracy { ratio, accuracy, .. }) => {
                assert!((0.0..=1.0).contains(&accuracy));
                seen.push(format!("test acc {ratio}"));
            }
            WorkerEvent::Engine(Event::Idle) => break,
            WorkerEvent::Engine(Event::Error(e)) => panic!("{e}"),
            _ => {}
        }
    }
    assert_eq!(seen, vec!["mask 0.5", "test acc 0.5"]);
}
