//! The worker's side of the spawner: starting the helpers (before any runtime, from the
//! main thread, so the kernel's death signal follows the worker), sending them spawn
//! requests with the step's output pipes, and a task per helper on the worker's runtime
//! that routes its answers and exit reports to the waiting executors (no thread of its
//! own: one hand-off less per spawn and per exit). It never spawns a step itself.
//!
//! A worker has a few helpers ("lanes"), each single-threaded, spawns spread round-robin:
//! a spawn keeps its helper waiting in `clone` until the child has exec'd, and on a busy
//! machine one helper cannot keep up with many short steps (measured: at concurrency 8 on
//! 2 cores, one helper was runnable or in that wait 92 % of the time).

use super::helper::{MAX_REQUEST, PARENT_ENV};
use super::wire::{Reply, Request, SpawnRequest};
use crate::kill;
use rota_domain::AttemptId;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::Pid;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Why the spawner could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    /// A socket or the helper process could not be created.
    #[error("cannot start the step spawner: {0}")]
    Start(#[source] io::Error),
}

/// The most helpers a worker starts (one per core, at least two: see the module doc).
const MAX_LANES: usize = 4;

/// A handle on the worker's spawner helpers; cheap to clone. When the last handle is
/// dropped (or the worker dies), each helper KILLs every step it spawned and exits.
#[derive(Clone)]
pub struct Spawner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner").field("helper_pids", &self.helper_pids()).finish_non_exhaustive()
    }
}

struct Inner {
    lanes: Vec<Lane>,
    /// The lane of the next spawn (round-robin).
    next_lane: AtomicUsize,
    /// Cancelled when any helper is gone: the worker stops, and the others then kill
    /// their steps as its handle drops.
    gone: CancellationToken,
    /// Test-only: the worker KILLs itself right after a spawn is answered.
    #[cfg(feature = "test-hooks")]
    kill_after_spawn: std::sync::atomic::AtomicBool,
}

/// One helper: its socket and where its answers go.
struct Lane {
    sock: OwnedFd,
    /// One sender at a time, so a request and its pipes stay one datagram in order.
    send_lock: Mutex<()>,
    next_id: AtomicU64,
    routes: Arc<Mutex<Routes>>,
    helper_pid: u32,
    /// The descriptor the answer-routing task reads, until that task is started (on the
    /// first async call: the spawner is created before any runtime exists).
    reader: Mutex<Option<OwnedFd>>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        // The reading task holds a second descriptor of this socket: shut the socket
        // itself down, so the helper sees EOF now and not when the process exits.
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Both);
    }
}

/// Where answers go.
#[derive(Default)]
struct Routes {
    pending: HashMap<u64, oneshot::Sender<Result<Answer, String>>>,
    exits: HashMap<i32, oneshot::Sender<(i32, bool)>>,
    closed: bool,
}

enum Answer {
    Spawned { pid: i32, exit: oneshot::Receiver<(i32, bool)> },
    Done,
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A step the helper spawned: its pid (= process group), output pipes and exit.
#[derive(Debug)]
pub(crate) struct SpawnedStep {
    pub(crate) pid: i32,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
    pub(crate) exit: StepExit,
}

/// The exit of a spawned step's leader, reported by the helper. Dropped before the exit
/// is known, it KILLs the step's group (as `kill_on_drop` did for a direct child).
#[derive(Debug)]
pub(crate) struct StepExit {
    pgid: Option<Pid>,
    rx: oneshot::Receiver<(i32, bool)>,
    status: Option<ExitStatus>,
    released: bool,
}

impl StepExit {
    /// Waits for the leader's exit. Cancel-safe and repeatable.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match (&mut self.rx).await {
            Ok((raw, released)) => {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                self.released = released;
                Ok(status)
            }
            Err(_) => Err(io::Error::other("the step spawner is gone")),
        }
    }
}

