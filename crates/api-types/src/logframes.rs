//! The binary form of `POST /worker/logs` (`POST /worker/logs/frames`): the same
//! [`LogsBatchRequest`] as length-prefixed frames, so step output crosses the wire as raw
//! bytes. The JSON form carries each chunk as base64 inside a JSON string, which the worker
//! encodes and the server scans and decodes again: most of the CPU a stored MB cost. Servers
//! keep accepting the JSON form (older workers), and workers fall back to it when a server
//! does not know this route (older servers).
//!
//! Layout, integers little-endian:
//! ```text
//! body   = MAGIC batch*
//! batch  = job_id:16 (UUID bytes) attempt_id:i64 dropped_bytes:u64
//!          step_len:u32 step:step_len (UTF-8) chunk_count:u32 chunk*
//! chunk  = stream:u8 (0 stdout, 1 stderr) seq:u64 len:u32 data:len
//! ```

use crate::Bytes64;
use crate::worker::{LogBatch, LogChunk, LogsBatchRequest, Stream};
use rota_domain::{AttemptId, JobId};

/// Media type of the binary form.
pub const CONTENT_TYPE: &str = "application/vnd.rota.log-frames";

/// First bytes of every body (format 1).
const MAGIC: &[u8; 4] = b"RLF1";

/// Why a body is not a valid frame sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid log frames: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

/// Bytes the frames of `req` take, to allocate the body once.
pub fn encoded_len(req: &LogsBatchRequest) -> usize {
    MAGIC.len()
        + req
            .batches
            .iter()
            .map(|b| {
                16 + 8
                    + 8
                    + 4
                    + b.step.len()
                    + 4
                    + b.chunks.iter().map(|c| 1 + 8 + 4 + c.data.0.len()).sum::<usize>()
            })
            .sum::<usize>()
}

/// The frames of `req`. A chunk or step longer than `u32::MAX` bytes (never: chunks are at
/// most a few hundred KiB) would not fit: `None`.
pub fn encode(req: &LogsBatchRequest) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded_len(req));
    out.extend_from_slice(MAGIC);
    for b in &req.batches {
        out.extend_from_slice(b.job_id.0.as_bytes());
        out.extend_from_slice(&b.attempt_id.0.to_le_bytes());
        out.extend_from_slice(&b.dropped_bytes.to_le_bytes());
        out.extend_from_slice(&u32::try_from(b.step.len()).ok()?.to_le_bytes());
        out.extend_from_slice(b.step.as_bytes());
        out.extend_from_slice(&u32::try_from(b.chunks.len()).ok()?.to_le_bytes());
        for c in &b.chunks {
            out.push(match c.stream {
                Stream::Stdout => 0,
                Stream::Stderr => 1,
            });
            out.extend_from_slice(&c.seq.to_le_bytes());
            out.extend_from_slice(&u32::try_from(c.data.0.len()).ok()?.to_le_bytes());
            out.extend_from_slice(&c.data.0);
        }
    }
    Some(out)
}

/// Reads frames; every chunk's data is copied out once.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError(format!("body ends inside {what}")));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<usize, FrameError> {
        usize::try_from(u32::from_le_bytes(self.array(what)?))
            .map_err(|_| FrameError(format!("{what} too large")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

/// The request the frames in `body` carry. `max_batches` bounds the batches read (the
/// same limit the JSON form has), so a hostile body cannot make the server allocate for
/// counts it does not carry.
pub fn decode(body: &[u8], max_batches: usize) -> Result<LogsBatchRequest, FrameError> {
    let mut r = Reader { rest: body };
    if r.take(MAGIC.len(), "the format tag")? != MAGIC {
        return Err(FrameError("unknown format tag (expected RLF1)".into()));
    }
    let mut batches = Vec::new();
    while !r.rest.is_empty() {
        if batches.len() >= max_batches {
            return Err(FrameError(format!("more than {max_batches} batches")));
        }
        let job_id = JobId(uuid::Uuid::from_bytes(r.array("a job id")?));
        let attempt_id = AttemptId(i64::from_le_bytes(r.array("an attempt id")?));
        let dropped_bytes = r.u64("dropped bytes")?;
        let step_len = r.u32("a step name length")?;
        let step = std::str::from_utf8(r.take(step_len, "a step name")?)
            .map_err(|_| FrameError("a step name is not UTF-8".into()))?
            .to_string();
        let count = r.u32("a chunk count")?;
        // Each chunk takes at least 13 bytes: a count past what is left is a lie.
        if count > r.rest.len() / 13 {
            return Err(FrameError(format!("{count} chunks announced, the body cannot hold them")));
        }
        let mut chunks = Vec::with_capacity(count);
        for _ in 0..count {
            let [tag] = r.array::<1>("a stream tag")?;
            let stream = match tag {
                0 => Stream::Stdout,
                1 => Stream::Stderr,
                t => return Err(FrameError(format!("unknown stream tag {t}"))),
            };
            let seq = r.u64("a sequence number")?;
            let len = r.u32("a chunk length")?;
            let data = r.take(len, "a chunk")?.to_vec();
            chunks.push(LogChunk { stream, seq, data: Bytes64(data) });
        }
        batches.push(LogBatch { job_id, step, attempt_id, chunks, dropped_bytes });
    }
    Ok(LogsBatchRequest { batches })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> LogsBatchRequest {
        let chunk = |stream, seq, data: &[u8]| LogChunk { stream, seq, data: Bytes64(data.to_vec()) };
        LogsBatchRequest {
            batches: vec![
                LogBatch {
                    job_id: JobId::new(),
                    step: "build ☃".into(),
                    attempt_id: AttemptId(42),
                    chunks: vec![
                        chunk(Stream::Stdout, 0, b"\xff\x00 no newline"),
                        chunk(Stream::Stderr, 7, b""),
                        chunk(Stream::Stdout, 1, &[9u8; 70_000]),
                    ],
                    dropped_bytes: 12,
                },
                LogBatch {
                    job_id: JobId::new(),
                    step: "s".into(),
                    attempt_id: AttemptId(-1),
                    chunks: Vec::new(),
                    dropped_bytes: 0,
                },
            ],
        }
    }

    #[test]
    fn frames_round_trip_byte_exact() {
        let req = sample();
        let body = encode(&req).unwrap();
        assert_eq!(body.len(), encoded_len(&req));
        let back = decode(&body, 16).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&req).unwrap());
    }

    #[test]
    fn truncated_or_forged_bodies_are_refused() {
        let body = encode(&sample()).unwrap();
        for cut in [0, 3, 4, 20, 60, body.len() - 1] {
            assert!(decode(&body[..cut], 16).is_err() || cut == 4, "cut at {cut}");
        }
        assert_eq!(decode(MAGIC, 16).unwrap().batches.len(), 0);
        assert!(decode(b"XXXX", 16).is_err());
        assert!(decode(&body, 1).is_err(), "more batches than allowed");
        let mut forged = body.clone();
        // The first batch's chunk count: after magic, ids, dropped, step length and step.
        let at = 4 + 16 + 8 + 8 + 4 + "build ☃".len();
        forged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&forged, 16).is_err());
    }
}
