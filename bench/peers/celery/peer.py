#!/usr/bin/env python3
"""Celery peer for bench/: `peer.py <workload> [options]`, run with the venv's python
(bench/.peers/celery-venv/bin/python, installed by setup.sh).

Prints exactly ONE JSON object on stdout (logs, including the worker's, go to stderr).
The worker is a real `celery -A app worker --pool=prefork ...` child process in its own
process group (same session), always stopped at the end (SIGTERM, then SIGKILL of its group), also on
errors and on SIGINT/SIGTERM of this script. On error the JSON object carries "error"
and the exit status is 1.

Workloads (see README.md):
  burn-down    --jobs N --concurrency C
  latency      --samples N --rate R --concurrency C
  submit-rate  --mode single|batch --jobs N [--clients K] [--batch-size 100]
  worker-start --runs N [--concurrency C]
Common: --redis-url redis://127.0.0.1:6379 --broker-db 5 --book-db 6 --timeout 600
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print("[celery-peer]", *a, file=sys.stderr, flush=True)


def pct(sorted_vals, p):
    """Same rule as crates/bench (nearest rank on (n-1)*p)."""
    if not sorted_vals:
        return None
    i = int(round((len(sorted_vals) - 1) * p))
    return sorted_vals[min(i, len(sorted_vals) - 1)]


def r3(x):
    return None if x is None else round(x, 3)


# --------------------------------------------------------------------------- setup


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="peer.py", description="Celery peer for rota bench")
    sub = ap.add_subparsers(dest="workload", required=True)

    def common(p):
        p.add_argument("--redis-url", default="redis://127.0.0.1:6379")
        p.add_argument("--broker-db", type=int, default=5)
        p.add_argument("--book-db", type=int, default=6)
        p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")

    p = sub.add_parser("burn-down")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--enqueue-chunk", type=int, default=1000, help="sigs per group().apply_async()")
    p.add_argument("--enqueue-procs", type=int, default=4, help="enqueue.py processes side by side")
    common(p)

    p = sub.add_parser("latency")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--rate", type=float, default=20.0, help="arrivals per second (open loop)")
    p.add_argument("--concurrency", type=int, default=8)
    common(p)

    p = sub.add_parser("submit-rate")
    p.add_argument("--mode", choices=["single", "batch"], required=True)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--clients", type=int, default=1, help="threads (single mode)")
    p.add_argument("--batch-size", type=int, default=100, help="sigs per group (batch mode)")
    common(p)

    p = sub.add_parser("worker-start")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    common(p)

    a = ap.parse_args(argv)
    if a.broker_db == a.book_db:
        ap.error("--broker-db and --book-db must differ")
    base = a.redis_url.rstrip("/")
    a.broker_url = f"{base}/{a.broker_db}"
    a.book_url = f"{base}/{a.book_db}"
    return a


ARGS = parse_args(sys.argv[1:])
# app.py reads these at import; the worker child inherits them.
os.environ["CELERY_BENCH_BROKER"] = ARGS.broker_url
os.environ["CELERY_BENCH_BOOK"] = ARGS.book_url

import celery  # noqa: E402
import kombu  # noqa: E402
import redis  # noqa: E402
from celery import group  # noqa: E402

import app as bench_app  # noqa: E402

BROKER = redis.Redis.from_url(ARGS.broker_url)
BOOK = redis.Redis.from_url(ARGS.book_url)


def flush():
    BROKER.flushdb()
    BOOK.flushdb()


def versions():
    import billiard

    return {
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "billiard": billiard.__version__,
        "redis_py": redis.__version__,
        "python": platform.python_version(),
        "redis_server": BROKER.info("server").get("redis_version"),
    }


def book_counts():
    p = BOOK.pipeline(transaction=False)
    p.scard(bench_app.K_IDS)
    p.get(bench_app.K_COUNT)
    unique, total = p.execute()
    return int(unique), int(total or 0)


def broker_pending():
    """(queued messages, unacked messages) in the broker db."""
    p = BROKER.pipeline(transaction=False)
    p.llen(bench_app.QUEUE)
    p.hlen("unacked")
    q, u = p.execute()
    return int(q), int(u)


# --------------------------------------------------------------------------- worker


def proc_stat(pid):
    """(ppid, utime+stime ms, cutime+cstime ms) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4; utime..cstime are fields 14..17.
    ppid = int(rest[1])
    own = (int(rest[11]) + int(rest[12])) * 1000.0 / CLK_TCK
    kids = (int(rest[13]) + int(rest[14])) * 1000.0 / CLK_TCK
    return ppid, own, kids


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[0] == pid:
                out.append(int(d))
    return out


