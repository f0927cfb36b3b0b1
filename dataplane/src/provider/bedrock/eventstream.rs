//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the binary frames Bedrock
//! streams in. Each message is a prelude (total length, headers length, CRC32 of those 8 bytes),
//! typed headers, a payload and a CRC32 of everything before it; integers are big-endian. The
//! decoder works across chunk boundaries, checks both CRCs before anything is read, and refuses
//! a message longer than its cap as soon as the prelude announces it.

use std::fmt;

/// Prelude: total length, headers length, prelude CRC.
const PRELUDE_BYTES: usize = 12;
/// The CRC32 closing every message.
const TRAILER_BYTES: usize = 4;

/// One decoded message, borrowed from the decoder's buffer (or the chunk it came in).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The header block, already checked to be well formed.
    headers: &'a [u8],
    pub payload: &'a [u8],
}

/// A header value (the protocol's ten types; Bedrock sends only strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Bytes(&'a [u8]),
    String(&'a str),
    Timestamp(i64),
    Uuid(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<HeaderValue<'a>> {
        Headers(self.headers)
            .filter_map(Result::ok)
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }

    /// The value of header `name` when it is a string.
    pub fn string(&self, name: &str) -> Option<&'a str> {
        match self.header(name)? {
            HeaderValue::String(value) => Some(value),
            _ => None,
        }
    }
}

/// Why a byte stream is not valid event-stream framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A message announced more bytes than the cap.
    TooLarge(usize),
    /// The lengths in a prelude contradict each other.
    Length,
    /// The prelude CRC does not match.
    PreludeCrc,
    /// The message CRC does not match.
    MessageCrc,
    /// A header is cut off, of an unknown type, or not UTF-8 where it must be.
    Header,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(len) => write!(f, "an event-stream message of {len} bytes is too large"),
            Self::Length => f.write_str("an event-stream prelude has inconsistent lengths"),
            Self::PreludeCrc => f.write_str("an event-stream prelude failed its CRC check"),
            Self::MessageCrc => f.write_str("an event-stream message failed its CRC check"),
            Self::Header => f.write_str("an event-stream message has a malformed header"),
        }
    }
}

/// Why `Decoder::push` stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError<E> {
    Frame(FrameError),
    /// The callback failed.
    Handler(E),
}

/// Reads messages out of a byte stream that arrives in arbitrary pieces.
pub struct Decoder {
    /// Bytes of a message not complete yet.
    partial: Vec<u8>,
    max_message: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_message,
        }
    }

    /// Calls `on_frame` for every message `bytes` completes; the callback's error stops the
    /// decoding and is returned.
    pub fn push<E>(
        &mut self,
        bytes: &[u8],
        mut on_frame: impl FnMut(Frame<'_>) -> Result<(), E>,
    ) -> Result<(), DecodeError<E>> {
        if self.partial.is_empty() {
            // The common case: whole messages in the chunk are read in place, without a copy.
            let used = frames(bytes, self.max_message, &mut on_frame)?;
            self.partial.extend_from_slice(&bytes[used..]);
            return Ok(());
        }
        self.partial.extend_from_slice(bytes);
        let buffered = std::mem::take(&mut self.partial);
        let result = frames(&buffered, self.max_message, &mut on_frame);
        self.partial = buffered;
        let used = result?;
        self.partial.drain(..used);
        Ok(())
    }
}

