#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| novamon_fuzz_targets::scrape_body(data));
