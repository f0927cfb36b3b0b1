//! The SSE decoders (data lines, and whole events with names and multi-line data), fed in two
//! chunks split where the first byte says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_dataplane::sse::{DataLines, Events};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let mut lines = DataLines::new(4096);
    let mut events = Events::new(4096);
    for chunk in [&rest[..split], &rest[split..]] {
        let _ = lines.push(chunk, |_| {});
        let _ = events.push(chunk, |_| Ok::<(), ()>(()));
    }
    let _ = events.finish(|_| Ok::<(), ()>(()));
});
