//! Every provider's stream translator: the first byte picks the provider and JSON mode, the
//! second where the stream is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_dataplane::provider::fuzzing::{PROVIDERS, stream};

fuzz_target!(|data: &[u8]| {
    let [pick, split, rest @ ..] = data else {
        return;
    };
    let provider = PROVIDERS[usize::from(*pick) % PROVIDERS.len()];
    stream(provider, pick & 0x80 != 0, usize::from(*split), rest);
});
