//! The mask explorer reads the unmasked model's figures from the run's records (issue: nothing
//! computed twice): the answers equal a probe that computes them, the first answer makes no pass
//! of the unmasked model, and runs written before per_sample_correct.npy still answer the same.

mod common;

use common::train_run;
use std::sync::Arc;
use unleash::config::DeviceChoice;
use unleash::ood::Score;
use unleash::train::Session;
use unleash::unleash::probe::PreviewSets;
use unleash::unleash::{AtypicalSet, Detection, MaskKind, MaskProbe};

/// Samples the probe's passes went through: the `done` of each pass's last progress call, summed.
struct PassCounter {
    samples: usize,
    last: Option<(usize, usize)>,
}

impl PassCounter {
    fn new() -> PassCounter {
        PassCounter { samples: 0, last: None }
    }

    fn see(&mut self, done: usize, total: usize) {
        // A pass ends where the next one starts again from a smaller `done` (or another total).
        if let Some((d, t)) = self.last {
            if done <= d || total != t {
                self.samples += d;
            }
        }
        self.last = Some((done, total));
    }

    fn total(&self) -> usize {
        self.samples + self.last.map_or(0, |(d, _)| d)
    }
}

fn answer(probe: &mut MaskProbe, s: &Session, ratio: f64) -> (AtypicalSet, usize) {
    let mut counter = PassCounter::new();
    let set = probe.answer(ratio, MaskKind::Magnitude, 0, &s.sets, &mut |d, t| {
        counter.see(d, t);
        Ok(())
    });
    (set.unwrap(), counter.total())
}

/// Equal answers; on a difference, says where (the whole sets print thousands of lines).
fn same(a: &AtypicalSet, b: &AtypicalSet) {
    assert_eq!((a.ratio, a.epoch, a.gamma, a.full_train_loss, a.full_test_acc, a.masked_test_acc, a.masked_train_acc), (b.ratio, b.epoch, b.gamma, b.full_train_loss, b.full_test_acc, b.masked_test_acc, b.masked_train_acc));
    assert!(a.samples == b.samples, "atypical samples differ");
    assert!(a.masked_losses == b.masked_losses, "masked losses differ");
    assert!(a.masked_detection == b.masked_detection, "masked detection differs");
    assert!(a.full_detection.is_some() && a.full_detection == b.full_detection, "unmasked detection differs or is missing: {:?} vs {:?}", a.full_detection.as_ref().map(|d| d.ood_mean.len()), b.full_detection.as_ref().map(|d| d.ood_mean.len()));
    assert!(a == b);
}

fn preview(s: &Session) -> Arc<PreviewSets> {
    Arc::new(PreviewSets::new(&s.sets, Default::default()))
}

#[test]
fn a_snapshots_first_answer_reads_the_unmasked_figures_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("run"), 2, 5);
    assert!(run.join("per_sample_correct.npy").exists());
    let s = Session::resume(&run, Some(DeviceChoice::Cpu), Some(2)).unwrap();
    let (full, recorded) = s.recorded_unmasked(2).expect("epoch 2 has its correctness row");
    assert_eq!(full.correct.len(), s.sets.train.len());

    // A probe that computes the unmasked figures, as before the records had them.
    let mut computing = MaskProbe::new(s.inference_model(), 2, s.eval_context(), s.config.detectors.clone(), preview(&s));
    let (computed_first, computing_first_cost) = answer(&mut computing, &s, 0.4);
    let (_, computing_second_cost) = answer(&mut computing, &s, 0.5);
    assert!(computing_first_cost > computing_second_cost, "the computing probe's first answer pays for the unmasked passes");

    let mut reading = s.mask_probe(s.inference_model(), 2, preview(&s));
    let (read_first, reading_first_cost) = answer(&mut reading, &s, 0.4);
    let (_, reading_second_cost) = answer(&mut reading, &s, 0.5);
    // Same numbers: the epoch's evaluation is the unmasked model's detection, bit for bit.
    same(&read_first, &computed_first);
    assert!(read_first.full_detection.as_ref() == Some(&recorded));
    assert!(!read_first.samples.is_empty(), "ratio 0.4 reveals atypical samples on this run");
    // Nothing computed twice: the first answer costs what the second does, the masked passes only.
    assert_eq!(reading_first_cost, reading_second_cost);
    assert_eq!(reading_first_cost, computing_second_cost);
}

