#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| novamon_fuzz_targets::web_config(data));
