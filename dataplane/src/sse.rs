//! Server-sent events, read: splits a byte stream into the payloads of its `data:` lines across
//! chunk boundaries (`\n` or `\r\n` endings), with a cap on one line.

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
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..newline]);
            let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
            if let Some(data) = line.strip_prefix(b"data:") {
                on_data(data.trim_ascii());
            }
            self.partial.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

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