impl StepExit {
    /// True once the leader exited with its group already empty: the spawner has forgotten
    /// the group's record, and no [`Spawner::release`] is needed.
    pub(crate) fn released(&self) -> bool {
        self.released
    }
}

impl Drop for StepExit {
    fn drop(&mut self) {
        if self.status.is_none()
            && let Some(pgid) = self.pgid
        {
            kill::kill_group(pgid);
        }
    }
}

impl Spawner {
    /// Starts the helpers by re-executing this process's binary (`/proc/self/exe`, which
    /// works even after the file was replaced by an upgrade) with `args`, each in its own
    /// process group, with only `envs` in its environment (never the worker's tokens).
    /// Call it from the main thread before any async runtime starts: a helper dies with
    /// the thread that started it.
    pub fn start(args: &[&OsStr], envs: &[(&str, &OsStr)]) -> Result<Self, SpawnerError> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::start_program(Path::new("/proc/self/exe"), args, envs, cores.clamp(2, MAX_LANES))
    }

    fn start_program(
        program: &Path,
        args: &[&OsStr],
        envs: &[(&str, &OsStr)],
        lanes: usize,
    ) -> Result<Self, SpawnerError> {
        // Dropping the lanes started so far (on a failure) ends their helpers.
        let lanes = (0..lanes).map(|_| Lane::start(program, args, envs)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                lanes,
                next_lane: AtomicUsize::new(0),
                gone: CancellationToken::new(),
                #[cfg(feature = "test-hooks")]
                kill_after_spawn: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Test-only (feature `test-hooks`): after each answered spawn the worker KILLs itself, to
    /// prove a step never outlives its worker even in that window.
    #[cfg(feature = "test-hooks")]
    pub fn test_kill_after_spawn(&self) {
        self.inner.kill_after_spawn.store(true, Ordering::SeqCst);
    }

    /// The helpers' pids.
    pub fn helper_pids(&self) -> Vec<u32> {
        self.inner.lanes.iter().map(|l| l.helper_pid).collect()
    }

    /// Cancelled when a helper is gone (it died, or its socket broke).
    pub fn gone(&self) -> CancellationToken {
        self.inner.gone.clone()
    }

    /// From now on each helper journals each group it spawns in its own journal of
    /// `workspace` before it answers (`as_user`: helpers that run as the `--run-as` user,
    /// in that user's journal directory). Boot reaping must have emptied them first.
    pub(crate) async fn use_journal(&self, workspace: &Path, as_user: bool) -> io::Result<()> {
        self.start_routing()?;
        for (n, lane) in self.inner.lanes.iter().enumerate() {
            let (id, rx) = lane.expect_answer()?;
            let path = if as_user {
                crate::pgid::user_journal_path(workspace, n)
            } else {
                crate::pgid::lane_journal_path(workspace, n)
            };
            lane.send(&Request::Journal { id, path }, &[], &self.inner.gone)?;
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(message)) => return Err(io::Error::other(message)),
                Err(_) => return Err(helper_gone()),
            }
        }
        Ok(())
    }

    /// Spawns `program args` with exactly `env` in `cwd`, as the leader of a new process
    /// group, stdin from /dev/null, stdout and stderr piped back to this process. Returns
    /// once the helper has journaled the group.
    pub(crate) async fn spawn(
        &self,
        attempt: AttemptId,
        program: &str,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        cwd: &Path,
    ) -> io::Result<SpawnedStep> {
        self.start_routing()?;
        let lanes = &self.inner.lanes;
        let lane = &lanes[self.inner.next_lane.fetch_add(1, Ordering::Relaxed) % lanes.len()];
        let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (id, rx) = lane.expect_answer()?;
        let req = Request::Spawn(SpawnRequest {
            id,
            attempt_id: attempt.0,
            program: program.into(),
            args,
            env,
            cwd: PathBuf::from(cwd),
        });
        let sent = lane.send(&req, &[out_w.as_fd(), err_w.as_fd()], &self.inner.gone);
        // The step holds the write ends now; ours must close or reads never see EOF.
        drop((out_w, err_w));
        if let Err(e) = sent {
            lock(&lane.routes).pending.remove(&id);
            return Err(e);
        }
        let (pid, exit) = match rx.await {
            Ok(Ok(Answer::Spawned { pid, exit, .. })) => (pid, exit),
            Ok(Ok(Answer::Done)) => return Err(io::Error::other("the step spawner answered out of turn")),
            Ok(Err(message)) => return Err(io::Error::other(message)),
            Err(_) => return Err(helper_gone()),
        };
        #[cfg(feature = "test-hooks")]
        if self.inner.kill_after_spawn.load(Ordering::SeqCst) {
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        }
        let exit = StepExit { pgid: Pid::from_raw(pid), rx: exit, status: None, released: false };
        Ok(SpawnedStep { pid, stdout: receiver(out_r)?, stderr: receiver(err_r)?, exit })
    }

    /// The step of `attempt` has ended: its helper KILLs what is left of its group (if
    /// provably its) and forgets its journal record once the group is empty. Sent to every
    /// helper (the others know no such attempt): this is the rare path, taken only when a
    /// step left processes behind or its result was refused.
    pub(crate) fn release(&self, attempt: AttemptId) -> io::Result<()> {
        let mut result = Ok(());
        for lane in &self.inner.lanes {
            let sent = lane.send(&Request::Release { attempt_id: attempt.0 }, &[], &self.inner.gone);
            result = result.and(sent);
        }
        result
    }

    /// Starts the tasks that route answers, once, on the current runtime.
    fn start_routing(&self) -> io::Result<()> {
        for lane in &self.inner.lanes {
            let mut reader = lane.reader.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(fd) = reader.take() else { continue };
            // Registered with the reactor as a stream only for readiness: every read is our
            // own `recv` of one datagram.
            let afd = tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?;
            let (routes, gone, helper) = (lane.routes.clone(), self.inner.gone.clone(), lane.helper_pid);
            tokio::spawn(route_answers(afd, routes, gone, helper));
        }
        Ok(())
    }
}

