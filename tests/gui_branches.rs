#![cfg(feature = "gui")]
//! Fine-tunes in the app, driven through egui_kittest: each fine-tune is a branch of its own in
//! the training tab's legend, named by its start snapshot; one cut short is marked incomplete
//! there and in the compare view's stage menu; the loss histogram at a fine-tune's epoch names
//! that phase's own gamma. First on a run's events as the worker sends them (fast, exact), then
//! on a UM fine-tune really stopped after its first epoch.

mod common;
use common::step_until;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use std::collections::BTreeMap;
use std::sync::Arc;
use unleash::app::state::AppState;
use unleash::app::UnleashApp;
use unleash::config::{DataConfig, ExperimentConfig};
use unleash::events::Event;
use unleash::ood::{Metrics, Score};
use unleash::run::{EpochRecord, Phase};
use unleash::worker::WorkerEvent;

fn harness() -> Harness<'static, UnleashApp> {
    common::app_harness([1600.0, 1000.0])
}

/// Epoch `epoch` of `phase`, from snapshot `from_epoch`, with gamma `gamma`.
fn epoch(epoch: usize, phase: Phase, phase_epoch: usize, from_epoch: usize, gamma: Option<f64>) -> EpochRecord {
    let v = epoch as f64 / 100.0;
    let m = Metrics { auroc: 0.5 + v, fpr95: 0.9 - v, aupr_in: 0.5, aupr_out: 0.5 };
    let metrics: BTreeMap<Score, Metrics> = [(Score::Energy, m)].into();
    EpochRecord {
        epoch,
        phase,
        phase_epoch,
        from_epoch,
        gamma,
        lr_end: 0.01,
        train_loss: 1.0 - v,
        train_acc: 0.5 + v,
        train_eval_loss: 1.0 - v,
        test_loss: 1.2 - v,
        test_acc: 0.5 + v,
        val_name: "uniform".into(),
        val_id_name: "id_val".into(),
        val: metrics.clone(),
        ood: [("gaussian".to_string(), metrics.clone())].into(),
        ood_mean: metrics,
        seconds: 1.0,
        samples_per_sec: 1.0,
        detector_problems: Vec::new(),
        imported_from: None,
    }
}

fn engine(st: &mut AppState, e: Event) {
    st.apply(WorkerEvent::Engine(e));
}

fn done(st: &mut AppState, r: EpochRecord) {
    engine(st, Event::EpochDone { record: Box::new(r), per_sample_loss: Arc::new(vec![0.1, 0.4, 0.9, 2.0]) });
}

#[test]
fn fine_tunes_are_branches_and_the_one_cut_short_is_marked_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness();
    h.step();
    // As the worker tells it: a run read from disk (base 1-5, UM 6-8 and CE control 9-11, both
    // from epoch 5), then UM again from 5, asked for 3 epochs and stopped after its first.
    {
        let st = &mut h.state_mut().state;
        let mut records: Vec<EpochRecord> = (1..=5).map(|e| epoch(e, Phase::Base, e, 0, None)).collect();
        records.extend((1..=3).map(|k| epoch(5 + k, Phase::Um, k, 5, Some(0.1))));
        records.extend((1..=3).map(|k| epoch(8 + k, Phase::Control, k, 5, None)));
        let loss_rows = (0..records.len()).map(|_| Arc::new(vec![0.1f32, 0.4, 0.9, 2.0])).collect();
        let config = Box::new(ExperimentConfig { data: DataConfig::sample(), train: Default::default(), detectors: Default::default() });
        st.apply(WorkerEvent::RunLoaded { dir: dir.path().to_path_buf(), records, loss_rows, config });
        engine(st, Event::PhaseStarted { phase: Phase::Um, first_epoch: 12, epochs: 3, batches: 1, samples: 4 });
        done(st, epoch(12, Phase::Um, 1, 5, Some(0.2)));
    }
    h.step();
    h.step();
    // Each fine-tune has its own legend entry, named by its start snapshot; while the last runs,
    // it is not incomplete.
    for name in ["UM (gamma 0.100) from epoch 5", "CE control from epoch 5", "UM (gamma 0.200) from epoch 5"] {
        h.get_by_label(name);
    }
    engine(&mut h.state_mut().state, Event::PhaseDone { phase: Phase::Um, stopped: true });
    engine(&mut h.state_mut().state, Event::Idle);
    h.step();
    h.step();
    h.get_by_label("UM (gamma 0.200) from epoch 5, incomplete: 1 of 3 epochs");
    h.get_by_label("UM (gamma 0.100) from epoch 5");

    // The loss histogram at a UM epoch names that phase's gamma; at a control epoch, none.
    h.get_by_label("Per-sample loss").click();
    h.state_mut().losses.epoch = 7;
    h.step();
    h.step();
    h.get_by_label_contains("UM phase epoch 2 from epoch 5; mean loss 0.9300; gamma 0.1000 (this phase's own)");
    // The histogram's legend names the line it draws.
    h.get_by_label("gamma = 0.1000 (this phase's own)");
    h.state_mut().losses.epoch = 10;
    h.step();
    h.get_by_label_contains("CE control phase epoch 2 from epoch 5; mean loss 0.9000; no gamma");
    assert!(h.query_by_label_contains("gamma = ").is_none(), "a gamma line at a CE control epoch");

    // The compare view's stage menu marks the UM stage, whose fine-tune was cut short.
    h.get_by_label("Compare stages").click();
    h.state_mut().compare.stages = ["CE control".into(), "UM".into()];
    h.step();
    h.step();
    h.get_by_value("UM (epoch 12, incomplete: 1 of 3 epochs)");
    // The menu itself: every stage, the UM one marked.
    h.get_by_value("CE control (epoch 11)").click();
    h.step();
    h.step();
    for entry in ["best epoch (epoch 5)", "final (epoch 5)", "CE control (epoch 11)", "UM (epoch 12, incomplete: 1 of 3 epochs)"] {
        h.get_by_label(entry);
    }
}

#[test]
fn a_um_fine_tune_stopped_after_its_first_epoch_is_marked_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::train_run(&dir.path().join("run"), 1, 0);
    let mut h = harness();
    common::open_until_the_complete_answer(&mut h, &run);
    h.state_mut().mask.ft_epochs = 20;
    h.get_by_label("Mask ratio & UM").click();
    h.step();
    h.get_by_label("Fine-tune with UM").click_accesskit();
    h.step();
    step_until(&mut h, "UM's first epoch", 300, |a| a.state.records.len() >= 2);
    h.state_mut().stop();
    step_until(&mut h, "the stop", 300, |a| !a.state.is_busy());
    assert!(h.state().state.last_error.is_none(), "{:?}", h.state().state.last_error);
    let records = h.state().state.records.clone();
    let um = records.last().unwrap();
    assert!(um.phase == Phase::Um && um.phase_epoch < 20, "the stop came too late: {:?} epoch {}", um.phase, um.phase_epoch);
    h.get_by_label("Training").click();
    h.step();
    h.step();
    h.get_by_label(&format!("UM (gamma {:.3}) from epoch 1, incomplete: {} of 20 epochs", um.gamma.unwrap(), um.phase_epoch));
    // A run opened again does not say how many epochs were asked: no mark, rather than a guess.
    h.state_mut().open_run(run.clone());
    step_until(&mut h, "the run again", 120, |a| !a.state.is_busy() && a.state.messages.iter().filter(|(_, m)| m.starts_with("opened run")).count() == 2);
    h.step();
    h.get_by_label(&format!("UM (gamma {:.3}) from epoch 1", um.gamma.unwrap()));
}