class Worker:
    """A `celery -A app worker` child process in its own process group."""

    live = []

    def __init__(self, concurrency):
        self.concurrency = concurrency
        self.proc = None
        self.launch_ns = None

    def start(self):
        celery_bin = os.path.join(os.path.dirname(sys.executable), "celery")
        cmd = [
            celery_bin, "-A", "app", "worker",
            "--pool=prefork", f"--concurrency={self.concurrency}",
            "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        Worker.live.append(self)
        self.launch_ns = time.time_ns()
        self.launch_perf = time.perf_counter()
        # The worker's banner goes to stdout: send it to our stderr so stdout stays JSON only.
        self.proc = subprocess.Popen(
            cmd, cwd=HERE, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
            # Own process group (for cleanup) but the caller's session: a new session would
            # also be a new scheduler autogroup, which changes CPU sharing on a busy host.
            process_group=0,
        )
        return self

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            v = BOOK.get(bench_app.K_READY)
            if v is not None:
                return int(v)
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode} before ready")
            if time.monotonic() > deadline:
                raise RuntimeError("worker not ready in time")
            time.sleep(0.002)

    def cpu(self):
        """Worker CPU so far (ms): main process, pool children own, their reaped sh."""
        main = proc_stat(self.proc.pid)
        kids = [proc_stat(k) for k in children_of(self.proc.pid)]
        kids = [k for k in kids if k]
        return {
            "main": main[1] if main else None,
            "main_reaped": main[2] if main else None,
            "pool": sum(k[1] for k in kids),
            "sh": sum(k[2] for k in kids),
            "pool_processes": len(kids),
        }

    def kill(self):
        """SIGKILL of the whole process group, then reap: for runs with nothing in flight."""
        self.stop(grace=0.0)

    def stop(self, grace=10.0):
        if self.proc is None:
            return
        if self.proc.poll() is None and grace > 0:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)  # warm shutdown
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                log("worker did not stop on SIGTERM; SIGKILL")
        # Kill whatever is left of its process group (pool children), then reap.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self in Worker.live:
            Worker.live.remove(self)


def stop_all_workers():
    for w in list(Worker.live):
        try:
            w.stop(grace=5.0)
        except Exception as e:  # noqa: BLE001
            log("cleanup:", e)


def _on_signal(signum, _frame):
    stop_all_workers()
    raise SystemExit(128 + signum)


def wait_drained(expected, timeout, poll=0.01):
    """Until `expected` executions are booked and queue + unacked are empty; returns perf time."""
    deadline = time.monotonic() + timeout
    while True:
        _, total = book_counts()
        if total >= expected:
            q, u = broker_pending()
            if q == 0 and u == 0:
                return time.perf_counter()
        if time.monotonic() > deadline:
            q, u = broker_pending()
            raise RuntimeError(f"not drained in {timeout}s: booked {total}/{expected}, queue {q}, unacked {u}")
        time.sleep(poll)


def exactly_once(expected):
    unique, total = book_counts()
    return {"lost": expected - unique, "duplicated": total - unique}


# --------------------------------------------------------------------------- workloads


