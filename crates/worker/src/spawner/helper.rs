//! The spawner helper process: a single-threaded loop, re-executed from the rota binary
//! before any async runtime exists, that spawns every step of one worker and outlives it
//! just long enough to kill them. It owns the step processes (it is their parent and a
//! child subreaper), the workspace's journal of process groups, and the last act when its
//! worker goes away: KILL every group it spawned and every process left under it.
//!
//! It must not start threads of its own, install `pre_exec` hooks or fork: steps are
//! spawned with `posix_spawn` (std's `Command` with an absolute program, no hook).

use super::wire::{Reply, Request, SpawnRequest};
use crate::kill;
use crate::pgid::{Journal, PgidRecord, is_record_live};
use crate::procfs;
use rota_domain::AttemptId;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendFlags};
use rustix::process::{Pid, Signal, WaitOptions};
use std::collections::HashMap;
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The environment variable carrying the worker's pid: a helper whose parent is already
/// someone else (the worker died before the death signal was armed) stops at once.
pub(crate) const PARENT_ENV: &str = "ROTA_SPAWNER_PARENT";

/// The signal the kernel sends when the worker's spawning thread dies. Not KILL: the
/// helper's last act must be killing its steps, so it is a signal it handles.
const DEATH_SIGNAL: i32 = signal_hook::consts::SIGUSR1;

/// The largest request accepted (a step's script and environment; `exec` itself refuses
/// more than a couple of MB).
pub(crate) const MAX_REQUEST: usize = 8 << 20;

/// How long a spawn's answer may wait to travel with the step's exit. Most steps of a busy
/// worker end within it, and one datagram then wakes the worker once instead of twice; a
/// longer step is answered when it passes (its pid is not needed sooner: stop orders wait
/// for it in the executor's queue). The group is journaled before either.
const ANSWER_WITH_EXIT: Duration = Duration::from_millis(5);

/// How long the helper waits for killed processes to be reaped before it exits.
const REAP_BOUND: Duration = Duration::from_secs(2);

/// Serves the worker on `sock` until it goes away; returns the exit code.
pub(crate) fn serve(sock: OwnedFd) -> i32 {
    match Helper::new(sock).and_then(|mut h| h.run()) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rota spawner: {e}");
            1
        }
    }
}

struct Helper {
    sock: OwnedFd,
    /// Woken by SIGCHLD and the death signal.
    signals: UnixStream,
    orphaned: Arc<AtomicBool>,
    journal: Option<Journal>,
    /// Step leaders not reaped yet: pid → attempt, and a pidfd that wakes `poll` when the
    /// leader exits (none without pidfd support: SIGCHLD wakes it then).
    leaders: HashMap<i32, (AttemptId, Option<OwnedFd>)>,
    /// The kernel has pidfds (5.3+): exits wake `poll` directly, no SIGCHLD handler.
    pidfds: bool,
    /// The step's stdin, opened once.
    null: std::fs::File,
    /// Spawn answers held back to travel with their step's exit: (due, pid, answer).
    held: Vec<(Instant, i32, Reply)>,
    /// Groups spawned whose record the worker has not forgotten.
    groups: HashMap<AttemptId, PgidRecord>,
    buf: Vec<u8>,
}

