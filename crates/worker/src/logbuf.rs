//! Per-attempt output buffers: raw bytes cut into chunks of at most 256 KiB with a `seq`
//! per (attempt, stream) from 0, bounded by each attempt's `log_cap` (the oldest unsent
//! bytes are dropped and counted, and the count goes with every batch so the server's cut
//! notice includes it). Plain data, no I/O and no locking: `logship.rs` owns
//! the lock and the sending. It never reorders a stream or reuses a `seq`.

use rota_api_types::Bytes64;
use rota_api_types::worker::{LogBatch, LogChunk, Stream};
use rota_domain::{AttemptId, JobId};
use std::collections::{HashMap, HashSet, VecDeque};

/// Largest chunk.
pub(crate) const CHUNK_MAX: usize = 256 * 1024;

#[derive(Debug, Default)]
struct StreamBuf {
    next_seq: u64,
    sealed: VecDeque<LogChunk>,
    sealed_bytes: usize,
    pending: Vec<u8>,
}

impl StreamBuf {
    fn unsent(&self) -> usize {
        self.sealed_bytes + self.pending.len()
    }

    /// Cuts pending bytes into chunks; with `all`, the last partial chunk too.
    fn seal(&mut self, stream: Stream, all: bool) {
        while self.pending.len() >= CHUNK_MAX || (all && !self.pending.is_empty()) {
            let n = self.pending.len().min(CHUNK_MAX);
            let rest = self.pending.split_off(n);
            let data = std::mem::replace(&mut self.pending, rest);
            self.sealed_bytes += data.len();
            self.sealed.push_back(LogChunk { stream, seq: self.next_seq, data: Bytes64(data) });
            self.next_seq += 1;
        }
    }

    /// Drops up to `excess` of the oldest unsent bytes; returns how many were dropped. Only
    /// what is needed: the head of a chunk is cut rather than the whole chunk, so exactly
    /// the cap is kept and the server receives at least its cap after the last drop (the
    /// tail it keeps is then contiguous). A cut chunk keeps its `seq`.
    fn drop_oldest(&mut self, excess: usize) -> usize {
        if let Some(front) = self.sealed.front_mut() {
            let len = front.data.0.len();
            if len <= excess {
                self.sealed.pop_front();
                self.sealed_bytes -= len;
                return len;
            }
            front.data.0.drain(..excess);
            self.sealed_bytes -= excess;
            return excess;
        }
        let n = excess.min(self.pending.len());
        self.pending.drain(..n);
        n
    }
}

#[derive(Debug)]
struct AttemptLog {
    job_id: JobId,
    step: String,
    cap: usize,
    streams: [StreamBuf; 2],
    dropped: u64,
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

impl AttemptLog {
    fn unsent(&self) -> usize {
        self.streams.iter().map(StreamBuf::unsent).sum()
    }

    fn enforce_cap(&mut self) {
        loop {
            let unsent = self.unsent();
            if unsent <= self.cap {
                return;
            }
            let i = if self.streams[0].unsent() >= self.streams[1].unsent() { 0 } else { 1 };
            let n = self.streams[i].drop_oldest(unsent - self.cap);
            if n == 0 {
                return;
            }
            self.dropped += n as u64;
        }
    }
}

/// Every open attempt's buffer, and the attempts whose output is refused.
#[derive(Debug, Default)]
pub(crate) struct LogBuffers {
    attempts: HashMap<AttemptId, AttemptLog>,
    /// Attempts whose logs the server refused (409): their output is discarded.
    rejected: HashSet<AttemptId>,
    total: usize,
}

impl LogBuffers {
    /// Runs `f` on one attempt's buffer, keeping `total` in step.
    fn with<R>(&mut self, id: AttemptId, f: impl FnOnce(&mut AttemptLog) -> R) -> Option<R> {
        let a = self.attempts.get_mut(&id)?;
        let before = a.unsent();
        let r = f(a);
        let after = a.unsent();
        self.total = self.total + after - before;
        Some(r)
    }
}

/// An attempt's output that was never shipped, taken when the attempt ends.
#[derive(Debug, Default)]
pub(crate) struct FinalLogs {
    /// Chunks in order per stream (stdout first).
    pub(crate) chunks: Vec<LogChunk>,
    /// Bytes dropped because of the log cap before they could be sent (in total).
    pub(crate) dropped: u64,
    /// True when the server refused this attempt's logs (it was superseded).
    pub(crate) rejected: bool,
    /// The attempt's job and step (`None` when nothing was buffered for it), to ship the
    /// chunks on their own.
    pub(crate) owner: Option<(JobId, String)>,
}

impl LogBuffers {
    /// Unsent bytes across attempts.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// True when an attempt holds at least `bound` unsent bytes, or half its cap (so it
    /// waits for the shipper before the cap would drop anything).
    pub(crate) fn is_full(&self, id: AttemptId, bound: usize) -> bool {
        self.attempts.get(&id).is_some_and(|a| a.unsent() >= bound.min(a.cap / 2))
    }