/// Hands every complete message at the start of `bytes` to `on_frame`; returns the bytes used.
fn frames<E>(
    bytes: &[u8],
    max_message: usize,
    on_frame: &mut impl FnMut(Frame<'_>) -> Result<(), E>,
) -> Result<usize, DecodeError<E>> {
    let mut used = 0;
    while let Some((frame, len)) = parse(&bytes[used..], max_message).map_err(DecodeError::Frame)? {
        on_frame(frame).map_err(DecodeError::Handler)?;
        used += len;
    }
    Ok(used)
}

/// The message at the start of `bytes` and its length, or `None` while it is incomplete. The
/// prelude is checked as soon as it is there, so a bad length never makes the decoder wait for
/// (or buffer) bytes that will not come.
pub fn parse(bytes: &[u8], max_message: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(prelude) = bytes.get(..PRELUDE_BYTES) else {
        return Ok(None);
    };
    let total = be_u32(&prelude[0..4]) as usize;
    let headers_len = be_u32(&prelude[4..8]) as usize;
    if crc32fast::hash(&prelude[..8]) != be_u32(&prelude[8..12]) {
        return Err(FrameError::PreludeCrc);
    }
    if total > max_message {
        return Err(FrameError::TooLarge(total));
    }
    if total < PRELUDE_BYTES + TRAILER_BYTES || headers_len > total - PRELUDE_BYTES - TRAILER_BYTES
    {
        return Err(FrameError::Length);
    }
    let Some(message) = bytes.get(..total) else {
        return Ok(None);
    };
    let (covered, crc) = message.split_at(total - TRAILER_BYTES);
    if crc32fast::hash(covered) != be_u32(crc) {
        return Err(FrameError::MessageCrc);
    }
    let headers = &covered[PRELUDE_BYTES..PRELUDE_BYTES + headers_len];
    if Headers(headers).any(|header| header.is_err()) {
        return Err(FrameError::Header);
    }
    let payload = &covered[PRELUDE_BYTES + headers_len..];
    Ok(Some((Frame { headers, payload }, total)))
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

/// Walks a header block: `name_len u8 | name | type u8 | value`.
struct Headers<'a>(&'a [u8]);

impl<'a> Headers<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            self.0 = &[];
            return Err(FrameError::Header);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn int<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn header(&mut self) -> Result<(&'a str, HeaderValue<'a>), FrameError> {
        let [name_len] = self.int::<1>()?;
        let name = std::str::from_utf8(self.take(usize::from(name_len))?)
            .map_err(|_| FrameError::Header)?;
        if name.is_empty() {
            return Err(FrameError::Header);
        }
        let [kind] = self.int::<1>()?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(self.int()?)),
            3 => HeaderValue::Int16(i16::from_be_bytes(self.int()?)),
            4 => HeaderValue::Int32(i32::from_be_bytes(self.int()?)),
            5 => HeaderValue::Int64(i64::from_be_bytes(self.int()?)),
            6 | 7 => {
                let len = u16::from_be_bytes(self.int()?);
                let bytes = self.take(usize::from(len))?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes)
                } else {
                    HeaderValue::String(std::str::from_utf8(bytes).map_err(|_| FrameError::Header)?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(self.int()?)),
            9 => HeaderValue::Uuid(self.take(16)?),
            _ => return Err(FrameError::Header),
        };
        Ok((name, value))
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a str, HeaderValue<'a>), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let header = self.header();
        if header.is_err() {
            // One malformed header makes the rest unreadable.
            self.0 = &[];
        }
        Some(header)
    }
}

