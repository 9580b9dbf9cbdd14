#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| omnistream_fuzz_targets::touchpoint_avro(data));
