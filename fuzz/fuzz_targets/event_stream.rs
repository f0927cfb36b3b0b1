//! Bedrock's binary event-stream decoder, fed in two chunks split where the first byte says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    modelgate_dataplane::provider::fuzzing::event_stream(usize::from(split), rest);
});
