//! Masking secret values in a step's output before it leaves the worker: every byte of an
//! occurrence of a value the step was given from a secret becomes part of one [`MARK`].
//! Streams are masked as they come: a value split across reads, or printed one byte at a
//! time, is still found, because the last `longest value - 1` bytes are held back until
//! the next read (or the end of the stream) shows whether they start a value.
//! Overlapping occurrences of different values are masked as their union.
//!
//! The one exception to byte-exact logs (README: secrets). It must not decide which values
//! are secret (the server says so per attempt) nor see anything but one stream's bytes.

/// What replaces each masked run.
pub(crate) const MARK: &[u8] = b"***";

/// One output stream's masker.
#[derive(Debug)]
pub(crate) struct Masker {
    values: Vec<Vec<u8>>,
    /// Bytes held back: they may start a value the next read completes.
    pending: Vec<u8>,
    /// Bytes ahead (from the start of `pending`) that a value found earlier still covers.
    covered: usize,
    /// The last byte emitted was masked (a run continues without a second mark).
    in_mark: bool,
}

impl Masker {
    /// A masker of `values` (empty ones ignored).
    pub(crate) fn new<I: IntoIterator<Item = Vec<u8>>>(values: I) -> Self {
        let mut values: Vec<Vec<u8>> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort();
        values.dedup();
        Self { values, pending: Vec::new(), covered: 0, in_mark: false }
    }

    /// Whether it masks nothing (output then passes through untouched and unheld).
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn hold(&self) -> usize {
        self.values.iter().map(Vec::len).max().unwrap_or(1) - 1
    }

    /// Masks `data`, appending what can be sent now to `out`.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.is_empty() {
            out.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let hold = self.hold();
        if self.pending.len() > hold {
            self.emit(self.pending.len() - hold, out);
        }
    }

    /// The end of the stream: sends what was held back.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        let n = self.pending.len();
        self.emit(n, out);
    }

    /// Emits the first `upto` pending bytes. Every occurrence starting before `upto` is
    /// complete within `pending` (at most `hold` bytes follow it), so each emitted byte is
    /// known to be covered or not.
    fn emit(&mut self, upto: usize, out: &mut Vec<u8>) {
        for i in 0..upto {
            let rest = &self.pending[i..];
            if let Some(len) = self.values.iter().filter(|v| rest.starts_with(v)).map(Vec::len).max() {
                self.covered = self.covered.max(len);
            }
            if self.covered > 0 {
                self.covered -= 1;
                if !self.in_mark {
                    out.extend_from_slice(MARK);
                    self.in_mark = true;
                }
            } else {
                out.push(self.pending[i]);
                self.in_mark = false;
            }
        }
        self.pending.drain(..upto);
    }
}

/// Whether `text` holds one of `values` (for `$ROTA_OUTPUT`).
pub(crate) fn contains_any(text: &str, values: &[Vec<u8>]) -> bool {
    values.iter().any(|v| !v.is_empty() && text.as_bytes().windows(v.len()).any(|w| w == v.as_slice()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(values: &[&str], chunks: &[&[u8]]) -> String {
        let mut m = Masker::new(values.iter().map(|v| v.as_bytes().to_vec()));
        let mut out = Vec::new();
        for c in chunks {
            m.push(c, &mut out);
        }
        m.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_value_in_one_chunk_is_masked() {
        assert_eq!(run(&["s3cret-value"], &[b"token=s3cret-value\n"]), "token=***\n");
        assert_eq!(run(&["s3cret-value"], &[b"twice s3cret-values3cret-value!"]), "twice ***!");
        assert_eq!(run(&[], &[b"nothing to mask"]), "nothing to mask");
    }

    #[test]
    fn a_value_split_across_chunks_is_masked() {
        assert_eq!(run(&["s3cret-value"], &[b"a s3cr", b"et-va", b"lue b"]), "a *** b");
        assert_eq!(run(&["s3cret-value"], &[b"s3cret-valu", b"E"]), "s3cret-valuE", "no match, all sent");
    }

    #[test]
    fn a_value_printed_one_byte_at_a_time_is_masked() {
        let text = b"<s3cret-value>\n";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(run(&["s3cret-value"], &chunks), "<***>\n");
    }

    #[test]
    fn overlapping_and_nested_values_are_masked_as_their_union() {
        assert_eq!(run(&["abcdef", "defghi"], &[b"x abcdefghi y"]), "x *** y");
        assert_eq!(run(&["abcdef", "bcd"], &[b"abcdef bcd"]), "*** ***");
        let chunks: Vec<&[u8]> = b"1abcdefghi2".chunks(1).collect();
        assert_eq!(run(&["defghi", "abcdef"], &chunks), "1***2");
    }

    #[test]
    fn held_back_bytes_are_sent_at_the_end() {
        let mut m = Masker::new([b"s3cret-value".to_vec()]);
        let mut out = Vec::new();
        m.push(b"abc", &mut out);
        assert!(out.is_empty(), "a prefix of a value could follow");
        m.finish(&mut out);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn outputs_holding_a_value_are_found() {
        let v = vec![b"s3cret-value".to_vec()];
        assert!(contains_any("x-s3cret-value-y", &v));
        assert!(!contains_any("x-s3cret-valu", &v));
    }
}
