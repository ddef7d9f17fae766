//! Property tests of the metrics: AUROC in [0, 1]; swapping ID and OOD with negated scores keeps
//! AUROC; strictly increasing transforms of the scores change nothing.

use proptest::prelude::*;
use unleash::ood::metrics;

fn scores() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-50i32..50).prop_map(|v| v as f32 / 4.0), 1..60)
}

proptest! {
    #[test]
    fn auroc_is_a_probability(id in scores(), ood in scores()) {
        let m = metrics::compute(&id, &ood).unwrap();
        prop_assert!((0.0..=1.0).contains(&m.auroc));
        prop_assert!((0.0..=1.0).contains(&m.fpr95));
        prop_assert!((0.0..=1.0).contains(&m.aupr_in));
        prop_assert!((0.0..=1.0).contains(&m.aupr_out));
    }

    #[test]
    fn swapping_sets_and_negating_keeps_auroc(id in scores(), ood in scores()) {
        let a = metrics::compute(&id, &ood).unwrap();
        let neg = |v: &[f32]| v.iter().map(|x| -x).collect::<Vec<_>>();
        let b = metrics::compute(&neg(&ood), &neg(&id)).unwrap();
        prop_assert!((a.auroc - b.auroc).abs() < 1e-12);
        // AUPR-Out of one is AUPR-In of the other.
        prop_assert!((a.aupr_out - b.aupr_in).abs() < 1e-12);
    }

    #[test]
    fn monotone_transforms_change_nothing(id in scores(), ood in scores()) {
        let a = metrics::compute(&id, &ood).unwrap();
        let f = |v: &[f32]| v.iter().map(|x| (x / 8.0).exp() * 3.0 + 1.0).collect::<Vec<_>>();
        let b = metrics::compute(&f(&id), &f(&ood)).unwrap();
        prop_assert_eq!(a, b);
    }
}
