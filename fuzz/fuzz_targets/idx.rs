//! IDX reader (raw and gzip): any bytes give an array or an error, never a panic, and a parsed
//! array always holds exactly the bytes its header claims.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = unleash::data::idx::parse_idx(Path::new("fuzz.idx"), data) {
        assert!((1..=4).contains(&a.dims.len()));
        assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
    }
});
