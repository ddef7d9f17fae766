//! Run-folder reader: a folder whose config.json, events.jsonl, per_sample_loss.npy,
//! per_sample_correct.npy and one score array hold arbitrary bytes opens with an error or reads
//! back, never panics. The input is split at 0xFF bytes into those five files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use unleash::run::{self, RunReader};

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("unleash-fuzz-run-{}", std::process::id()));
        std::fs::create_dir_all(run::epoch_dir(&dir, 1)).expect("fuzz scratch folder");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    let mut parts = data.split(|&b| b == 0xFF);
    let mut file = |path: PathBuf| std::fs::write(path, parts.next().unwrap_or_default()).expect("scratch write");
    file(dir.join("config.json"));
    file(dir.join("events.jsonl"));
    file(dir.join("per_sample_loss.npy"));
    file(run::scores_path(dir, 1, "fuzz"));
    file(dir.join("per_sample_correct.npy"));
    if let Ok(reader) = RunReader::open(dir) {
        if let Ok(Some((_, rows))) = reader.loss_matrix() {
            assert!(rows.len() <= reader.records.len());
        }
        if let Ok(Some((_, rows))) = reader.correct_matrix() {
            assert!(rows.len() <= reader.records.len());
        }
        let _ = reader.scores(1, "fuzz");
        let _ = reader.best_epoch(unleash::ood::Score::Energy, None);
        let _ = reader.last_epoch();
    }
});
