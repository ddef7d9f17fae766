//! OOD scores and detection metrics.
pub mod detectors;
pub mod metrics;
pub mod scores;

pub use detectors::{DetectorConfig, Detectors, Embedded, Head};
pub use metrics::Metrics;
pub use scores::Score;

/// The q-quantile of `values`, linearly interpolated between the two nearest ranks (numpy's
/// default method); None when `values` is empty or q is outside [0, 1]. One pass of selection, not
/// a sort.
pub fn quantile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut low, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let high = if frac > 0.0 { above.iter().copied().fold(f64::INFINITY, f64::min) } else { low };
    Some(low + (high - low) * frac)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantile_interpolates_as_numpy() {
        // np.quantile([1, 2, 3, 4], q): 0.9 -> 3.7, 0.5 -> 2.5, 1 -> 4, 0 -> 1.
        let v = vec![4.0, 1.0, 3.0, 2.0];
        assert!((super::quantile(v.clone(), 0.9).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(super::quantile(v.clone(), 0.5), Some(2.5));
        assert_eq!(super::quantile(v.clone(), 1.0), Some(4.0));
        assert_eq!(super::quantile(v.clone(), 0.0), Some(1.0));
        assert_eq!(super::quantile(vec![5.0], 0.9), Some(5.0));
        assert_eq!(super::quantile(Vec::new(), 0.5), None);
        assert_eq!(super::quantile(v, 1.5), None);
    }
}