def enqueue(n, chunk, procs):
    """Queues j0..j<n-1> with `procs` enqueue.py children side by side (see there why)."""
    script = os.path.join(HERE, "enqueue.py")
    per = -(-n // procs)
    kids = [
        subprocess.Popen([sys.executable, script, str(lo), str(min(n, lo + per)), str(chunk)], cwd=HERE,
                         stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        for lo in range(0, n, per)
    ]
    failed = [k.args for k in kids if k.wait() != 0]
    if failed:
        raise RuntimeError(f"enqueue failed: {failed}")


def burn_down(a):
    n, c = a.jobs, a.concurrency
    flush()
    t = time.perf_counter()
    enqueue(n, a.enqueue_chunk, a.enqueue_procs)
    enqueue_s = time.perf_counter() - t
    q, _ = broker_pending()
    if q != n:
        raise RuntimeError(f"enqueued {n} but the queue holds {q}")
    log(f"enqueued {n} in {enqueue_s:.2f}s; launching worker c={c}")

    w = Worker(c).start()
    try:
        end = wait_drained(n, a.timeout)
        seconds = end - w.launch_perf
        end_ns = w.launch_ns + int(seconds * 1e9)
        cpu = w.cpu()  # sampled before stopping: excludes shutdown
        first_ns = int(BOOK.get(bench_app.K_FIRST))
        ready_ns = BOOK.get(bench_app.K_READY)
        ready_cpu = BOOK.get(bench_app.K_READY_CPU)
    finally:
        w.stop()
    per_job = lambda ms: None if ms is None else round(ms / n, 3)  # noqa: E731
    first_task_s = (first_ns - w.launch_ns) / 1e9
    out = {
        "workload": "burn-down", "system": "celery", "jobs": n, "concurrency": c,
        "seconds": r3(seconds),
        "per_s": round(n / seconds, 1),
        "steady_per_s": round(n / ((end_ns - first_ns) / 1e9), 1),
        "first_task_s": r3(first_task_s),
        "ready_s": r3((int(ready_ns) - w.launch_ns) / 1e9) if ready_ns else None,
        "enqueue_per_s": round(n / enqueue_s, 1),
        **exactly_once(n),
        "cpu_ms_per_job": {
            "worker": per_job(cpu["main"]),
            "children": per_job(cpu["pool"] + cpu["sh"]),
            "pool_own": per_job(cpu["pool"]),
            "sh": per_job(cpu["sh"]),
        },
        "worker_startup_cpu_ms": r3(float(ready_cpu)) if ready_cpu else None,
        "pool_processes": cpu["pool_processes"],
        "versions": versions(),
    }
    return out


def latency(a):
    n, rate, c = a.samples, a.rate, a.concurrency
    flush()
    w = Worker(c).start()
    try:
        w.wait_ready(a.timeout)
        for i in range(5):
            bench_app.sh.apply_async(args=(f"warm{i}", False))
        wait_drained(5, a.timeout)
        time.sleep(1.0)

        submit_ns = {}
        call_ms = []
        ids = [f"l{i}" for i in range(n)]
        t0 = time.perf_counter()
        for i, jid in enumerate(ids):
            target = t0 + i / rate
            d = target - time.perf_counter()
            if d > 0:
                time.sleep(d)
            s = time.time_ns()
            c0 = time.perf_counter_ns()
            bench_app.sh.apply_async(args=(jid, True))
            call_ms.append((time.perf_counter_ns() - c0) / 1e6)
            submit_ns[jid] = s
        behind_s = time.perf_counter() - (t0 + (n - 1) / rate)
        wait_drained(n + 5, a.timeout)
        stamps = BOOK.hgetall(bench_app.K_STAMPS)
    finally:
        w.stop()
    lat = sorted(
        (int(stamps[jid.encode()]) - submit_ns[jid]) / 1e6 for jid in ids if jid.encode() in stamps
    )
    call_ms.sort()
    eo = exactly_once(n + 5)
    return {
        "workload": "latency", "system": "celery", "rate": rate, "samples": n, "concurrency": c,
        "submit_to_spawn_ms": {
            "p50": r3(pct(lat, 0.5)), "p90": r3(pct(lat, 0.9)),
            "p99": r3(pct(lat, 0.99)), "max": r3(pct(lat, 1.0)),
        },
        "submit_call_ms_p50": r3(pct(call_ms, 0.5)),
        "submit_finished_behind_schedule_s": r3(max(0.0, behind_s)),
        **eo,
        "versions": versions(),
    }


def submit_rate(a):
    n = a.jobs
    flush()
    sig = bench_app.sh
    if a.mode == "single":
        k = max(1, a.clients)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        warmed = threading.Barrier(k + 1)
        go = threading.Event()
        errors = []

        def client(idx, count):
            try:
                # Warm this thread's pooled producer/connection (queue declared) off the clock.
                sig.apply_async(args=(f"warm{idx}", False))
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            warmed.wait()
            go.wait()
            try:
                for j in range(count):
                    sig.apply_async(args=(f"s{idx}-{j}", False))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i, s), daemon=True) for i, s in enumerate(shares)]
        for t in threads:
            t.start()
        warmed.wait()
        BROKER.delete(bench_app.QUEUE)  # drop the warm-up messages
        t = time.perf_counter()
        go.set()
        for th in threads:
            th.join()
        secs = time.perf_counter() - t
        if errors:
            raise errors[0]
    else:
        k = 1
        bs = max(1, a.batch_size)
        group(sig.s("warm", False) for _ in range(1)).apply_async()
        BROKER.delete(bench_app.QUEUE)
        t = time.perf_counter()
        for start in range(0, n, bs):
            group(sig.s(f"b{i}", False) for i in range(start, min(n, start + bs))).apply_async()
        secs = time.perf_counter() - t
    q, _ = broker_pending()
    BROKER.delete(bench_app.QUEUE)  # purge
    out = {
        "workload": "submit-rate", "system": "celery", "mode": a.mode, "jobs": n,
        "clients": k, "seconds": r3(secs), "per_s": round(n / secs, 1),
        "queued_after": q, "lost": max(0, n - q), "duplicated": max(0, q - n),
    }
    if a.mode == "batch":
        out["batch_size"] = a.batch_size
    out["versions"] = versions()
    flush()
    return out