impl Helper {
    fn new(sock: OwnedFd) -> std::io::Result<Self> {
        let (signals, wake) = UnixStream::pair()?;
        signals.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let orphaned = Arc::new(AtomicBool::new(false));
        // Ctrl-C reaches the terminal's foreground group, and a supervisor may TERM the
        // worker's group: neither may take the helper down before it has killed the steps.
        // A handler (not SIG_IGN) so that steps start with the default disposition.
        let ignored = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
            signal_hook::flag::register(sig, ignored.clone())?;
        }
        signal_hook::flag::register(DEATH_SIGNAL, orphaned.clone())?;
        signal_hook::low_level::pipe::register(DEATH_SIGNAL, wake.try_clone()?)?;
        // A leader's exit wakes `poll` through its pidfd: no signal frame, no self-pipe
        // write and read per step. Without pidfds (kernels before 5.3), SIGCHLD does it.
        let me = rustix::process::getpid();
        let pidfds = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).is_ok();
        if !pidfds {
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, wake)?;
        }
        let death =
            Signal::from_named_raw(DEATH_SIGNAL).ok_or_else(|| std::io::Error::other("no SIGUSR1"))?;
        rustix::process::set_parent_process_death_signal(Some(death))?;
        // Armed only now: a worker that died before this point left us to someone else.
        let expected = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok());
        let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
        if expected.is_some() && expected != parent {
            orphaned.store(true, Ordering::SeqCst);
        }
        rustix::process::set_child_subreaper(Some(me))?;
        Ok(Self {
            sock,
            signals,
            orphaned,
            journal: None,
            leaders: HashMap::new(),
            pidfds,
            null: std::fs::File::open("/dev/null")?,
            held: Vec::new(),
            groups: HashMap::new(),
            buf: Vec::new(),
        })
    }

    fn run(&mut self) -> std::io::Result<()> {
        let tick = Timespec { tv_sec: 1, tv_nsec: 0 };
        let mut worker_gone = false;
        while !worker_gone && !self.orphaned.load(Ordering::SeqCst) {
            let (sock_ready, sig_ready) = {
                let mut fds = Vec::with_capacity(2 + self.leaders.len());
                fds.push(PollFd::new(&self.sock, PollFlags::IN));
                fds.push(PollFd::new(&self.signals, PollFlags::IN));
                fds.extend(
                    self.leaders
                        .values()
                        .filter_map(|(_, fd)| Some(PollFd::new(fd.as_ref()?, PollFlags::IN))),
                );
                let now = Instant::now();
                let wait = self.held.iter().map(|(due, ..)| due.saturating_duration_since(now)).min();
                let timeout = match wait {
                    Some(d) if d < Duration::from_secs(1) => {
                        Timespec { tv_sec: 0, tv_nsec: i64::from(d.subsec_nanos()) }
                    }
                    _ => tick,
                };
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if sig_ready {
                let mut sink = [0u8; 64];
                while matches!((&self.signals).read(&mut sink), Ok(n) if n > 0) {}
            }
            // Reaped on every wake-up and tick: orphans re-parented to us have no pidfd (or
            // SIGCHLD) of their own worth waiting for.
            worker_gone |= self.reap();
            if sock_ready {
                worker_gone |= self.serve_requests();
            }
            worker_gone |= self.answer_due(Instant::now());
        }
        self.kill_everything();
        Ok(())
    }

    /// Reaps every exited child; reports step leaders. True when the worker is gone. A
    /// leader whose group is empty once every child is reaped (almost every step) has its
    /// record forgotten here, so the worker need not ask for it.
    fn reap(&mut self) -> bool {
        let mut exited = Vec::new();
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let pid = pid.as_raw_nonzero().get();
                    if let Some((attempt, _pidfd)) = self.leaders.remove(&pid) {
                        exited.push((pid, attempt, status.as_raw()));
                    }
                }
                Ok(None) | Err(Errno::CHILD) => break,
                Err(Errno::INTR) => {}
                Err(_) => break,
            }
        }
        for (pid, attempt, status) in exited {
            let held = self.held.iter().position(|(_, p, _)| *p == pid).map(|i| self.held.swap_remove(i).2);
            // Zombies count as members: checked only after the loop reaped them all.
            let released = Pid::from_raw(pid).is_none_or(|p| !kill::is_group_alive(p));
            if released {
                self.forget(attempt);
            }
            let reply = match held {
                // Answer and exit in one datagram: one wake-up of the worker.
                Some(Reply::Spawned { id, pid, start_ticks }) => {
                    Reply::SpawnedExited { id, pid, start_ticks, status, released }
                }
                _ => Reply::Exited { pid, status, released },
            };
            if self.send(&reply).is_err() {
                return true;
            }
        }
        false
    }

    /// Handles every queued request. True when the worker is gone (EOF or a dead socket).
    fn serve_requests(&mut self) -> bool {
        if self.buf.len() < MAX_REQUEST {
            // Zeroed lazily by the kernel: only the bytes requests use become resident.
            self.buf = vec![0u8; MAX_REQUEST];
        }
        loop {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                &self.sock,
                &mut [IoSliceMut::new(&mut self.buf)],
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            );
            let msg = match got {
                Ok(msg) => msg,
                Err(Errno::AGAIN) => return false,
                Err(Errno::INTR) => continue,
                Err(_) => return true,
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            if msg.bytes == 0 && fds.is_empty() {
                return true; // EOF: the worker closed its end or died.
            }
            let truncated = msg.flags.contains(ReturnFlags::TRUNC);
            let request = if truncated { None } else { Request::decode(&self.buf[..msg.bytes]).ok() };
            let reply = match request {
                Some(Request::Journal { id, path }) => {
                    self.journal = Some(Journal::at(path));
                    Some(Reply::Done { id })
                }
                Some(Request::Spawn(req)) => match self.spawn(req, fds) {
                    answer @ Reply::Spawned { pid, .. } => {
                        self.held.push((Instant::now() + ANSWER_WITH_EXIT, pid, answer));
                        None
                    }
                    answer => Some(answer),
                },
                Some(Request::Release { attempt_id }) => {
                    self.release(AttemptId(attempt_id));
                    None
                }
                None => {
                    let _ = writeln!(std::io::stderr(), "rota spawner: dropped a malformed request");
                    None
                }
            };
            if let Some(reply) = reply
                && self.send(&reply).is_err()
            {
                return true;
            }
            // Steps that ended while this batch was served are reported now, not after the
            // whole batch: a slot waits for its step's exit (one `wait4` when none ended).
            if self.reap() {
                return true;
            }
        }
    }

    /// Sends the held spawn answers that are due. True when the worker is gone.
    fn answer_due(&mut self, now: Instant) -> bool {
        while let Some(i) = self.held.iter().position(|(due, ..)| *due <= now) {
            let (_, _, answer) = self.held.swap_remove(i);
            if self.send(&answer).is_err() {
                return true;
            }
        }
        false
    }

    /// Spawns one step and journals its group before answering.
    fn spawn(&mut self, req: SpawnRequest, fds: Vec<OwnedFd>) -> Reply {
        let id = req.id;
        let failed = |message: String| Reply::Failed { id, message };
        let Ok([stdout, stderr]) = <[OwnedFd; 2]>::try_from(fds) else {
            return failed("a spawn request must carry exactly two pipes".into());
        };
        let mut cmd = Command::new(&req.program);
        cmd.args(&req.args)
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&req.cwd)
            .process_group(0)
            .stdin(match self.null.try_clone() {
                Ok(null) => Stdio::from(null),
                Err(_) => Stdio::null(),
            })
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let spawned = cmd.spawn();
        // Our copies of the pipes' write ends close here: the step holds the only ones.
        drop(cmd);
        let pid = match spawned.map(|child| i32::try_from(child.id())) {
            Ok(Ok(pid)) => pid,
            Ok(Err(_)) => return failed("spawned step has an out-of-range pid".into()),
            Err(e) => return failed(e.to_string()),
        };
        let attempt_id = AttemptId(req.attempt_id);
        // Our unreaped child: its pid cannot be reused, so the pidfd is its.
        let pidfd = match Pid::from_raw(pid) {
            Some(p) if self.pidfds => {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
            }
            _ => None,
        };
        self.leaders.insert(pid, (attempt_id, pidfd));
        // The leader is our unreaped child, so its stat is readable until we wait for it.
        let recorded = procfs::read_stat(pid).and_then(|stat| {
            let rec = PgidRecord { attempt_id, pid, pgid: pid, start_ticks: stat.start_ticks };
            match &self.journal {
                Some(journal) => journal.record(&rec).map(|()| rec),
                None => Ok(rec),
            }
        });
        match recorded {
            Ok(rec) => {
                let start_ticks = rec.start_ticks;
                self.groups.insert(attempt_id, rec);
                Reply::Spawned { id, pid, start_ticks }
            }
            Err(e) => {
                // Not recorded means not ours to leave running: the leader is reaped later.
                if let Some(pgid) = Pid::from_raw(pid) {
                    kill::kill_group(pgid);
                }
                self.leaders.remove(&pid);
                failed(format!("cannot record the step's process group durably: {e}"))
            }
        }
    }

    /// KILLs what is left of `attempt`'s group, else forgets its record. Cheap when the
    /// group is empty (one `kill(-pgid, 0)`), as it is after almost every step.
    fn release(&mut self, attempt: AttemptId) {
        let Some(rec) = self.groups.get(&attempt) else { return };
        if let Some(pgid) = Pid::from_raw(rec.pgid).filter(|p| kill::is_group_alive(*p))
            && is_record_live(rec, &procfs::all_processes().unwrap_or_default())
        {
            // Still running: killed now, forgotten once empty (next release or exit).
            kill::kill_group(pgid);
            return;
        }
        self.forget(attempt);
    }

    fn forget(&mut self, attempt: AttemptId) {
        self.groups.remove(&attempt);
        if let Some(journal) = &self.journal
            && let Err(e) = journal.forget(attempt)
        {
            let _ =
                writeln!(std::io::stderr(), "rota spawner: cannot journal the end of a process group: {e}");
        }
    }

    fn send(&self, reply: &Reply) -> std::io::Result<()> {
        let bytes = reply.encode();
        loop {
            match rustix::net::send(self.sock.as_fd(), &bytes, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The worker is gone: KILL every group spawned and every process re-parented to us,
    /// reap them (bounded), and forget the groups that are provably empty.
    fn kill_everything(&mut self) {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let deadline = Instant::now() + REAP_BOUND;
        loop {
            let procs = procfs::all_processes().unwrap_or_default();
            // An unreaped leader's pid cannot be reused, so its group is ours; a group whose
            // leader is gone is ours only while a member started after it (pid reuse).
            let live = self.groups.values().filter(|rec| is_record_live(rec, &procs)).map(|rec| rec.pgid);
            let groups: Vec<i32> = live.chain(self.leaders.keys().copied()).collect();
            for pgid in groups {
                if let Some(pgid) = Pid::from_raw(pgid) {
                    kill::kill_group(pgid);
                }
            }
            // Processes that left their group (setsid, setpgid) but are still under us.
            let mut children = 0;
            for p in procs {
                if p.ppid == me && !p.is_zombie() {
                    children += 1;
                    if let Some(pid) = Pid::from_raw(p.pid) {
                        let _ = rustix::process::kill_process(pid, Signal::KILL);
                    }
                }
            }
            self.reap_all();
            if children == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let procs = procfs::all_processes().unwrap_or_default();
        let gone: Vec<AttemptId> = self
            .groups
            .values()
            .filter(|rec| !is_record_live(rec, &procs))
            .map(|rec| rec.attempt_id)
            .collect();
        for attempt in gone {
            self.forget(attempt);
        }
    }

    fn reap_all(&mut self) {
        while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
    }
}
