//! Checkpoint import (`unleash import`): arbitrary bytes as a PyTorch `.pt` (zip or legacy
//! pickle) and as `.safetensors` load into a SmallCNN or fail with an error, never panic, hang
//! or allocate from an unchecked size. Seed the corpus with tests/fixtures/import/*.pt.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use unleash::config::ModelKind;
use unleash::data::ImageShape;
use unleash::import::{load_checkpoint, ImportSpec, KeyMap};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("unleash-fuzz-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch folder");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let shape = ImageShape { channels: 1, height: 4, width: 4 };
    let device = unleash::device::cpu().device;
    for name in ["model.pt", "model.safetensors"] {
        let path = scratch().join(name);
        std::fs::write(&path, data).expect("scratch write");
        let spec = ImportSpec { model: path, key_map: KeyMap::OpenOod };
        if let Err(e) = load_checkpoint(ModelKind::SmallCnn, shape, 10, &spec, &device) {
            assert!(e.to_string().contains(name), "the error names the file: {e}");
        }
    }
});