impl Lane {
    /// Starts one helper (see [`Spawner::start`]).
    fn start(program: &Path, args: &[&OsStr], envs: &[(&str, &OsStr)]) -> Result<Self, SpawnerError> {
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                .map_err(|e| SpawnerError::Start(e.into()))?;
        // A request is one datagram: let it be as large as `exec` can take. The kernel caps
        // this at its own maximum; a larger request then fails with a clear error.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&ours, MAX_REQUEST);
        let me = std::process::id().to_string();
        let child = std::process::Command::new(program)
            .arg0("rota")
            .args(args)
            .env_clear()
            .envs(envs.iter().map(|(k, v)| (*k, *v)))
            .env(PARENT_ENV, &me)
            .envs(crate::dumpable::ptrace_allowed().then_some((crate::dumpable::ALLOW_PTRACE_ENV, "1")))
            .process_group(0)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(SpawnerError::Start)?;
        let helper_pid = child.id();
        // The helper is reaped when its socket closes (or at the process's exit); the
        // handle itself is not needed.
        drop(child);
        // Non-blocking, as the runtime's reactor requires of what it watches; a sender that
        // finds the socket buffer full waits for room (`send`).
        rustix::fs::fcntl_setfl(&ours, rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| SpawnerError::Start(e.into()))?;
        let reader = ours.try_clone().map_err(SpawnerError::Start)?;
        Ok(Self {
            sock: ours,
            send_lock: Mutex::new(()),
            next_id: AtomicU64::new(1),
            routes: Arc::new(Mutex::new(Routes::default())),
            helper_pid,
            reader: Mutex::new(Some(reader)),
        })
    }

    fn expect_answer(&self) -> io::Result<(u64, oneshot::Receiver<Result<Answer, String>>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut routes = lock(&self.routes);
        if routes.closed {
            return Err(helper_gone());
        }
        routes.pending.insert(id, tx);
        Ok((id, rx))
    }