def worker_start(a):
    ms = []
    stop_ms = []
    for i in range(a.runs):
        flush()
        w = Worker(a.concurrency).start()
        try:
            ready = w.wait_ready(a.timeout)
            ms.append((ready - w.launch_ns) / 1e6)
        finally:
            # Only the start is measured and no task is in flight, so the worker is killed
            # rather than warm-shut-down: its 1.7-2.6 s shutdown made 20 runs take a minute.
            t = time.perf_counter()
            w.kill()
            stop_ms.append((time.perf_counter() - t) * 1000)
    flush()
    s = sorted(ms)
    return {
        "workload": "worker-start", "system": "celery", "runs": a.runs, "concurrency": a.concurrency,
        "ms": {"p50": r3(pct(s, 0.5)), "min": r3(s[0]), "max": r3(s[-1])},
        "all_ms": [r3(x) for x in ms],
        "kill_ms_p50": r3(pct(sorted(stop_ms), 0.5)),
        "lost": 0, "duplicated": 0,
        "versions": versions(),
    }


WORKLOADS = {
    "burn-down": burn_down,
    "latency": latency,
    "submit-rate": submit_rate,
    "worker-start": worker_start,
}


def main():
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        out = WORKLOADS[ARGS.workload](ARGS)
        code = 0
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        msg = f"{type(e).__name__}: {e}"
        log("error:", msg)
        out = {"workload": ARGS.workload, "system": "celery", "error": msg}
        code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
    finally:
        stop_all_workers()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
