//! What every plot of the app shares: tick spacing that labels the data's own range, and hover
//! text that names the x value and each line's value there.

use egui_plot::{GridInput, GridMark, HoverPosition};

/// The least distance between two labelled ticks of a y axis, in points: egui_plot fades labels
/// out below 30 and drops them below 20, so 30 keeps every label at full strength.
const LABEL_SPACING: f64 = 30.0;

/// The same for an x axis, where egui_plot wants 60 to 80 points (labels are wide).
const X_LABEL_SPACING: f64 = 80.0;

/// egui_plot's `base_step_size` is the data span of its least grid spacing (8 points by default).
const BASE_SPACING: f64 = 8.0;

/// Grid marks at 1, 2 or 5 times a power of ten, the smallest such step whose labels stay
/// `LABEL_SPACING` apart, with unlabelled minor lines a fifth of it apart. egui_plot's default
/// steps by powers of ten, so that a range of 0.84 to 0.99 gets labels only at 0.9 and 1.0.
pub fn nice_grid(input: GridInput) -> Vec<GridMark> {
    grid(input, LABEL_SPACING)
}

/// [`nice_grid`] for an x axis.
pub fn nice_grid_x(input: GridInput) -> Vec<GridMark> {
    grid(input, X_LABEL_SPACING)
}

fn grid(input: GridInput, spacing: f64) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    if !(lo.is_finite() && hi.is_finite() && hi > lo) || input.base_step_size <= 0.0 {
        return Vec::new();
    }
    let least = input.base_step_size / BASE_SPACING * spacing;
    let step = nice_step(least);
    let minor = step / 5.0;
    let first = (lo / minor).ceil() as i64;
    let last = (hi / minor).floor() as i64;
    // Too many minor lines means a degenerate transform: the labelled ones suffice.
    if last - first > 2000 {
        return Vec::new();
    }
    (first..=last)
        .map(|k| {
            let labelled = k.rem_euclid(5) == 0;
            GridMark { value: k as f64 * minor, step_size: if labelled { step } else { minor } }
        })
        .collect()
}

/// A tick's label with the decimals its step needs (0.85 at a step of 0.05: egui_plot's own
/// formatter gives such steps one decimal, labelling 0.85 and 0.8 both "0.8").
pub fn tick_label(mark: GridMark, _range: &std::ops::RangeInclusive<f64>) -> String {
    let decimals = (-mark.step_size.log10().floor()).clamp(0.0, 10.0) as usize;
    let text = format!("{:.*}", decimals, mark.value);
    // No "-0" for a value rounding to zero.
    if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') { text.trim_start_matches('-').to_string() } else { text }
}

/// The least of 1, 2 and 5 times a power of ten that is at least `least`.
pub fn nice_step(least: f64) -> f64 {
    let decade = 10f64.powf(least.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * decade).find(|s| *s >= least * (1.0 - 1e-9)).unwrap_or(10.0 * decade)
}

/// A plot's lines as the hover text reads them: each line's name and points.
pub type HoverLines = Vec<(String, Vec<[f64; 2]>)>;

/// The hover text of a plot over x values of `x_name` (an epoch, a mask ratio): the x nearest the
/// pointer that a line has a point at (the hovered point's own, when the pointer is on one), then
/// each line's value there. `x_shown` turns a plot x into the value shown (a log axis's ratio).
pub fn hover_text(lines: &HoverLines, pos: &HoverPosition, x_name: &str, x_shown: impl Fn(f64) -> f64) -> Option<String> {
    let pointer_x = match pos {
        HoverPosition::NearDataPoint { position, .. } | HoverPosition::Elsewhere { position } => position.x,
    };
    let x = lines.iter().flat_map(|(_, pts)| pts.iter().map(|p| p[0])).filter(|x| x.is_finite()).min_by(|a, b| (a - pointer_x).abs().total_cmp(&(b - pointer_x).abs()))?;
    let mut text = format!("{x_name} {}", trim(x_shown(x)));
    for (name, points) in lines {
        if let Some(p) = points.iter().find(|p| p[0] == x && p[1].is_finite()) {
            text.push_str(&format!("\n{name}: {:.4}", p[1]));
        }
    }
    Some(text)
}