/// One message with string headers, framed: what the tests and fixtures build streams from.
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(7);
        block.extend_from_slice(&(value.len() as u16).to_be_bytes());
        block.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE_BYTES + block.len() + payload.len() + TRAILER_BYTES;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bedrock.md §5: `contentBlockDelta` with text "Hello".
    const HELLO_FRAME: &str = "000000af00000057625a13790b3a6576656e742d74797065070011636f6e74656e74426c6f636b44656c74610d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b22636f6e74656e74426c6f636b496e646578223a302c2264656c7461223a7b2274657874223a2248656c6c6f227d2c2270223a226162636465666768696a6b6c6d6e6f7071227daafe5437";

    /// bedrock.md §5: the `throttlingException` frame.
    const THROTTLING_FRAME: &str = "000000b30000006108f0fc630f3a657863657074696f6e2d747970650700137468726f74746c696e67457863657074696f6e0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d74797065070009657863657074696f6e7b226d657373616765223a2022546f6f206d616e792072657175657374732c20706c656173652077616974206265666f726520747279696e6720616761696e2e227d6b650cc2";

    const MAX: usize = 1 << 20;

    /// Every message of `stream` fed in pieces of `size` bytes: (event or exception type,
    /// payload); `None` when the stream ends inside a message.
    fn decode(stream: &[u8], size: usize) -> Result<Option<Vec<(String, String)>>, FrameError> {
        let mut decoder = Decoder::new(MAX);
        let mut seen = Vec::new();
        for piece in stream.chunks(size.max(1)) {
            decoder
                .push(piece, |frame| {
                    let kind = frame
                        .string(":event-type")
                        .or_else(|| frame.string(":exception-type"))
                        .unwrap_or_default();
                    let payload = String::from_utf8(frame.payload.to_vec()).unwrap();
                    seen.push((kind.to_owned(), payload));
                    Ok::<_, ()>(())
                })
                .map_err(|e| match e {
                    DecodeError::Frame(e) => e,
                    DecodeError::Handler(()) => unreachable!(),
                })?;
        }
        Ok(decoder.partial.is_empty().then_some(seen))
    }

    #[test]
    fn decodes_the_spec_frames_byte_for_byte() {
        let hello = hex::decode(HELLO_FRAME).unwrap();
        assert_eq!(hello.len(), 175);
        let (frame, len) = parse(&hello, MAX).unwrap().unwrap();
        assert_eq!(len, 175);
        assert_eq!(
            frame.header(":event-type"),
            Some(HeaderValue::String("contentBlockDelta"))
        );
        assert_eq!(frame.string(":content-type"), Some("application/json"));
        assert_eq!(frame.string(":message-type"), Some("event"));
        assert_eq!(
            frame.payload,
            br#"{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefghijklmnopq"}"#
        );

        let throttling = hex::decode(THROTTLING_FRAME).unwrap();
        let (frame, len) = parse(&throttling, MAX).unwrap().unwrap();
        assert_eq!(len, 179);
        assert_eq!(frame.string(":message-type"), Some("exception"));
        assert_eq!(frame.string(":exception-type"), Some("throttlingException"));
        assert_eq!(
            frame.payload,
            br#"{"message": "Too many requests, please wait before trying again."}"#
        );
    }

    #[test]
    fn the_encoder_reproduces_the_spec_frames() {
        let hello = encode(
            &[
                (":event-type", "contentBlockDelta"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            br#"{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefghijklmnopq"}"#,
        );
        assert_eq!(hex::encode(hello), HELLO_FRAME);
        let throttling = encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message": "Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(hex::encode(throttling), THROTTLING_FRAME);
    }

    #[test]
    fn the_encoder_matches_the_spec_table_of_crcs() {
        // bedrock.md §5, "More frames": (event, payload, total, headers, prelude CRC, message CRC).
        let table = [
            (
                "messageStart",
                r#"{"role":"assistant","p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"}"#,
                170,
                82,
                0xdad06886_u32,
                0xccf719bd_u32,
            ),
            (
                "contentBlockStop",
                r#"{"contentBlockIndex":0,"p":"abcdefghijklmnopqrstuvwxyzABC"}"#,
                161,
                86,
                0xaa6d9d8e,
                0x007c9e2f,
            ),
            (
                "messageStop",
                r#"{"stopReason":"end_turn","p":"abcdefghijklmnopqrstuvwxyzABCDEF"}"#,
                161,
                81,
                0x3409082d,
                0xe6dfbee3,
            ),
            (
                "metadata",
                r#"{"usage":{"inputTokens":8,"outputTokens":2,"totalTokens":10},"metrics":{"latencyMs":312},"p":"abcdefghijklm"}"#,
                203,
                78,
                0x6a836a34,
                0x123e4389,
            ),
        ];
        for (event, payload, total, headers, prelude_crc, message_crc) in table {
            let frame = encode(
                &[
                    (":event-type", event),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                payload.as_bytes(),
            );
            assert_eq!(frame.len(), total, "{event}");
            assert_eq!(be_u32(&frame[4..8]), headers, "{event}");
            assert_eq!(be_u32(&frame[8..12]), prelude_crc, "{event}");
            assert_eq!(be_u32(&frame[total - 4..]), message_crc, "{event}");
        }
    }

    #[test]
    fn decodes_across_every_split_and_several_frames_per_read() {
        let mut stream = hex::decode(HELLO_FRAME).unwrap();
        stream.extend(hex::decode(THROTTLING_FRAME).unwrap());
        stream.extend(encode(&[(":event-type", "metadata")], b"{}"));
        let whole = decode(&stream, stream.len()).unwrap().unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].0, "throttlingException");
        assert_eq!(whole[2], ("metadata".to_owned(), "{}".to_owned()));
        for size in 1..stream.len() {
            assert_eq!(
                decode(&stream, size).unwrap().as_ref(),
                Some(&whole),
                "pieces of {size}"
            );
        }
    }

    #[test]
    fn reads_every_header_type() {
        let mut block = Vec::new();
        let mut header = |name: &str, kind: u8, value: &[u8]| {
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(kind);
            block.extend_from_slice(value);
        };
        header("t", 0, &[]);
        header("f", 1, &[]);
        header("b", 2, &[0xff]);
        header("s", 3, &(-2i16).to_be_bytes());
        header("i", 4, &7i32.to_be_bytes());
        header("l", 5, &(-9i64).to_be_bytes());
        header("y", 6, &[0, 2, 0xde, 0xad]);
        header("x", 7, &[0, 2, b'o', b'k']);
        header("ts", 8, &1_700_000_000_000i64.to_be_bytes());
        header("u", 9, &[7; 16]);
        let total = PRELUDE_BYTES + block.len() + TRAILER_BYTES;
        let mut message = Vec::new();
        message.extend_from_slice(&(total as u32).to_be_bytes());
        message.extend_from_slice(&(block.len() as u32).to_be_bytes());
        message.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());
        message.extend_from_slice(&block);
        message.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());

        let (frame, _) = parse(&message, MAX).unwrap().unwrap();
        assert_eq!(frame.header("t"), Some(HeaderValue::Bool(true)));
        assert_eq!(frame.header("f"), Some(HeaderValue::Bool(false)));
        assert_eq!(frame.header("b"), Some(HeaderValue::Byte(-1)));
        assert_eq!(frame.header("s"), Some(HeaderValue::Int16(-2)));
        assert_eq!(frame.header("i"), Some(HeaderValue::Int32(7)));
        assert_eq!(frame.header("l"), Some(HeaderValue::Int64(-9)));
        assert_eq!(frame.header("y"), Some(HeaderValue::Bytes(&[0xde, 0xad])));
        assert_eq!(frame.string("x"), Some("ok"));
        assert_eq!(
            frame.header("ts"),
            Some(HeaderValue::Timestamp(1_700_000_000_000))
        );
        assert_eq!(frame.header("u"), Some(HeaderValue::Uuid(&[7; 16])));
        assert_eq!(frame.string("i"), None, "not a string");
        assert!(frame.payload.is_empty());
    }

    #[test]
    fn refuses_corrupted_frames() {
        let good = hex::decode(HELLO_FRAME).unwrap();

        let mut payload = good.clone();
        payload[120] ^= 1;
        assert_eq!(decode(&payload, 7), Err(FrameError::MessageCrc));

        let mut prelude = good.clone();
        prelude[3] ^= 1;
        assert_eq!(decode(&prelude, 7), Err(FrameError::PreludeCrc));

        let mut crc = good.clone();
        let last = crc.len() - 1;
        crc[last] ^= 0x80;
        assert_eq!(decode(&crc, 7), Err(FrameError::MessageCrc));

        // Lengths that contradict each other, with a valid prelude CRC.
        let mut lengths = Vec::new();
        lengths.extend_from_slice(&20u32.to_be_bytes());
        lengths.extend_from_slice(&10u32.to_be_bytes());
        lengths.extend_from_slice(&crc32fast::hash(&lengths).to_be_bytes());
        assert_eq!(parse(&lengths, MAX).unwrap_err(), FrameError::Length);

        // A header of an unknown type, with both CRCs right.
        let mut block = vec![1, b'a', 42];
        block.extend_from_slice(b"rest");
        let bad_header = frame_with_raw_headers(&block);
        assert_eq!(parse(&bad_header, MAX).unwrap_err(), FrameError::Header);

        // A string header running past the block.
        let short = frame_with_raw_headers(&[1, b'a', 7, 0, 9, b'x']);
        assert_eq!(parse(&short, MAX).unwrap_err(), FrameError::Header);
    }

    fn frame_with_raw_headers(block: &[u8]) -> Vec<u8> {
        let total = PRELUDE_BYTES + block.len() + TRAILER_BYTES;
        let mut message = Vec::new();
        message.extend_from_slice(&(total as u32).to_be_bytes());
        message.extend_from_slice(&(block.len() as u32).to_be_bytes());
        message.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());
        message.extend_from_slice(block);
        message.extend_from_slice(&crc32fast::hash(&message).to_be_bytes());
        message
    }

    #[test]
    fn refuses_a_message_over_the_cap_from_its_prelude_alone() {
        let frame = hex::decode(HELLO_FRAME).unwrap();
        let mut decoder = Decoder::new(100);
        let result = decoder.push(&frame[..12], |_| Ok::<_, ()>(()));
        assert_eq!(result, Err(DecodeError::Frame(FrameError::TooLarge(175))));
    }

    #[test]
    fn a_message_is_not_read_before_its_last_byte() {
        let frame = hex::decode(HELLO_FRAME).unwrap();
        for end in [5, 12, 100, 174] {
            assert_eq!(decode(&frame[..end], 7), Ok(None), "{end} bytes");
        }
    }

    #[test]
    fn a_handler_error_stops_the_decoding() {
        let mut stream = hex::decode(HELLO_FRAME).unwrap();
        stream.extend(hex::decode(HELLO_FRAME).unwrap());
        let mut decoder = Decoder::new(MAX);
        let mut calls = 0;
        let result = decoder.push(&stream, |_| {
            calls += 1;
            Err("stop")
        });
        assert_eq!(result, Err(DecodeError::Handler("stop")));
        assert_eq!(calls, 1);
    }
}
