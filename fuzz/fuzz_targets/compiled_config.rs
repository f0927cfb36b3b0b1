//! A compiled config as the operator publishes it (JSON), loaded the way a data plane loads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = |_: &str| None;
    let _ = modelgate_crds::load_config(data, &env, jiff::Timestamp::UNIX_EPOCH);
});