    /// Starts buffering for an attempt, keeping at most `cap` unsent bytes.
    pub(crate) fn open(&mut self, id: AttemptId, job_id: JobId, step: &str, cap: u64) {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX).max(CHUNK_MAX);
        let log = AttemptLog { job_id, step: step.to_string(), cap, streams: Default::default(), dropped: 0 };
        self.attempts.insert(id, log);
    }

    /// Buffers output of an attempt (ignored once it was finished or refused).
    pub(crate) fn push(&mut self, id: AttemptId, stream: Stream, data: &[u8]) {
        self.with(id, |a| {
            let s = &mut a.streams[index(stream)];
            s.pending.extend_from_slice(data);
            s.seal(stream, false);
            a.enforce_cap();
        });
    }

    /// Takes chunks for one request: up to `max_bytes` of data (at least one chunk).
    pub(crate) fn take_batch(&mut self, max_bytes: usize) -> Vec<LogBatch> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let ids: Vec<AttemptId> = self.attempts.keys().copied().collect();
        for id in ids {
            if bytes >= max_bytes {
                break;
            }
            let batch = self.with(id, |a| {
                let mut chunks = Vec::new();
                for stream in STREAMS {
                    let s = &mut a.streams[index(stream)];
                    s.seal(stream, true);
                    while bytes < max_bytes {
                        let Some(c) = s.sealed.pop_front() else { break };
                        s.sealed_bytes -= c.data.0.len();
                        bytes += c.data.0.len();
                        chunks.push(c);
                    }
                }
                LogBatch {
                    job_id: a.job_id,
                    step: a.step.clone(),
                    attempt_id: id,
                    chunks,
                    dropped_bytes: a.dropped,
                }
            });
            if let Some(batch) = batch.filter(|b| !b.chunks.is_empty()) {
                out.push(batch);
            }
        }
        out
    }

    /// Returns chunks of a failed request to the front of their buffers.
    pub(crate) fn put_back(&mut self, batches: Vec<LogBatch>) {
        for batch in batches {
            self.with(batch.attempt_id, |a| {
                for c in batch.chunks.into_iter().rev() {
                    let s = &mut a.streams[index(c.stream)];
                    s.sealed_bytes += c.data.0.len();
                    s.sealed.push_front(c);
                }
                a.enforce_cap();
            });
        }
    }

    /// The server refused an attempt's logs: drop its buffer and ignore further output.
    pub(crate) fn reject(&mut self, id: AttemptId) {
        if let Some(a) = self.attempts.remove(&id) {
            self.total -= a.unsent();
        }
        self.rejected.insert(id);
    }

    /// Ends an attempt's buffering and returns what was never shipped.
    pub(crate) fn take_final(&mut self, id: AttemptId) -> FinalLogs {
        let rejected = self.rejected.remove(&id);
        let Some(mut a) = self.attempts.remove(&id) else {
            return FinalLogs { rejected, ..FinalLogs::default() };
        };
        self.total -= a.unsent();
        let mut chunks = Vec::new();
        for stream in STREAMS {
            let s = &mut a.streams[index(stream)];
            s.seal(stream, true);
            chunks.extend(s.sealed.drain(..));
        }
        FinalLogs { chunks, dropped: a.dropped, rejected, owner: Some((a.job_id, a.step)) }
    }

    /// Forgets an attempt's output (its session is gone).
    pub(crate) fn discard(&mut self, id: AttemptId) {
        self.reject(id);
        self.rejected.remove(&id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn buffers() -> (LogBuffers, AttemptId) {
        let mut b = LogBuffers::default();
        let id = AttemptId(5);
        b.open(id, JobId::new(), "build", 1 << 20);
        (b, id)
    }

    fn bytes_of(chunks: &[LogChunk], stream: Stream) -> Vec<u8> {
        chunks.iter().filter(|c| c.stream == stream).flat_map(|c| c.data.0.clone()).collect()
    }

    #[test]
    fn chunks_are_bounded_sequenced_and_byte_exact() {
        let (mut b, id) = buffers();
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        b.push(id, Stream::Stdout, &big[..100]);
        b.push(id, Stream::Stdout, &big[100..]);
        b.push(id, Stream::Stderr, b"\xff\xfe no newline");
        let first = b.take_batch(300_000);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1]);
        assert!(first[0].chunks.iter().all(|c| c.data.0.len() <= CHUNK_MAX));
        // A failed send puts the chunks back in front, with the same seqs.
        b.put_back(first);
        let fin = b.take_final(id);
        assert_eq!(fin.dropped, 0);
        assert_eq!(bytes_of(&fin.chunks, Stream::Stdout), big);
        assert_eq!(bytes_of(&fin.chunks, Stream::Stderr), b"\xff\xfe no newline");
        let seqs: Vec<u64> =
            fin.chunks.iter().filter(|c| c.stream == Stream::Stdout).map(|c| c.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        assert_eq!(b.total(), 0);
    }

    #[test]
    fn sent_chunks_are_not_sent_again_and_seqs_continue() {
        let (mut b, id) = buffers();
        b.push(id, Stream::Stdout, b"one");
        let sent = b.take_batch(1 << 20);
        assert_eq!(sent[0].chunks[0].seq, 0);
        b.push(id, Stream::Stdout, b"two");
        let fin = b.take_final(id);
        assert_eq!(fin.chunks.len(), 1);
        assert_eq!((fin.chunks[0].seq, &fin.chunks[0].data.0[..]), (1, &b"two"[..]));
    }

    #[test]
    fn the_cap_keeps_the_newest_bytes_and_counts_the_rest() {
        let mut b = LogBuffers::default();
        let id = AttemptId(9);
        b.open(id, JobId::new(), "noisy", 300_000);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 256) as u8).collect();
        for piece in data.chunks(4096) {
            b.push(id, Stream::Stdout, piece);
        }
        assert!(b.total() <= 300_000);
        let fin = b.take_final(id);
        let kept = bytes_of(&fin.chunks, Stream::Stdout);
        assert_eq!(kept.len(), 300_000, "exactly the cap is kept");
        assert_eq!(kept.len() as u64 + fin.dropped, 1_000_000);
        assert_eq!(kept[..], data[data.len() - kept.len()..]);
    }

    #[test]
    fn full_means_the_bound_or_half_the_cap() {
        let mut b = LogBuffers::default();
        let (big, small) = (AttemptId(1), AttemptId(2));
        b.open(big, JobId::new(), "big", 64 << 20);
        b.open(small, JobId::new(), "small", 1 << 20);
        b.push(big, Stream::Stdout, &vec![b'x'; 600 << 10]);
        b.push(small, Stream::Stdout, &vec![b'x'; 600 << 10]);
        assert!(!b.is_full(big, 1 << 20));
        assert!(b.is_full(small, 1 << 20), "half of a 1 MiB cap");
        b.push(big, Stream::Stderr, &vec![b'y'; 500 << 10]);
        assert!(b.is_full(big, 1 << 20));
        assert!(!b.is_full(AttemptId(3), 0), "an attempt not open is never full");
        b.take_batch(8 << 20);
        assert!(!b.is_full(big, 1 << 20) && !b.is_full(small, 1 << 20));
    }

    #[test]
    fn refused_attempts_stop_buffering() {
        let (mut b, id) = buffers();
        b.push(id, Stream::Stdout, b"before");
        b.reject(id);
        b.push(id, Stream::Stdout, b"after");
        assert_eq!(b.total(), 0);
        let fin = b.take_final(id);
        assert!(fin.rejected);
        assert!(fin.chunks.is_empty());
    }
}
