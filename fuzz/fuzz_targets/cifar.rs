//! CIFAR-10 binary batch reader: any bytes give records or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok((pixels, labels)) = unleash::data::cifar::parse(Path::new("fuzz.bin"), data) {
        assert!(!labels.is_empty());
        assert_eq!(pixels.len(), labels.len() * 3 * 32 * 32);
        assert!(labels.iter().all(|&l| l < 10));
    }
});
