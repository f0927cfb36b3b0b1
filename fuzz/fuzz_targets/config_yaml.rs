//! The standalone loader: a YAML file of manifests compiled into a config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = |_: &str| Some("value".to_owned());
    let _ = modelgate_crds::load_config(data, &env, jiff::Timestamp::UNIX_EPOCH);
});
