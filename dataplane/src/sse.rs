//! Server-sent events, read. `DataLines` splits a byte stream into the payloads of its `data:`
//! lines (enough for OpenAI's streams, where every event is one line); `Events` is the whole
//! WHATWG algorithm (CR, LF or CRLF line ends, comments, `event:` names, multi-line `data:`
//! joined with `\n`, dispatch on the blank line) for providers whose events are named. Both
//! work across chunk boundaries and cap what one line or event may hold.

/// A line grew past the cap before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

pub struct DataLines {
    partial: Vec<u8>,
    max_line: usize,
}

impl DataLines {
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Calls `on_data` with the trimmed payload of each `data:` line that `bytes` completes.
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        let mut rest = bytes;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            // A line wholly inside this chunk is read where it lies; only a line that began in
            // an earlier chunk is joined first.
            if self.partial.is_empty() {
                data_of(&rest[..newline], &mut on_data);
            } else {
                self.partial.extend_from_slice(&rest[..newline]);
                data_of(&self.partial, &mut on_data);
                self.partial.clear();
            }
            rest = &rest[newline + 1..];
        }
        if self.partial.len() + rest.len() > self.max_line {
            self.partial = Vec::new();
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }
}

/// Calls `on_data` with the trimmed payload of `line` when it is a `data:` line.
fn data_of(line: &[u8], on_data: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(data) = line.strip_prefix(b"data:") {
        on_data(data.trim_ascii());
    }
}

/// One complete SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, when the event has one.
    pub name: Option<&'a str>,
    /// The `data:` lines joined with `\n`.
    pub data: &'a [u8],
}

/// A full SSE event decoder.
pub struct Events {
    line: Vec<u8>,
    name: String,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in CR: a LF starting the next one belongs to that line end.
    after_cr: bool,
    /// Something was read already (a byte-order mark can only come first).
    started: bool,
    max_event: usize,
}

impl Events {
    pub fn new(max_event: usize) -> Self {
        Self {
            line: Vec::new(),
            name: String::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            started: false,
            max_event,
        }
    }

    /// Calls `on_event` for each event that `bytes` completes; the callback's error stops the
    /// decoding and is returned.
    pub fn push<E>(
        &mut self,
        bytes: &[u8],
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), EventError<E>> {
        let mut rest = bytes;
        if rest.is_empty() {
            return Ok(());
        }
        if !self.started {
            // A stream may open with a byte-order mark, which is not part of its first line
            // (partly split across chunks it is left to the line: an upstream that sends
            // byte-sized chunks of a BOM is not worth the state).
            self.started = true;
            rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
        }
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
            if rest[end] == b'\r' && end + 1 == rest.len() {
                self.after_cr = true;
            }
            rest = &rest[end + if crlf { 2 } else { 1 }..];
            let line = std::mem::take(&mut self.line);
            self.line_complete(&line, &mut on_event)?;
            self.line = line;
            self.line.clear();
            if self.data.len() + self.name.len() > self.max_event {
                return Err(EventError::TooLong);
            }
        }
        if self.line.len() + rest.len() + self.data.len() > self.max_event {
            return Err(EventError::TooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// The stream ended: an event that was not closed by a blank line is dispatched anyway (some
    /// providers end on EOF right after their last `data:` line).
    pub fn finish<E>(
        &mut self,
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), EventError<E>> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_complete(&line, &mut on_event)?;
        }
        self.dispatch(&mut on_event)
    }

    fn line_complete<E>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), EventError<E>> {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.name = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
        Ok(())
    }

    fn dispatch<E>(
        &mut self,
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), EventError<E>> {
        let result = if self.has_data {
            on_event(Event {
                name: (!self.name.is_empty()).then_some(self.name.as_str()),
                data: &self.data,
            })
            .map_err(EventError::Handler)
        } else {
            Ok(())
        };
        self.name.clear();
        self.data.clear();
        self.has_data = false;
        result
    }
}

/// Why `Events` stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum EventError<E> {
    /// An event grew past the cap.
    TooLong,
    /// The callback failed.
    Handler(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(stream: &[u8], split: usize) -> Vec<(Option<String>, String)> {
        let mut events = Events::new(1024);
        let mut seen = Vec::new();
        let mut record = |e: Event<'_>| {
            seen.push((
                e.name.map(str::to_owned),
                String::from_utf8(e.data.to_vec()).unwrap(),
            ));
            Ok::<(), ()>(())
        };
        for part in [&stream[..split], &stream[split..]] {
            events.push(part, &mut record).unwrap();
        }
        events.finish(&mut record).unwrap();
        seen
    }

    #[test]
    fn events_survive_any_split_with_every_line_ending() {
        let stream = b": keep-alive\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\n\
            data: line one\rdata: line two\r\revent: ping\nid: 7\ndata:\n\ndata: {\"tail\":true}";
        let expected = vec![
            (Some("message_start".to_owned()), "{\"a\":1}".to_owned()),
            (None, "line one\nline two".to_owned()),
            (Some("ping".to_owned()), String::new()),
            (None, "{\"tail\":true}".to_owned()),
        ];
        for split in 0..stream.len() {
            assert_eq!(decode_split(stream, split), expected, "split at {split}");
        }
    }

    #[test]
    fn an_empty_read_between_cr_and_lf_and_a_byte_order_mark_change_nothing() {
        let mut events = Events::new(1024);
        let mut seen = Vec::new();
        let mut record = |e: Event<'_>| {
            seen.push(String::from_utf8(e.data.to_vec()).unwrap());
            Ok::<(), ()>(())
        };
        for part in [&b"\xEF\xBB\xBFdata: a\r"[..], b"", b"\ndata: b\r\n\r\n"] {
            events.push(part, &mut record).unwrap();
        }
        assert_eq!(seen, vec!["a\nb".to_owned()], "one event of two data lines");
    }

    #[test]
    fn an_event_past_the_cap_is_refused() {
        let mut events = Events::new(16);
        let result = events.push(
            b"data: 0123456789\ndata: 0123456789\n",
            |_| Ok::<(), ()>(()),
        );
        assert_eq!(result, Err(EventError::TooLong));
    }

    #[test]
    fn payloads_survive_any_split_and_both_line_endings() {
        let stream = b": comment\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:[DONE]\n\n";
        for split in 0..stream.len() {
            let mut lines = DataLines::new(1024);
            let mut seen: Vec<Vec<u8>> = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                lines.push(part, |d| seen.push(d.to_vec())).unwrap();
            }
            assert_eq!(
                seen,
                vec![b"{\"a\":1}".to_vec(), b"[DONE]".to_vec()],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_line_past_the_cap_is_refused() {
        let mut lines = DataLines::new(8);
        assert_eq!(lines.push(b"data: 0123456789", |_| {}), Err(LineTooLong));
        assert_eq!(
            lines.push(b"data: 1\n", |_| {}),
            Ok(()),
            "the buffer starts over"
        );
    }
}
