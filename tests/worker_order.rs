//! Commands arriving in any order have defined outcomes: jobs run one at a time in arrival order;
//! a slider's burst of mask requests queued behind a job collapses into its latest; Stop and
//! Pause with nothing running are no-ops; a panic inside a job is reported and the worker goes on;
//! reads of score arrays do not wait behind a job.

mod common;
use std::time::Duration;
use unleash::events::Event;
use unleash::unleash::MaskKind;
use unleash::worker::{spawn, Command, MaskRequest, ScoresRequest, WorkerEvent};

fn next(rx: &crossbeam_channel::Receiver<WorkerEvent>) -> WorkerEvent {
    rx.recv_timeout(Duration::from_secs(300)).expect("the worker went quiet")
}

#[test]
fn queued_commands_run_in_order_and_mask_requests_coalesce() {
    let dir = tempfile::tempdir().unwrap();
    let w = spawn(|_| {});
    // Stop and pause with nothing running: no effect on what comes next.
    w.control.request_stop();
    w.control.set_paused(true);
    w.control.set_paused(false);
    w.send(Command::Train { config: common::small_experiment(1, 0), out: dir.path().join("one") });
    for (id, r) in [0.1, 0.2, 0.3].into_iter().enumerate() {
        w.send(Command::Mask(MaskRequest { id: id as u64, ratio: r, kind: MaskKind::Magnitude, epoch: None, score: unleash::ood::Score::Energy }));
    }
    w.send(Command::Crash);
    w.send(Command::Train { config: common::small_experiment(1, 1), out: dir.path().join("two") });
    let mut log = Vec::new();
    let mut idle = 0;
    while idle < 4 {
        match next(&w.events) {
            WorkerEvent::Engine(Event::EpochDone { record, .. }) => log.push(format!("epoch {}", record.epoch)),
            WorkerEvent::MaskAnswer { request, answer } => log.push(format!("{} {} (request {request})", if answer.preview.is_some() { "preview" } else { "mask" }, answer.ratio)),
            WorkerEvent::MaskDetection { request, .. } => log.push(format!("detection (request {request})")),
            WorkerEvent::MaskCutShort { request } => log.push(format!("cut short (request {request})")),
            WorkerEvent::Engine(Event::Error(e)) => log.push(if e.contains("crash requested") { "panic reported".into() } else { format!("error {e}") }),
            WorkerEvent::Engine(Event::Idle) => idle += 1,
            _ => {}
        }
    }
    // Only the latest mask request runs; it stops after its preview because a newer command
    // (Crash) was already waiting.
    // It says so, so that the app can ask again after the newer command.
    assert_eq!(log, vec!["epoch 1", "preview 0.3 (request 2)", "cut short (request 2)", "panic reported", "epoch 1"]);
    assert!(dir.path().join("two/events.jsonl").exists());
}

#[test]
fn a_lone_mask_request_reports_a_preview_then_gamma_then_its_score_then_the_whole_detection() {
    let dir = tempfile::tempdir().unwrap();
    let w = spawn(|_| {});
    w.send(Command::Train { config: common::small_experiment(1, 0), out: dir.path().join("run") });
    while !matches!(next(&w.events), WorkerEvent::Engine(Event::Idle)) {}
    w.send(Command::Mask(MaskRequest { id: 7, ratio: 0.5, kind: MaskKind::Magnitude, epoch: None, score: unleash::ood::Score::Knn }));
    let mut seen = Vec::new();
    let mut full_gamma = None;
    loop {
        match next(&w.events) {
            WorkerEvent::MaskAnswer { request, answer } => {
                assert_eq!(request, 7);
                match answer.preview {
                    Some(p) => {
                        // The preview has every figure, on its subsets.
                        assert_eq!(answer.samples.iter().filter(|a| a.index >= 600).count(), 0, "indices are training-set indices");
                        assert!(answer.masked_detection.is_some() && answer.full_detection.is_some());
                        assert_eq!(p.train, 1000);
                        seen.push("preview");
                    }
                    None => {
                        assert_eq!(answer.masked_test_acc, None, "gamma and the atypical set come before the detection pass");
                        assert!(answer.full_detection.is_some(), "the unmasked reference comes with gamma");
                        full_gamma = Some(answer.gamma);
                        seen.push("gamma");
                    }
                }
            }
            WorkerEvent::MaskDetection { request, detection } => {
                assert_eq!(request, 7);
                assert!((0.0..=1.0).contains(&detection.test_acc));
                // Every test OOD set and the validation set: first the score asked for (KNN) alone,
                // the rest pending; then every score.
                assert_eq!(detection.ood.len(), 2);
                let first = detection.pending.contains(&unleash::ood::Score::Energy);
                let expected = if first { 1 } else { unleash::ood::Score::ALL.len() - 1 };
                for m in detection.ood.values().chain([&detection.val]) {
                    // Every score but the opt-in ODIN, the detectors fitted on the masked model.
                    assert_eq!(m.len(), expected);
                    assert!(m.contains_key(&unleash::ood::Score::Knn));
                    assert!(!m.contains_key(&unleash::ood::Score::Odin) && detection.problems.is_empty());
                    assert!(m.values().all(|x| (0.0..=1.0).contains(&x.auroc) && (0.0..=1.0).contains(&x.fpr95)));
                }
                seen.push(if first { "knn first" } else { "detection" });
            }
            WorkerEvent::Engine(Event::Idle) => break,
            WorkerEvent::Engine(Event::Error(e)) => panic!("{e}"),
            _ => {}
        }
    }
    assert_eq!(seen, vec!["preview", "gamma", "knn first", "detection"]);
    // The same mask through the CLI gives the same gamma.
    let out = common::unleash(&["mask", "--run", dir.path().join("run").to_str().unwrap(), "--ratios", "0.5", "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ratios"][0]["gamma"].as_f64(), full_gamma);
}

