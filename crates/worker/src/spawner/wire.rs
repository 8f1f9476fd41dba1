//! The messages between a worker and its spawner helper, one per SEQPACKET datagram, in a
//! small length-prefixed binary form (no JSON on the spawn path; byte strings stay byte
//! strings, so a non-UTF-8 PATH survives). It owns encoding only: no I/O, no policy.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// A request from the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Record spawned groups in the journal at `path` from now on (after boot reaping).
    Journal { id: u64, path: PathBuf },
    /// Spawn a step; its stdout and stderr pipes travel with the datagram (SCM_RIGHTS).
    Spawn(SpawnRequest),
    /// The attempt's step has ended: KILL what is left of its group (if provably its)
    /// and forget its journal record once the group is empty. No reply.
    Release { attempt_id: i64 },
}

/// What to spawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpawnRequest {
    pub(crate) id: u64,
    pub(crate) attempt_id: i64,
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: PathBuf,
}

/// A reply from the helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The step runs and its group is journaled: pid (= pgid) and its start time.
    Spawned { id: u64, pid: i32, start_ticks: u64 },
    /// The request failed; nothing runs.
    Failed { id: u64, message: String },
    /// A request without a result of its own succeeded.
    Done { id: u64 },
    /// `Spawned` and `Exited` of a step that ended before its answer was sent.
    SpawnedExited { id: u64, pid: i32, start_ticks: u64, status: i32, released: bool },
    /// A spawned step's leader exited; `status` is the raw wait status. `released`: its
    /// group was empty then and its record is forgotten (no `Release` needed).
    Exited { pid: i32, status: i32, released: bool },
}

/// A datagram that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed spawner message")]
pub(crate) struct Malformed;

struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Self {
        let mut v = Vec::with_capacity(256);
        v.push(tag);
        Self(v)
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        // Datagrams are bounded by the socket buffer (a few MB), far below u32::MAX.
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn count(&mut self, n: usize) -> &mut Self {
        self.0.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        self
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn count(&mut self) -> Result<usize, Malformed> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        // Every counted item takes at least 4 bytes: a count larger than that is a lie.
        if n > self.0.len() / 4 {
            return Err(Malformed);
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }
    fn os(&mut self) -> Result<OsString, Malformed> {
        Ok(OsString::from_vec(self.bytes()?.to_vec()))
    }
    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() { Ok(()) } else { Err(Malformed) }
    }
}

const JOURNAL: u8 = 1;
const SPAWN: u8 = 2;
const RELEASE: u8 = 3;
const SPAWNED: u8 = 11;
const FAILED: u8 = 12;
const DONE: u8 = 13;
const EXITED: u8 = 14;
const SPAWNED_EXITED: u8 = 15;

impl Request {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Journal { id, path } => {
                Writer::new(JOURNAL).u64(*id).bytes(path.as_os_str().as_bytes()).0.clone()
            }
            Self::Spawn(s) => {
                let mut w = Writer::new(SPAWN);
                w.u64(s.id).i64(s.attempt_id).bytes(s.program.as_bytes()).count(s.args.len());
                for a in &s.args {
                    w.bytes(a.as_bytes());
                }
                w.count(s.env.len());
                for (k, v) in &s.env {
                    w.bytes(k.as_bytes()).bytes(v.as_bytes());
                }
                w.bytes(s.cwd.as_os_str().as_bytes());
                w.0
            }
            Self::Release { attempt_id } => Writer::new(RELEASE).i64(*attempt_id).0.clone(),
        }
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader(buf);
        let req = match r.u8()? {
            JOURNAL => {
                let id = r.u64()?;
                Self::Journal { id, path: PathBuf::from(r.os()?) }
            }
            SPAWN => {
                let (id, attempt_id, program) = (r.u64()?, r.i64()?, r.os()?);
                let args = (0..r.count()?).map(|_| r.os()).collect::<Result<_, _>>()?;
                let env = (0..r.count()?).map(|_| Ok((r.os()?, r.os()?))).collect::<Result<_, _>>()?;
                let cwd = PathBuf::from(r.os()?);
                Self::Spawn(SpawnRequest { id, attempt_id, program, args, env, cwd })
            }
            RELEASE => Self::Release { attempt_id: r.i64()? },
            _ => return Err(Malformed),
        };
        r.end()?;
        Ok(req)
    }
}

impl Reply {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Spawned { id, pid, start_ticks } => {
                Writer::new(SPAWNED).u64(*id).i32(*pid).u64(*start_ticks).0.clone()
            }
            Self::Failed { id, message } => Writer::new(FAILED).u64(*id).bytes(message.as_bytes()).0.clone(),
            Self::Done { id } => Writer::new(DONE).u64(*id).0.clone(),
            Self::SpawnedExited { id, pid, start_ticks, status, released } => Writer::new(SPAWNED_EXITED)
                .u64(*id)
                .i32(*pid)
                .u64(*start_ticks)
                .i32(*status)
                .u8(u8::from(*released))
                .0
                .clone(),
            Self::Exited { pid, status, released } => {
                Writer::new(EXITED).i32(*pid).i32(*status).u8(u8::from(*released)).0.clone()
            }
        }
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader(buf);
        let reply = match r.u8()? {
            SPAWNED => Self::Spawned { id: r.u64()?, pid: r.i32()?, start_ticks: r.u64()? },
            FAILED => {
                let id = r.u64()?;
                Self::Failed { id, message: String::from_utf8_lossy(r.bytes()?).into_owned() }
            }
            DONE => Self::Done { id: r.u64()? },
            SPAWNED_EXITED => Self::SpawnedExited {
                id: r.u64()?,
                pid: r.i32()?,
                start_ticks: r.u64()?,
                status: r.i32()?,
                released: r.u8()? != 0,
            },
            EXITED => Self::Exited { pid: r.i32()?, status: r.i32()?, released: r.u8()? != 0 },
            _ => return Err(Malformed),
        };
        r.end()?;
        Ok(reply)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let spawn = Request::Spawn(SpawnRequest {
            id: 7,
            attempt_id: -3,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), OsString::from_vec(b"echo \xff".to_vec())],
            env: vec![("PATH".into(), "/bin".into()), ("EMPTY".into(), "".into())],
            cwd: "/tmp/a b".into(),
        });
        for req in [
            spawn,
            Request::Journal { id: 1, path: "/w/.rota/running.log".into() },
            Request::Release { attempt_id: 9 },
        ] {
            assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        }
        for reply in [
            Reply::Spawned { id: 1, pid: 42, start_ticks: 99 },
            Reply::Failed { id: 2, message: "no such file".into() },
            Reply::Done { id: 3 },
            Reply::Exited { pid: 42, status: 9, released: true },
            Reply::SpawnedExited { id: 4, pid: 43, start_ticks: 7, status: 256, released: false },
        ] {
            assert_eq!(Reply::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn truncated_or_padded_messages_are_refused() {
        let bytes = Reply::Spawned { id: 1, pid: 42, start_ticks: 99 }.encode();
        assert!(Reply::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Reply::decode(&padded).is_err());
        assert!(Request::decode(&[SPAWN, 1, 2]).is_err());
        // A count that promises more items than the datagram can hold.
        let mut lie = Writer::new(SPAWN);
        lie.u64(1).i64(1).bytes(b"/bin/sh").0.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&lie.0).is_err());
        assert!(Request::decode(&[]).is_err());
    }
}