/// A number with at most four decimals and no trailing zeros (an epoch as "5", a ratio as "0.02").
fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_plot::PlotPoint;

    /// The labelled marks (those at the largest step) of `nice_grid` over `bounds` on a plot
    /// `height` points tall.
    fn labelled(bounds: (f64, f64), height: f64) -> Vec<f64> {
        let base_step_size = (bounds.1 - bounds.0) / height * BASE_SPACING;
        let marks = nice_grid(GridInput { bounds, base_step_size });
        let step = marks.iter().map(|m| m.step_size).fold(0.0, f64::max);
        marks.iter().filter(|m| m.step_size == step).map(|m| (m.value * 1e6).round() / 1e6).collect()
    }

    #[test]
    fn an_auroc_range_early_in_a_run_gets_labels_inside_it() {
        // 0.83 to 0.99 on a 250-point plot: a label at 0.84, all at least 30 points apart
        // (egui_plot's default labels only 0.9 and 1.0 here).
        let marks = labelled((0.83, 0.99), 250.0);
        assert_eq!(marks, [0.84, 0.86, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98]);
        let px = |d: f64| d / (0.99 - 0.83) * 250.0;
        assert!(marks.windows(2).all(|w| px(w[1] - w[0]) >= LABEL_SPACING), "{marks:?}");
        // A tall range keeps labels apart too: no more than the height allows.
        let wide = labelled((0.0, 1000.0), 200.0);
        assert!(wide.len() <= 7 && wide.len() >= 3, "{wide:?}");
        // An x axis 300 points wide from 0 to 1 (the ROC's FPR): labels 80 points apart or more.
        let x = nice_grid_x(GridInput { bounds: (0.0, 1.0), base_step_size: 1.0 / 300.0 * BASE_SPACING });
        let step = x.iter().map(|m| m.step_size).fold(0.0, f64::max);
        assert_eq!(step, 0.5);
    }

    #[test]
    fn tick_labels_carry_the_decimals_of_their_step() {
        let label = |value: f64, step_size: f64| tick_label(GridMark { value, step_size }, &(0.0..=1.0));
        assert_eq!([label(0.85, 0.05), label(0.8, 0.05), label(0.84, 0.02), label(0.9, 0.1), label(250.0, 50.0), label(-0.0, 0.2)], ["0.85", "0.80", "0.84", "0.9", "250", "0.0"]);
    }

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(0.013), 0.02);
        assert_eq!(nice_step(0.02), 0.02);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(6.0), 10.0);
        assert_eq!(nice_step(1.0), 1.0);
    }

    #[test]
    fn hover_names_the_x_and_each_lines_value_there() {
        let lines: HoverLines = vec![("train loss".into(), vec![[1.0, 0.5], [2.0, 0.25]]), ("ID test loss".into(), vec![[2.0, 0.75], [3.0, f64::NAN]])];
        let near = HoverPosition::Elsewhere { position: PlotPoint::new(2.3, 9.0) };
        assert_eq!(hover_text(&lines, &near, "epoch", |x| x).as_deref(), Some("epoch 2\ntrain loss: 0.2500\nID test loss: 0.7500"));
        let on = HoverPosition::NearDataPoint { plot_name: "train loss", position: PlotPoint::new(1.0, 0.5), index: 0 };
        assert_eq!(hover_text(&lines, &on, "epoch", |x| x).as_deref(), Some("epoch 1\ntrain loss: 0.5000"));
        // A log axis shows the ratio, not its log.
        let log: HoverLines = vec![("gamma".into(), vec![[0.01f64.log10(), 1.5]])];
        assert_eq!(hover_text(&log, &near, "mask ratio", |x| 10f64.powf(x)).as_deref(), Some("mask ratio 0.01\ngamma: 1.5000"));
        assert_eq!(hover_text(&Vec::new(), &near, "epoch", |x| x), None);
    }
}
