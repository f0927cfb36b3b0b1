//! Chat streams translated back into the Messages and Responses APIs, split where the first
//! byte says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    modelgate_dataplane::api::fuzzing::answer_streams(usize::from(split), rest);
});
