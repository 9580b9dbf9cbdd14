#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omnistream_fuzz_targets::rules_files(data));
