#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| novamon_fuzz_targets::dns_answer(data));