#[test]
fn a_run_without_correctness_rows_computes_them_and_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("run"), 1, 6);
    let s = Session::resume(&run, Some(DeviceChoice::Cpu), None).unwrap();
    let (with_records, _) = answer(&mut s.mask_probe(s.inference_model(), 1, preview(&s)), &s, 0.3);
    std::fs::remove_file(run.join("per_sample_correct.npy")).unwrap();
    let old = Session::resume(&run, Some(DeviceChoice::Cpu), None).unwrap();
    assert!(old.recorded_unmasked(1).is_none(), "a run from before per_sample_correct.npy has no recorded pass");
    let mut probe = old.mask_probe(old.inference_model(), 1, preview(&old));
    // gamma alone: the unmasked training and test passes, no detection.
    let gamma_only = probe.gamma(0.3, MaskKind::Magnitude, 0, &old.sets, &mut |_, _| Ok(())).unwrap();
    assert_eq!(gamma_only.full_detection, None);
    assert_eq!((gamma_only.gamma, &gamma_only.samples), (with_records.gamma, &with_records.samples));
    let (answered, _) = answer(&mut probe, &old, 0.3);
    same(&answered, &with_records);
    // The run continues: the new epoch's row is recorded, the old one's marked unknown.
    let mut old = old;
    let control = unleash::train::PhaseSpec { phase: unleash::run::Phase::Control, epochs: 1, lr: 0.01, objective: unleash::train::Objective::CrossEntropy, umap_ratio: None, from_epoch: Some(1) };
    old.run_phase(&control, &unleash::events::Control::new(), &mut |_| {}).unwrap();
    let (_, rows) = unleash::run::RunReader::open(&run).unwrap().correct_matrix().unwrap().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].iter().all(|&c| c == unleash::run::CORRECT_UNKNOWN));
    assert!(rows[1].iter().all(|&c| c <= 1) && rows[1].iter().any(|&c| c == 1));
    assert!(old.recorded_unmasked(1).is_none() && old.recorded_unmasked(2).is_some());
}

#[test]
fn detection_in_order_hands_over_the_score_on_screen_first_and_computes_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_run(&dir.path().join("run"), 1, 7);
    let s = Session::resume(&run, Some(DeviceChoice::Cpu), None).unwrap();
    let mut probe = s.mask_probe(s.inference_model(), 1, preview(&s));
    let masked = probe.masked(0.3, MaskKind::Magnitude, 0).unwrap();
    let whole = probe.detection(&masked, &s.sets, &mut |_, _| Ok(())).unwrap();
    let mut early: Vec<Detection> = Vec::new();
    let ordered = probe
        .detection_in_order(&masked, &s.sets, Some(Score::Knn), &mut |_, _| Ok(()), &mut |d| {
            early.push(d);
            Ok(())
        })
        .unwrap();
    assert_eq!(ordered, whole, "in order or not, the complete detection is the same");
    let [first] = &early[..] else { panic!("one early part, got {}", early.len()) };
    assert_eq!(first.ood_mean.keys().copied().collect::<Vec<_>>(), vec![Score::Knn]);
    assert_eq!(first.ood_mean[&Score::Knn], whole.ood_mean[&Score::Knn]);
    assert_eq!(first.val[&Score::Knn], whole.val[&Score::Knn]);
    assert!(first.pending.contains(&Score::Energy) && !first.pending.contains(&Score::Knn) && !first.pending.contains(&Score::Odin));
    assert!(whole.pending.is_empty());
}