    fn send(
        &self,
        req: &Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
        gone: &CancellationToken,
    ) -> io::Result<()> {
        let bytes = req.encode();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors for one spawn request"));
        }
        let _one = self.send_lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match rustix::net::sendmsg(&self.sock, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)
            {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    // The helper is behind by a whole socket buffer: wait for room (rare, and
                    // short unless the helper is stuck, which `gone` then reports).
                    let mut fds = [rustix::event::PollFd::new(&self.sock, rustix::event::PollFlags::OUT)];
                    let tick = rustix::event::Timespec { tv_sec: 1, tv_nsec: 0 };
                    let _ = rustix::event::poll(&mut fds, Some(&tick));
                    if gone.is_cancelled() {
                        return Err(helper_gone());
                    }
                }
                Err(Errno::MSGSIZE) => {
                    return Err(io::Error::other(format!(
                        "the step's script and environment ({} bytes) are too large to spawn",
                        bytes.len()
                    )));
                }
                Err(Errno::PIPE | Errno::CONNRESET) => return Err(helper_gone()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn helper_gone() -> io::Error {
    io::Error::other("the step spawner is gone")
}

/// A pipe's read end as an async reader (the write end stays blocking for the step).
fn receiver(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK)?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// The routing task: routes every answer until the helper goes away, then fails whatever
/// still waits and reaps the helper.
async fn route_answers(
    sock: tokio::net::UnixStream,
    routes: Arc<Mutex<Routes>>,
    gone: CancellationToken,
    helper_pid: u32,
) {
    let mut buf = vec![0u8; 4096];
    'read: loop {
        if sock.readable().await.is_err() {
            break;
        }
        loop {
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                rustix::net::recv(&sock, &mut buf, rustix::net::RecvFlags::DONTWAIT).map_err(io::Error::from)
            });
            match got {
                Ok((0, _)) => break 'read,
                Ok((n, _)) => route(&buf[..n], &routes),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break 'read,
            }
        }
    }
    {
        let mut r = lock(&routes);
        r.closed = true;
        r.pending.clear();
        r.exits.clear();
    }
    gone.cancel();
    if let Some(pid) = Pid::from_raw(i32::try_from(helper_pid).unwrap_or(0)) {
        // It exits right after killing its steps; waited for off the runtime.
        let _ = tokio::task::spawn_blocking(move || {
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        })
        .await;
    }
}

/// Hands one answer to whoever waits for it.
fn route(datagram: &[u8], routes: &Mutex<Routes>) {
    let Ok(reply) = Reply::decode(datagram) else {
        tracing::warn!("malformed answer from the step spawner: ignored");
        return;
    };
    let mut r = lock(routes);
    match reply {
        Reply::Spawned { id, pid, .. } => {
            // Routed before the next answer is read, so its exit always finds a waiter.
            let (tx, exit) = oneshot::channel();
            r.exits.insert(pid, tx);
            if let Some(waiter) = r.pending.remove(&id) {
                let _ = waiter.send(Ok(Answer::Spawned { pid, exit }));
            }
        }
        Reply::SpawnedExited { id, pid, status, released, .. } => {
            let (tx, exit) = oneshot::channel();
            let _ = tx.send((status, released));
            if let Some(waiter) = r.pending.remove(&id) {
                let _ = waiter.send(Ok(Answer::Spawned { pid, exit }));
            }
        }
        Reply::Failed { id, message } => {
            if let Some(waiter) = r.pending.remove(&id) {
                let _ = waiter.send(Err(message));
            }
        }
        Reply::Done { id } => {
            if let Some(waiter) = r.pending.remove(&id) {
                let _ = waiter.send(Ok(Answer::Done));
            }
        }
        Reply::Exited { pid, status, released } => {
            if let Some(waiter) = r.exits.remove(&pid) {
                let _ = waiter.send((status, released));
            }
        }
    }
}
