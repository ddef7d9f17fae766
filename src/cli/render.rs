//! Renders engine events in a terminal: a progress bar (epoch, batch, samples/s, ETA) and one
//! table row per epoch. Also the metric tables of `eval`, `mask` and `metrics`.

use crate::events::Event;
use crate::ood::{Metrics, Score};
use crate::run::{EpochRecord, ScoreMetrics};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;

pub struct Renderer {
    bar: ProgressBar,
    header_printed: bool,
    /// Test OOD set names, in table order (from the first record).
    ood_names: Vec<String>,
    quiet: bool,
}

impl Renderer {
    pub fn new(quiet: bool) -> Renderer {
        // Without a terminal (pipes, CI) the bar is hidden and lines go straight to stderr.
        let quiet = quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = ProgressBar::with_draw_target(Some(0), if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
        bar.set_style(
            ProgressStyle::with_template("{prefix:>14} [{bar:28}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        Renderer { bar, header_printed: false, ood_names: Vec::new(), quiet }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            eprintln!("{s}");
        } else {
            self.bar.println(s);
        }
    }

    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::Info(s) => self.line(s),
            Event::PhaseStarted { phase, first_epoch, epochs, samples, .. } => self.line(&format!(
                "== {} phase: epochs {}..{} on {samples} training samples",
                phase.name(),
                first_epoch,
                first_epoch + epochs - 1
            )),
            Event::Batch(b) => {
                self.bar.set_prefix(format!("{} {}/{}", b.phase.name(), b.phase_epoch, b.phase_epochs));
                self.bar.set_length(b.batches as u64);
                self.bar.set_position(b.batch as u64);
                self.bar.set_message(format!(
                    "loss {:.4} | {:.0} samples/s | ETA {}",
                    b.loss,
                    b.samples_per_sec,
                    format_secs(b.eta_secs)
                ));
            }
            Event::Evaluating { set, done, total, .. } => {
                self.bar.set_prefix("evaluating");
                self.bar.set_length(*total as u64);
                self.bar.set_position(*done as u64);
                self.bar.set_message(set.clone());
            }
            Event::EpochDone { record, .. } => {
                if !self.header_printed {
                    self.ood_names = record.ood.keys().cloned().collect();
                    self.line(&epoch_header(&self.ood_names, &record.val_name));
                    self.header_printed = true;
                }
                self.line(&epoch_row(record, &self.ood_names));
            }
            Event::PhaseDone { .. } | Event::Idle => self.bar.set_message(""),
            Event::Exported(paths) => {
                for p in paths {
                    self.line(&format!("wrote {}", p.display()));
                }
            }
            Event::Error(e) => self.line(&format!("error: {e}")),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// This process's peak resident memory (VmHWM) in MiB, where the OS reports it (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}
pub use crate::events::format_secs;

fn epoch_header(ood: &[String], val: &str) -> String {
    let mut h = format!(
        "{:>5} {:>10} {:>8} {:>7} {:>7} {:>9} | {:>23} {:>8} |",
        "epoch", "phase", "loss", "acc", "ID-test", format!("val:{}", short(val, 5)), "TEST mean AUROC M/ML/E", "FPR95-E"
    );
    for n in ood {
        h.push_str(&format!(" {:>9}", short(n, 9)));
    }
    h.push_str("   (val: validation OOD, selects; TEST: reported only; per-set columns: Energy AUROC)");
    h
}

fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn get(m: &ScoreMetrics, s: Score) -> Metrics {
    m.get(&s).copied().unwrap_or(Metrics { auroc: f64::NAN, fpr95: f64::NAN, aupr_in: f64::NAN, aupr_out: f64::NAN })
}

fn epoch_row(r: &EpochRecord, ood: &[String]) -> String {
    let mean = &r.ood_mean;
    let mut row = format!(
        "{:>5} {:>10} {:>8.4} {:>7.4} {:>7.4} {:>9.4} | {:>7.4} {:>7.4} {:>7.4} {:>8.4} |",
        r.epoch,
        r.phase.name(),
        r.train_loss,
        r.train_acc,
        r.test_acc,
        get(&r.val, Score::Energy).auroc,
        get(mean, Score::Msp).auroc,
        get(mean, Score::MaxLogit).auroc,
        get(mean, Score::Energy).auroc,
        get(mean, Score::Energy).fpr95,
    );
    for n in ood {
        let a = r.ood.get(n).map_or(f64::NAN, |m| get(m, Score::Energy).auroc);
        row.push_str(&format!(" {a:>9.4}"));
    }
    row
}

/// A full metric table: per set, per score, AUROC / FPR95 / AUPR-In / AUPR-Out (x100).
pub fn metrics_table(rows: &BTreeMap<String, ScoreMetrics>, mean: Option<&ScoreMetrics>) -> String {
    let mut s = format!(
        "{:<22} {:<12} {:>7} {:>7} {:>8} {:>8}\n",
        "OOD set", "score", "AUROC", "FPR95", "AUPR-In", "AUPR-Out"
    );
    let mut push = |name: &str, m: &ScoreMetrics| {
        for (score, v) in m {
            s.push_str(&format!(
                "{:<22} {:<12} {:>7.2} {:>7.2} {:>8.2} {:>8.2}\n",
                name,
                score.name(),
                v.auroc * 100.0,
                v.fpr95 * 100.0,
                v.aupr_in * 100.0,
                v.aupr_out * 100.0
            ));
        }
    };
    for (name, m) in rows {
        push(name, m);
    }
    if let Some(m) = mean {
        push("mean (test OOD)", m);
    }
    s.push_str("(x100; ID is the positive class; FPR95 = OOD accepted at 95% ID recall)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mib = peak_rss_mib().expect("VmHWM in /proc/self/status");
            assert!(mib > 1.0 && mib < 1e6, "{mib}");
        }
    }
}