#[test]
fn a_finished_base_phase_starts_the_sweep_and_caches_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let w = spawn(|_| {});
    w.send(Command::Train { config: common::small_experiment(1, 0), out: run.clone() });
    let complete = loop {
        match next(&w.events) {
            WorkerEvent::Sweep { epoch, points, complete: true, .. } => {
                assert_eq!(epoch, 1);
                break points;
            }
            WorkerEvent::Engine(Event::Error(e)) => panic!("{e}"),
            _ => {}
        }
    };
    assert_eq!(complete.len(), unleash::worker::DEFAULT_SWEEP_POINTS);
    assert!(complete.windows(2).all(|p| p[0].ratio < p[1].ratio));
    assert!(complete.iter().all(|p| p.gamma.is_finite() && (0.0..=1.0).contains(&p.masked_test_acc) && (0.0..=1.0).contains(&p.masked_ood_auroc)));
    // Masking more of the weights never lowers gamma much: the last ratio (0.95) is far above the first.
    assert!(complete.last().unwrap().gamma > complete[0].gamma);
    let cache = unleash::worker::sweep_cache_path(&run, 1, MaskKind::Magnitude);
    assert!(cache.exists());
    drop(w);
    // Reopening the run answers from the cache, at once.
    let w = spawn(|_| {});
    w.send(Command::OpenRun(run));
    let again = loop {
        match next(&w.events) {
            WorkerEvent::Sweep { points, complete: true, .. } => break points,
            WorkerEvent::Engine(Event::Evaluating { set, .. }) if set.starts_with("sweep") => panic!("the cached sweep was computed again"),
            WorkerEvent::Engine(Event::Error(e)) => panic!("{e}"),
            _ => {}
        }
    };
    assert_eq!(format!("{again:?}"), format!("{complete:?}"));
}

/// The compare view's reads are answered while a job runs (they do not queue behind it), with
/// what `RunReader::scores` reads; a file that is not there is named.
#[test]
fn score_reads_are_answered_while_a_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("done"), 1, 0);
    let w = spawn(|_| {});
    w.send(Command::Train { config: common::small_experiment(2, 1), out: dir.path().join("busy") });
    while !matches!(next(&w.events), WorkerEvent::Engine(Event::Batch(_))) {}
    let asked = ScoresRequest { run: run.clone(), epoch: 1, set: "id_test".into() };
    let absent = ScoresRequest { epoch: 9, ..asked.clone() };
    assert!(w.read_scores(asked.clone()) && w.read_scores(absent.clone()));
    let mut answers = Vec::new();
    while answers.len() < 2 {
        match next(&w.events) {
            WorkerEvent::Scores { request, scores } => answers.push((request, scores)),
            WorkerEvent::Engine(Event::Idle) => panic!("the reads waited for the training to end"),
            _ => {}
        }
    }
    assert_eq!(answers[0].0, asked);
    let expected = unleash::run::RunReader::open(&run).unwrap().scores(1, "id_test").unwrap();
    assert_eq!(answers[0].1.as_deref().unwrap(), &expected);
    assert_eq!(answers[1].0, absent);
    let e = answers[1].1.as_ref().unwrap_err();
    assert!(e.contains("0009") && e.contains("id_test"), "{e}");
}
