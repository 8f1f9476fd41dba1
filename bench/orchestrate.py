#!/usr/bin/env python3
"""The orchestrator behind bench/run: runs every workload for rota and for each peer
alternately, in one run, N rounds; prints a table; writes bench/results/latest.json.
rota runs twice where a workload has a PostgreSQL row: as "rota" (SQLite) and as "rota-pg"
(`rota-bench --backend postgres`: a database of its own on the PostgreSQL server that
graphile-worker uses too, made and dropped by the harness).
With --baseline REV the two systems are REV's rota and this tree's, one round per pair, and
the result goes to bench/results/compare/<name>.json (building REV: baseline.py).

It owns scheduling, parsing and summarising. It does not measure anything itself: each run
is a child process (rota-bench, or a peer's harness) that prints one JSON object with its
figures and exactly-once counts ("lost", "duplicated"; "reexecuted" where re-runs are
expected). Any lost or duplicated job makes the exit status 1; a run that errors makes it 3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import baseline

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
# Where bench/run built this tree's binaries: with the feature rota-cli/test-hooks (the
# hidden --bench-ballast-mib flag), into a target directory of their own so they are never
# mistaken for the shipped build (bench/run runs in ROOT: a relative path is relative to it).
BENCH_TARGET = ROOT / os.environ.get("ROTA_BENCH_TARGET", "target/bench-hooks")
TARGET_RELEASE = BENCH_TARGET / "release"
# How the measured rota binaries were built, in the output and in every JSON written.
BUILD_LABEL = f"release + feature rota-cli/test-hooks (bench hooks), built into {BENCH_TARGET / 'release'}"
ROTA = TARGET_RELEASE / "rota"
ROTA_BENCH = TARGET_RELEASE / "rota-bench"
CELERY_PY = BENCH / ".peers" / "celery-venv" / "bin" / "python"
CELERY_PEER = BENCH / "peers" / "celery" / "peer.py"
GRAPHILE_PEER = BENCH / "peers" / "graphile" / "peer.mjs"
BASELINE_CACHE = BENCH / ".baseline"
COMPARE = RESULTS / "compare"

# The rota binaries (rota, rota-bench) of each rota-side system: this tree's as "rota", and
# with --baseline REV's as "old" and this tree's again as "new".
BINARIES: dict[str, tuple[Path, Path]] = {"rota": (ROTA, ROTA_BENCH), "rota-pg": (ROTA, ROTA_BENCH),
                                          "rota-tls": (ROTA, ROTA_BENCH), "new": (ROTA, ROTA_BENCH)}
# Workloads that measure the machine, not rota: no exactly-once counts, no peer.
MACHINE_KEYS = ("spawn-probe-c8", "spawn-probe-c2", "limits")

SYSTEMS = ("rota", "rota-pg", "rota-tls", "celery", "graphile")
PEERS = ("celery", "graphile")
# The workloads with a PostgreSQL row ("rota-pg"), run in the same rounds as the others.
# `--only KEY-pg` runs KEY on rota-pg and its partners: graphile-worker (the peer on the
# same PostgreSQL) and rota on SQLite. soak-pg runs once, after the rounds.
PG_KEYS = ("burn-down-c8", "burn-down-c2", "server-capacity", "latency-idle", "latency-50pct",
           "submit-single", "submit-batch", "log-capture-big", "log-capture-many", "log-capture-burn")
PG_PARTNERS = ("rota-pg", "graphile", "rota")
# The PostgreSQL server the rota-pg runs make their databases on (one per measurement,
# dropped after it; never this URL's own database). rota-bench reads it from
# ROTA_TEST_POSTGRES_URL, the test kit's variable: its TestDb makes those databases.
PG_SERVER = os.environ.get("ROTA_BENCH_POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
# The workloads with a TLS row ("rota-tls": `rota-bench --tls`, rota over HTTPS with a CA of
# the run's own, SQLite), in the same rounds. rota and the peers are otherwise measured the
# same way, over plain HTTP on loopback; this row shows what HTTPS costs on top.
TLS_KEYS = ("burn-down-c8", "server-capacity", "latency-idle")
# Each ratio column: (system, against). "rota-pg_vs_rota" is PostgreSQL against SQLite,
# "rota-tls_vs_rota" HTTPS against plain HTTP.
COMPARISONS = (("rota", "celery"), ("rota", "graphile"), ("rota-pg", "celery"), ("rota-pg", "graphile"),
               ("rota-pg", "rota"), ("rota-tls", "rota"))

# Why a workload has no peer figure: stated in latest.json next to the rota figure.
NOT_APPLICABLE = {
    "burn-down-1g": "the variant loads rota's own worker with 1 GiB of RSS to show its spawn path "
    "(posix_spawn) does not slow down; the peers' worker processes have no such knob",
    "server-capacity": "the peers have no wire protocol separate from their worker runtime: "
    "Celery workers talk to Redis and graphile workers to PostgreSQL directly, so there is no "
    "coordinating server whose capacity could be measured alone",
    "failure-recovery": "with their documented at-least-once settings neither peer re-runs a killed "
    "worker's jobs within minutes: Celery (acks_late, Redis broker) redelivers unacked messages after "
    "visibility_timeout (1 hour by default), graphile-worker releases a dead worker's locked jobs after "
    "4 hours",
    "log-capture": "neither peer captures a job's output centrally: Celery and graphile-worker leave "
    "stdout to the worker process's own log, so there is no 'server holds all of it' to time",
    "soak": "rota only by the issue's definition (--full)",
    "soak-pg": "rota only: the issue asks whether rota's own tables level off under steady load",
}

# Higher-is-better or lower-is-better for the figures that go into tables and ratios.
HIGHER, LOWER = "higher", "lower"


class Config:
    """Sizes for one mode: default (the issue's sizes), --quick, --full."""

    def __init__(self, mode: str, rounds: int | None) -> None:
        quick = mode == "quick"
        self.mode = mode
        self.rounds = rounds or (1 if quick else 3)
        self.burn_jobs = 2_000 if quick else 20_000
        # The c=2 variant drains 4x slower per job on every system; half the jobs still give
        # each system 15-40 s of steady state, and keep the default run inside 30 minutes
        # on a slow day (the peers' c=2 runs were a third of the whole run at 20 000).
        self.burn_jobs_c2 = 1_000 if quick else 10_000
        self.ballast_mib = 1024
        self.capacity_jobs = 10_000 if quick else 50_000
        self.capacity_clients = 64
        self.latency_samples = 60 if quick else 200
        self.idle_rate = 20.0
        self.submit_jobs_single = 1_000 if quick else 5_000
        self.submit_jobs_batch = 5_000 if quick else 10_000
        self.start_runs = 3 if quick else 20
        self.recovery_in_flight = 50
        self.log_big_mb = 50 if quick else 200
        self.log_many = 20 if quick else 100
        self.log_burn_jobs = 1_000 if quick else 5_000
        # soak-pg: 10 one-minute intervals with --full, 3 by default (the first has nothing
        # past retention to prune yet, so 3 show whether the size stays put), 2 × 30 s quick.
        self.soak_pg_intervals = 10 if mode == "full" else 2 if quick else 3
        self.soak_pg_interval_s = 30 if quick else 60
        self.run_timeout = 900


class Runner:
    """Runs one child per measurement, keeps its stderr in a per-run log folder."""

    def __init__(self, log_dir: Path, verbose: bool, label: str = "round") -> None:
        self.log_dir = log_dir
        self.verbose = verbose
        self.label = label
        self.records: list[dict] = []
        self.seq = 0

    def run(self, round_no: int, key: str, system: str, argv: list[str], timeout: float) -> dict:
        self.seq += 1
        log = self.log_dir / f"{self.seq:03d}-{key}-{system}.log"
        started = time.monotonic()
        say(f"  {self.label} {round_no}  {key:<22} {system:<9} ", end="")
        try:
            proc = subprocess.run(
                argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "wb"), timeout=timeout, check=False
            )
            out = proc.stdout.decode(errors="replace").strip().splitlines()
            if proc.returncode != 0 or not out:
                raise RuntimeError(f"exit {proc.returncode}; see {log.relative_to(ROOT)}")
            result = json.loads(out[-1])
        except (subprocess.TimeoutExpired, RuntimeError, json.JSONDecodeError, OSError) as e:
            result = {"error": str(e)}
        wall = time.monotonic() - started
        record = {"round": round_no, "key": key, "system": system, "argv": [str(a) for a in argv],
                  "wall_s": round(wall, 2), "result": result}
        self.records.append(record)
        say(f"{wall:6.1f}s  {brief(key, result)}")
        return result


def say(msg: str, end: str = "\n") -> None:
    try:
        sys.stdout.write(msg + end)
        sys.stdout.flush()
    except BrokenPipeError:
        # EPIPE-safe: a closed reader must not abort a run that is writing results.
        pass


def dig(obj: dict, path: str):
    """The value at a dotted path; `a|b` tries `a`, then `b` (systems name a figure differently)."""
    if "|" in path:
        for alt in path.split("|"):
            v = dig(obj, alt)
            if v is not None:
                return v
        return None
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


# The figures each workload key reports: (label, JSON path, direction, unit).
FIGURES: dict[str, list[tuple[str, str, str, str]]] = {
    "spawn-probe-c8": [("spawns/s", "per_s", HIGHER, "/s")],
    "spawn-probe-c2": [("spawns/s", "per_s", HIGHER, "/s")],
    "limits": [("SQLite FULL commits/s", "sqlite_full_commits_per_s", HIGHER, "/s"),
               ("SQLite FULL rows/s, 100 per commit", "sqlite_full_batched_rows_per_s", HIGHER, "/s"),
               ("PostgreSQL commits/s", "postgres.commits_per_s", HIGHER, "/s"),
               ("PostgreSQL rows/s, 100 per commit", "postgres.batched_rows_per_s", HIGHER, "/s"),
               ("HTTP RTT p50", "http_rtt_us.p50", LOWER, "µs")],
    "burn-down-c8": [("jobs/s", "per_s", HIGHER, "/s")],
    "burn-down-c2": [("jobs/s", "per_s", HIGHER, "/s")],
    "burn-down-1g": [("jobs/s", "per_s", HIGHER, "/s")],
    "server-capacity": [("jobs/s", "per_s", HIGHER, "/s")],
    "latency-idle": [("p50", "submit_to_spawn_ms.p50", LOWER, "ms"),
                     ("p90", "submit_to_spawn_ms.p90", LOWER, "ms"),
                     ("p99", "submit_to_spawn_ms.p99", LOWER, "ms")],
    "latency-50pct": [("p50", "submit_to_spawn_ms.p50", LOWER, "ms"),
                      ("p90", "submit_to_spawn_ms.p90", LOWER, "ms"),
                      ("p99", "submit_to_spawn_ms.p99", LOWER, "ms")],
    "submit-single": [("jobs/s", "per_s", HIGHER, "/s")],
    "submit-batch": [("jobs/s", "per_s", HIGHER, "/s")],
    "worker-start": [("p50", "launch_to_registered_ms.p50|ms.p50", LOWER, "ms")],
    "failure-recovery": [("kill → all running again", "kill_to_all_rerunning_ms", LOWER, "ms"),
                         ("kill → all succeeded", "kill_to_all_succeeded_ms", LOWER, "ms")],
    "log-capture-big": [("MB/s", "big.mb_per_s", HIGHER, "MB/s")],
    "log-capture-many": [("MB/s", "many.mb_per_s", HIGHER, "MB/s")],
    "log-capture-burn": [("jobs/s while streaming", "burn.with_stream_per_s", HIGHER, "/s"),
                         ("÷ without", "burn.ratio", HIGHER, "×")],
    "soak-pg": [("minute last ÷ minute 1", "soak.last_vs_first", HIGHER, "×"),
                ("jobs/s offered", "soak.rate", HIGHER, "/s"),
                ("minute last ÷ offered", "soak.last_vs_offered", HIGHER, "×"),
                ("backlog at end", "soak.backlog_at_end", LOWER, "jobs"),
                ("stored size last ÷ minute 1", "soak.size_growth.last_vs_first", LOWER, "×"),
                ("stored size last ÷ middle", "soak.size_growth.last_vs_mid", LOWER, "×")],
    "soak": [("minute last ÷ minute 1", "soak.last_vs_first", HIGHER, "×"),
             ("claim p50 at 10k queued", "claim_depth.shallow.max1_ms.p50", LOWER, "ms"),
             ("claim p50 deep", "claim_depth.deep.max1_ms.p50", LOWER, "ms"),
             ("idle worker RSS", "memory.worker_idle_rss_mib", LOWER, "MiB"),
             ("server RSS, finished jobs stored", "memory.server_rss_mib.finished", LOWER, "MiB")],
}


def brief(key: str, result: dict) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    parts = []
    for label, path, _, unit in FIGURES.get(key, []):
        v = dig(result, path)
        if isinstance(v, (int, float)):
            parts.append(f"{label} {fmt(v)}{'' if unit in ('/s', '×') else ' ' + unit}")
    lost, dup = result.get("lost"), result.get("duplicated")
    if lost or dup:
        parts.append(f"LOST {lost} DUPLICATED {dup}")
    return ", ".join(parts)


def fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# With --baseline --backend postgres: the old and new sides run on PostgreSQL.
COMPARE_ON_PG = False


def rota_cmd(sub: str, *args, side: str = "rota") -> list[str]:
    rota, rota_bench = BINARIES[side]
    on_pg = side == "rota-pg" or (COMPARE_ON_PG and side in ("old", "new"))
    backend = ["--backend", "postgres"] if on_pg else ["--tls"] if side == "rota-tls" else []
    return [str(rota_bench), sub, "--rota", str(rota), *map(str, args), *backend]


def node_binary() -> str | None:
    found = sorted(glob.glob(str(BENCH / ".peers" / "node22" / "**" / "bin" / "node"), recursive=True))
    return found[0] if found else None


def peer_cmd(system: str, sub: str, *args) -> list[str]:
    if system == "celery":
        return [str(CELERY_PY), str(CELERY_PEER), sub, *map(str, args)]
    node = node_binary() or "node"
    return [node, str(GRAPHILE_PEER), sub, *map(str, args)]


def command(system: str, sub: str, rota_args: list, peer_args: list | None = None) -> list[str]:
    if system in BINARIES:
        return rota_cmd(sub, *rota_args, side=system)
    return peer_cmd(system, sub, *(rota_args if peer_args is None else peer_args))


def plan_round(cfg: Config, systems: tuple[str, ...], order_shift: int, only: set[str] | None,
               compare: bool = False):
    """The round's runs in order, as (key, system, argv-or-callable). Peers alternate with
    rota inside each workload, and the order rotates between rounds so no system always
    runs first (on a cold cache) or last (on a warm one).

    With `compare` (--baseline) the systems are "old" and "new": every rota workload runs on
    both sides, in turn, and the machine workloads only when --only names them (then on both
    sides too, as a control: the same probe should give a ratio near 1)."""

    def rotate(seq):
        seq = list(seq)
        if not seq:
            return seq
        k = order_shift % len(seq)
        return seq[k:] + seq[:k]

    def want(key):
        return only is None or any(key.startswith(o) for o in only)

    # rota's sides for the rota-only workloads: SQLite (or old and new), never rota-pg or rota-tls.
    rota_sides = [s for s in systems if s in BINARIES and s not in ("rota-pg", "rota-tls")]

    def on(key, capable):
        """The systems of `capable` that run `key` this round: all of them for a plain
        --only match; rota-pg and its partners for a KEY-pg match; rota-pg only for PG_KEYS,
        rota-tls only for TLS_KEYS."""
        run = [s for s in capable if s in systems and (s != "rota-pg" or key in PG_KEYS)
               and (s != "rota-tls" or key in TLS_KEYS)]
        if only is None:
            return rotate(run)
        chosen: set[str] = set()
        for o in only:
            if o.endswith("-pg") and key in PG_KEYS and key.startswith(o[:-3]):
                chosen |= set(PG_PARTNERS)
            elif key.startswith(o):
                chosen |= set(run)
        return rotate([s for s in run if s in chosen])

    def rota_steps(key, sub, *args):
        return [(key, s, rota_cmd(sub, *args, side=s)) for s in rotate(rota_sides)]

    def machine_steps(key, argv_of):
        if not compare:
            return [(key, "machine", argv_of(ROTA_BENCH))]
        return [(key, s, argv_of(BINARIES[s][1])) for s in rotate(rota_sides)]

    steps = []
    # --only limits brings the spawn probes along (as it always did); each probe can also be
    # named alone.
    if only is not None or not compare:
        for c, jobs in ((8, cfg.burn_jobs), (2, cfg.burn_jobs_c2)):
            key = f"spawn-probe-c{c}"
            if want("limits") or want(key):
                steps += machine_steps(key, lambda rb, c=c, jobs=jobs: [
                    str(rb), "spawn-probe", "--jobs", str(jobs), "--parallel", str(c)])
        if want("limits"):
            secs = 1 if cfg.mode == "quick" else 3
            if compare:
                steps += rota_steps("limits", "limits", "--seconds", secs)
            else:
                steps.append(("limits", "machine", rota_cmd("limits", "--seconds", secs)))
    for c in (8, 2):
        key = f"burn-down-c{c}"
        jobs = cfg.burn_jobs if c == 8 else cfg.burn_jobs_c2
        for s in on(key, systems):
            steps.append((key, s, command(s, "burn-down", ["--jobs", jobs, "--concurrency", c])))
    if want("burn-down-1g"):
        steps += rota_steps("burn-down-1g", "burn-down", "--jobs", cfg.burn_jobs, "--concurrency", 8,
                            "--ballast-mib", cfg.ballast_mib)
    for s in on("server-capacity", [*rota_sides, "rota-pg", "rota-tls"]):
        steps.append(("server-capacity", s, rota_cmd("server-capacity", "--clients", cfg.capacity_clients,
                                                     "--jobs", cfg.capacity_jobs, side=s)))
    for s in on("latency-idle", systems):
        steps.append(("latency-idle", s, command(s, "latency", ["--samples", cfg.latency_samples, "--rate",
                                                                 cfg.idle_rate, "--concurrency", 8])))
    for s in on("latency-50pct", systems):
        # The rate is half of this system's own burn-down (c=8) in this round: decided
        # when the run starts, so it is a callable. Old and new get the same rate (the old
        # side's), so the comparison is of latency at one offered load.
        rate_of = "old" if compare else s
        steps.append(("latency-50pct", s, lambda s=s, rate_of=rate_of: command(s, "latency", [
            "--samples", cfg.latency_samples * 2, "--rate", f"{half_rate(rate_of):.1f}", "--concurrency", 8])))
    for mode in ("single", "batch"):
        key = f"submit-{mode}"
        n = cfg.submit_jobs_single if mode == "single" else cfg.submit_jobs_batch
        for s in on(key, systems):
            steps.append((key, s, command(s, "submit-rate", ["--mode", mode, "--jobs", n, "--clients", 8])))
    for s in on("worker-start", systems):
        steps.append(("worker-start", s, command(s, "worker-start", ["--runs", cfg.start_runs])))
    if want("failure-recovery"):
        steps += rota_steps("failure-recovery", "failure-recovery", "--jobs", cfg.recovery_in_flight)
    for mode, args in (("big", ("--mb", cfg.log_big_mb)), ("many", ("--steps", cfg.log_many)),
                       ("burn", ("--jobs", cfg.log_burn_jobs))):
        key = f"log-capture-{mode}"
        for s in on(key, [*rota_sides, "rota-pg"]):
            steps.append((key, s, rota_cmd("log-capture", "--mode", mode, *args, side=s)))
    return steps


_LAST_BURN: dict[str, float] = {}


def half_rate(system: str) -> float:
    # Falls back to a modest rate when the burn-down did not run (--only) or failed.
    return max(_LAST_BURN.get(system, 200.0) / 2.0, 1.0)


def summarise(records: list[dict]) -> dict:
    """Median and range of each figure per workload key and system, over rounds."""
    out: dict = {}
    for key, figures in FIGURES.items():
        for rec in (r for r in records if r["key"] == key):
            entry = out.setdefault(key, {}).setdefault(rec["system"], {"runs": [], "figures": {}})
            entry["runs"].append(rec["result"])
        for system, entry in out.get(key, {}).items():
            for label, path, better, unit in figures:
                vals = [dig(r, path) for r in entry["runs"] if "error" not in r]
                vals = [v for v in vals if isinstance(v, (int, float))]
                if vals:
                    entry["figures"][label] = {"median": statistics.median(vals), "min": min(vals),
                                               "max": max(vals), "n": len(vals), "unit": unit, "better": better}
    return out


def paired(records: list[dict], key: str, path: str, a: str, b: str) -> list[tuple[int, float, float]]:
    """(round, a's figure, b's figure) for every round in which both systems ran `key` and
    reported a positive figure: each ratio (rota ÷ peer, new ÷ old) is built from these."""
    out = []
    for rnd in sorted({r["round"] for r in records}):
        va = next((dig(r["result"], path) for r in records
                   if r["round"] == rnd and r["key"] == key and r["system"] == a), None)
        vb = next((dig(r["result"], path) for r in records
                   if r["round"] == rnd and r["key"] == key and r["system"] == b), None)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va > 0 and vb > 0:
            out.append((rnd, va, vb))
    return out


def pair_ratios(records: list[dict]) -> dict:
    """rota (and rota-pg) vs each peer, and rota-pg vs rota, computed within each round (pair
    by pair) and then summarised: 'advantage' > 1 means the first is better (faster, or lower
    latency). Keys: rota_vs_celery, rota-pg_vs_graphile, rota-pg_vs_rota, ..."""
    out: dict = {}
    rounds = sorted({r["round"] for r in records})
    for key, figures in FIGURES.items():
        for label, path, better, _ in figures:
            for system, peer in COMPARISONS:
                per_round = [a / b if better == HIGHER else b / a
                             for _, a, b in paired(records, key, path, system, peer)]
                if per_round:
                    out.setdefault(key, {}).setdefault(label, {})[f"{system}_vs_{peer}"] = {
                        "advantage_median": statistics.median(per_round), "min": min(per_round),
                        "max": max(per_round), "per_round": per_round}
        # Burn-downs against the spawn ceiling at the same parallelism, same round.
        if key.startswith("burn-down-c") or key == "burn-down-1g":
            c = "8" if key in ("burn-down-c8", "burn-down-1g") else "2"
            for system in SYSTEMS:
                per_round = []
                for rnd in rounds:
                    a = next((dig(r["result"], "per_s") for r in records
                              if r["round"] == rnd and r["key"] == key and r["system"] == system), None)
                    b = next((dig(r["result"], "per_s") for r in records
                              if r["round"] == rnd and r["key"] == f"spawn-probe-c{c}"), None)
                    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
                        per_round.append(a / b)
                if per_round:
                    out.setdefault(key, {}).setdefault("÷ spawn probe", {})[system] = {
                        "median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
                        "per_round": per_round}
    return out


def exactly_once(records: list[dict]) -> dict:
    lost = sum(int(r["result"].get("lost") or 0) for r in records)
    dup = sum(int(r["result"].get("duplicated") or 0) for r in records)
    rex = sum(int(r["result"].get("reexecuted") or 0) for r in records)
    errors = [f"round {r['round']} {r['key']} {r['system']}: {r['result']['error']}" for r in records
              if "error" in r["result"]]
    bad = [f"round {r['round']} {r['key']} {r['system']}: lost {r['result'].get('lost')}, "
           f"duplicated {r['result'].get('duplicated')}" for r in records
           if (r["result"].get("lost") or 0) or (r["result"].get("duplicated") or 0)]
    missing = [f"round {r['round']} {r['key']} {r['system']}" for r in records
               if r["key"] not in MACHINE_KEYS and "error" not in r["result"]
               and ("lost" not in r["result"] or "duplicated" not in r["result"])]
    return {"lost": lost, "duplicated": dup, "reexecuted": rex, "violations": bad, "errors": errors,
            "runs_without_counts": missing}


GOALS = [
    # Issue 19's table. (description, workload key, figure label, comparison, target, against):
    # `against` is the ratio's key for "ratio", the system for "probe", "min" and "max"
    # (None: rota on SQLite). The 10-minute soak and the 1 M-job rows need --full.
    ("shell burn-down c=8 ÷ spawn probe ≥ 0.80 (SQLite)", "burn-down-c8", "÷ spawn probe", "probe", 0.8, "rota"),
    ("shell burn-down c=8 ≥ 3× Celery", "burn-down-c8", "jobs/s", "ratio", 3.0, "rota_vs_celery"),
    ("shell burn-down c=8 ≥ 3.5× graphile-worker", "burn-down-c8", "jobs/s", "ratio", 3.5, "rota_vs_graphile"),
    ("shell burn-down c=2 ÷ spawn probe ≥ 0.60", "burn-down-c2", "÷ spawn probe", "probe", 0.6, "rota"),
    ("burn-down c=8 on PostgreSQL within 10 % of SQLite", "burn-down-c8", "jobs/s", "ratio", 0.9, "rota-pg_vs_rota"),
    ("server capacity ≥ 40 000 jobs/s (SQLite)", "server-capacity", "jobs/s", "min", 40_000, None),
    ("server capacity ≥ 20 000 jobs/s (PostgreSQL)", "server-capacity", "jobs/s", "min", 20_000, "rota-pg"),
    ("idle latency p50 ≤ 1.5 ms (SQLite)", "latency-idle", "p50", "max", 1.5, None),
    ("idle latency p99 ≤ 3 ms (SQLite)", "latency-idle", "p99", "max", 3.0, None),
    ("idle latency p50 ≤ 2.5 ms (PostgreSQL)", "latency-idle", "p50", "max", 2.5, "rota-pg"),
    ("idle latency p99 ≤ 5 ms (PostgreSQL)", "latency-idle", "p99", "max", 5.0, "rota-pg"),
    # 50 % load: the idle goals plus 1 ms, on both backends.
    ("50 % load latency p50 ≤ 2.5 ms (SQLite)", "latency-50pct", "p50", "max", 2.5, None),
    ("50 % load latency p99 ≤ 4 ms (SQLite)", "latency-50pct", "p99", "max", 4.0, None),
    ("50 % load latency p50 ≤ 3.5 ms (PostgreSQL)", "latency-50pct", "p50", "max", 3.5, "rota-pg"),
    ("50 % load latency p99 ≤ 6 ms (PostgreSQL)", "latency-50pct", "p99", "max", 6.0, "rota-pg"),
    ("log capture ≥ 150 MB/s (one 200 MB step)", "log-capture-big", "MB/s", "min", 150.0, None),
    ("log capture ≥ 100 MB/s (100 × 1 MB)", "log-capture-many", "MB/s", "min", 100.0, None),
    ("burn-down while a step streams logs ≥ 0.90× without", "log-capture-burn", "÷ without", "min", 0.9, None),
    ("worker start ≤ 150 ms median", "worker-start", "p50", "max", 150.0, None),
    # Levelled off: the tables' size at the last minute within 5 % of the middle minute's
    # (minute 5 of 10 with --full; the first minute has nothing past retention to prune yet).
    ("PostgreSQL soak: stored size last ÷ middle ≤ 1.05", "soak-pg", "stored size last ÷ middle", "max", 1.05,
     "rota-pg"),
    ("PostgreSQL soak: last minute ≥ 0.9× minute 1", "soak-pg", "minute last ÷ minute 1", "min", 0.9, "rota-pg"),
    # Keeping up with the offered load at all (a slow first minute flatters last ÷ first).
    ("PostgreSQL soak: last minute ≥ 0.9× offered", "soak-pg", "minute last ÷ offered", "min", 0.9, "rota-pg"),
    ("soak minute 10 ≥ 0.9× minute 1 (--full)", "soak", "minute last ÷ minute 1", "min", 0.9, None),
    ("idle worker RSS ≤ 15 MiB (--full)", "soak", "idle worker RSS", "max", 15.0, None),
    ("server RSS with 1 M finished jobs ≤ 150 MiB (--full)", "soak", "server RSS, finished jobs stored", "max",
     150.0, None),
]


def goals(summary: dict, ratios: dict) -> list[dict]:
    out = []
    for desc, key, label, kind, target, against in GOALS:
        if kind == "ratio":
            got = dig(ratios, f"{key}.{label}.{against}.advantage_median") if label in ratios.get(key, {}) else None
        elif kind == "probe":
            got = ratios.get(key, {}).get(label, {}).get(against, {}).get("median")
        else:
            got = summary.get(key, {}).get(against or "rota", {}).get("figures", {}).get(label, {}).get("median")
        if got is None:
            out.append({"goal": desc, "measured": None, "met": None})
            continue
        met = got >= target if kind in ("ratio", "probe", "min") else got <= target
        out.append({"goal": desc, "measured": got, "target": target, "met": met,
                    "of_target": got / target if kind != "max" else target / got})
    return out


def table(summary: dict, ratios: dict, include_peers: bool) -> list[str]:
    """The markdown table: a column per system that ran (rota always; rota-pg and the peers
    when they ran), then the ratio columns whose two systems both ran."""
    ran = {s for per_key in summary.values() for s in per_key}
    shown = [s for s in SYSTEMS if s == "rota" or (s in ran and (include_peers or s not in PEERS))]
    pairs = [(a, b) for a, b in COMPARISONS if a in shown and b in shown and (a, b) != ("rota-pg", "celery")]
    names = {"rota": "rota (SQLite)" if "rota-pg" in shown else "rota", "rota-pg": "rota (PostgreSQL)",
             "rota-tls": "rota (HTTPS)"}
    cols = ["workload", "figure", *[names.get(s, s) for s in shown], *[f"{a} ÷ {b}" for a, b in pairs]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def cell(key, system, label):
        f = summary.get(key, {}).get(system, {}).get("figures", {}).get(label)
        if not f:
            return "n/a" if key in NOT_APPLICABLE and system in PEERS else "–"
        unit = "" if f["unit"] in ("/s", "×") else " " + f["unit"]
        if f["n"] > 1:
            return f"{fmt(f['median'])}{unit} ({fmt(f['min'])}–{fmt(f['max'])})"
        return f"{fmt(f['median'])}{unit}"

    def rcell(key, label, system, peer):
        r = ratios.get(key, {}).get(label, {}).get(f"{system}_vs_{peer}")
        return f"{r['advantage_median']:.2f}×" if r else ""

    for key, figures in FIGURES.items():
        if key not in summary:
            continue
        for label, _, _, _ in figures:
            if key in MACHINE_KEYS:
                row = [key, label, cell(key, "machine", label)] + [""] * (len(shown) - 1 + len(pairs))
            else:
                row = [key, label, *[cell(key, s, label) for s in shown],
                       *[rcell(key, label, a, b) for a, b in pairs]]
            lines.append("| " + " | ".join(row) + " |")
        probe = ratios.get(key, {}).get("÷ spawn probe")
        if probe:
            row = [key, "÷ spawn probe"] + [f"{probe[s]['median']:.2f}" if s in probe else "–" for s in shown]
            row += [""] * len(pairs)
            lines.append("| " + " | ".join(row) + " |")
    return lines


def versions(records: list[dict]) -> dict:
    v: dict = {}
    try:
        v["rota"] = subprocess.run([str(ROTA), "--version"], capture_output=True, text=True).stdout.strip()
        v["rotaBuild"] = BUILD_LABEL
        v["rustc"] = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    for r in records:
        if r["system"] in PEERS and isinstance(r["result"].get("versions"), dict):
            v.setdefault(r["system"], r["result"]["versions"])
        if r["system"] == "rota-pg" and isinstance(r["result"].get("postgres"), dict):
            v.setdefault("postgresql", r["result"]["postgres"].get("server_version"))
    return v


def machine() -> dict:
    info = {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
    except OSError:
        pass
    return info


def git_sha() -> dict:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def update_readme(lines: list[str], cmd: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        say("README.md has no bench markers; not updated")
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    body = f"{begin}\nMeasured {stamp} with `{cmd}` (median and range of the rounds; ratios pair by pair " \
           f"within a round, > 1 means rota is better):\n\n" + "\n".join(lines) + f"\n{end}"
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(head + body + tail)
    tmp.replace(readme)


def parse_args() -> tuple[argparse.Namespace, Config, set[str] | None, dict | None]:
    """Arguments, checked before anything is built: bad usage exits 2 here (bench/run calls
    this with --check first, so a typo costs no build)."""
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one small round (under 3 minutes)")
    mode.add_argument("--full", action="store_true", help="the default rounds plus the 10-minute soak")
    ap.add_argument("--rounds", type=int, help="rounds to run (default 3; 1 with --quick)")
    ap.add_argument("--no-peers", action="store_true", help="measure rota only")
    ap.add_argument("--no-pg", action="store_true", help="no PostgreSQL rows (rota-pg, soak-pg)")
    ap.add_argument("--no-tls", action="store_true", help="no HTTPS row (rota-tls)")
    ap.add_argument("--only", action="append", metavar="WORKLOAD",
                    help="run only workload keys starting with this (repeatable or comma-separated), "
                         "e.g. burn-down-c8; KEY-pg runs KEY on rota-pg, graphile and rota (SQLite), "
                         "e.g. burn-down-pg,latency-idle-pg; soak-pg the PostgreSQL soak")
    ap.add_argument("--update-readme", action="store_true", help="write the table into README.md")
    ap.add_argument("--output", type=Path, help="where the result goes (default bench/results/latest.json)")
    ap.add_argument("--baseline", metavar="REV",
                    help="old binary against new: build git revision REV (cached in bench/.baseline/<sha>/) "
                         "and run it alternately with this tree's build, --pairs times per workload; "
                         "writes bench/results/compare/<name>.json")
    ap.add_argument("--pairs", type=int, metavar="N",
                    help=f"with --baseline: old/new pairs per workload (default and minimum {baseline.MIN_PAIRS})")
    ap.add_argument("--name", help="with --baseline: the compare file's name (default <old sha7>-vs-<new sha7>)")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                    help="with --baseline: the store both sides run on (default sqlite)")
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds is not None and args.rounds < 1:
        ap.error("--rounds: must be at least 1")
    if args.only:
        args.only = [o.strip() for arg in args.only for o in arg.split(",") if o.strip()]
        if not args.only:
            ap.error("--only: name a workload")
        known = set(FIGURES) | {"limits", "log-capture", "burn-down", "latency", "submit", "spawn-probe"}
        for o in args.only:
            pg_row = o.endswith("-pg") and any(k.startswith(o[:-3]) for k in PG_KEYS)
            if not pg_row and not any(k.startswith(o) for k in known):
                ap.error(f"--only {o}: no workload starts with it (known: {', '.join(sorted(FIGURES))}, "
                         f"and KEY-pg for {', '.join(PG_KEYS)})")
            if (pg_row or o == "soak-pg") and args.no_pg:
                ap.error(f"--only {o}: a PostgreSQL row, but --no-pg")
    old = None
    if args.baseline is None:
        for flag, val in (("--pairs", args.pairs), ("--name", args.name),
                          ("--backend", args.backend if args.backend != "sqlite" else None)):
            if val is not None:
                ap.error(f"{flag} needs --baseline REV")
    else:
        for flag, val, why in (("--full", args.full, "the soak runs once, it has no pairs"),
                               ("--rounds", args.rounds, "use --pairs"),
                               ("--update-readme", args.update_readme, "the README shows the peer run"),
                               ("--output", args.output, "use --name")):
            if val:
                ap.error(f"--baseline: {flag} does not apply ({why})")
        if args.pairs is None:
            args.pairs = baseline.MIN_PAIRS
        if args.pairs < baseline.MIN_PAIRS:
            ap.error(f"--pairs {args.pairs}: at least {baseline.MIN_PAIRS} pairs, so a cited median has a range")
        args.no_peers = True
        try:
            old = baseline.resolve(ROOT, args.baseline)
            # Planned now (to check --only), built later by main_baseline.
            BINARIES["old"] = baseline.binaries(BASELINE_CACHE, old["sha"])
            if args.name is not None:
                args.name = baseline.check_name(args.name)
        except baseline.BaselineError as e:
            ap.error(str(e))
    cfg = Config("quick" if args.quick else "full" if args.full else "default",
                 args.pairs if old else args.rounds)
    only = set(args.only) if args.only else None
    systems = systems_of(args, old is not None)
    if only is not None and not plan_round(cfg, systems, 0, only, compare=old is not None) \
            and not (cfg.mode == "full" and "soak" in only) and not soak_pg_wanted(systems, only):
        ap.error(f"--only {','.join(sorted(only))}: nothing to run in this mode")
    if not args.check:
        for p in (ROTA, ROTA_BENCH):
            if not p.exists():
                ap.error(f"{p} is missing: run bench/run (it builds the release binaries first)")
    return args, cfg, only, old


def systems_of(args: argparse.Namespace, compare: bool) -> tuple[str, ...]:
    """The systems of this run: old and new with --baseline; else rota, rota-pg (unless
    --no-pg) and the peers (unless --no-peers)."""
    if compare:
        return baseline.SIDES
    return tuple(s for s in SYSTEMS if not (args.no_pg and s == "rota-pg") and not (args.no_tls and s == "rota-tls")
                 and not (args.no_peers and s in PEERS))


def soak_pg_wanted(systems: tuple[str, ...], only: set[str] | None) -> bool:
    return "rota-pg" in systems and (only is None or any("soak-pg".startswith(o) for o in only))


def redact_url(url: str) -> str:
    """A URL without its password (a bench result is committed)."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def run_rounds(runner: Runner, cfg: Config, systems: tuple[str, ...], only: set[str] | None,
               compare: bool) -> None:
    """Every round (a pair, with --baseline) in order; with --baseline each pair's ratio is
    printed as soon as both sides of it have run."""
    for rnd in range(1, cfg.rounds + 1):
        _LAST_BURN.clear()
        for key, system, argv in plan_round(cfg, systems, rnd - 1, only, compare):
            argv = argv() if callable(argv) else argv
            result = runner.run(rnd, key, system, argv, cfg.run_timeout)
            if key == "burn-down-c8" and isinstance(result.get("per_s"), (int, float)):
                _LAST_BURN[system] = float(result["per_s"])
            sides = {r["system"] for r in runner.records if r["round"] == rnd and r["key"] == key}
            if compare and sides >= set(baseline.SIDES):
                for line in baseline.pair_lines(runner.records, key, rnd, FIGURES, paired, fmt):
                    say(line)


def write_json(path: Path, doc: dict, log_dir: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    (log_dir / "result.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def exit_status(checks: dict) -> int:
    for e in checks["errors"]:
        say(f"error: {e}")
    for v in checks["violations"]:
        say(f"EXACTLY-ONCE VIOLATION: {v}")
    for m in checks["runs_without_counts"]:
        say(f"error: {m}: the run did not report lost/duplicated counts")
    if checks["violations"] or checks["lost"] or checks["duplicated"]:
        return 1
    if checks["errors"] or checks["runs_without_counts"]:
        return 3
    return 0


def rota_version(rota: Path) -> str | None:
    try:
        return subprocess.run([str(rota), "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def main_baseline(args: argparse.Namespace, cfg: Config, only: set[str] | None, old: dict) -> int:
    global COMPARE_ON_PG
    COMPARE_ON_PG = args.backend == "postgres"
    os.environ["ROTA_TEST_POSTGRES_URL"] = PG_SERVER
    # Taken before the runs: the new binaries were built from this tree by bench/run.
    new = git_sha()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    try:
        BINARIES["old"] = baseline.ensure_built(ROOT, BASELINE_CACHE, old["sha"], TARGET_RELEASE, say)
    except baseline.BaselineError as e:
        say(f"error: {e}")
        return 3
    name = args.name or baseline.default_name(COMPARE, old["sha"], new, stamp)
    log_dir = RESULTS / "runs" / f"{stamp}-baseline"
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(log_dir, verbose=False, label="pair")
    started = time.monotonic()
    load_start = baseline.loadavg()
    say(f"rota bench: old {old['sha'][:12]} ({old['rev']}) against new {new['sha'][:12]}"
        f"{' with uncommitted changes' if new['dirty'] else ''} (this tree), on {args.backend}, mode {cfg.mode}, "
        f"{cfg.rounds} pairs per workload, order alternating; logs in {log_dir.relative_to(ROOT)}")
    run_rounds(runner, cfg, baseline.SIDES, only, compare=True)

    records = runner.records
    cmp = baseline.compare(records, FIGURES, paired)
    checks = exactly_once(records)
    lines = baseline.table(cmp, fmt)
    out = COMPARE / f"{name}.json"
    doc = {
        "schema": 1, "kind": "baseline",
        "command": ("bench/run " + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "old": {**old, "binaries": [str(p) for p in BINARIES["old"]]},
        "new": {**new, "binaries": [str(p) for p in BINARIES["new"]]},
        "ratio": "new ÷ old of each figure, pair by pair (one old and one new run back to back, the order "
                 "alternating between pairs); 'better' says which direction is an improvement",
        "machine": {**machine(), "loadavg_start": load_start, "loadavg_end": baseline.loadavg()},
        "versions": {"old": rota_version(BINARIES["old"][0]), "new": rota_version(ROTA), "newBuild": BUILD_LABEL,
                     "rustc": subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()},
        "mode": cfg.mode, "pairs": cfg.rounds, "parameters": dict(vars(cfg)), "backend": args.backend,
        "workloads": cmp, "summary": summarise(records), "exactly_once": checks, "runs": records,
    }
    write_json(out, doc, log_dir)
    say("")
    for line in lines:
        say(line)
    say(f"\nexactly once: lost {checks['lost']}, duplicated {checks['duplicated']}")
    say(f"wrote {out.relative_to(ROOT)} in {doc['duration_s']:.0f}s")
    return exit_status(checks)


def main() -> int:
    args, cfg, only, old = parse_args()
    if args.check:
        return 0
    if old is not None:
        return main_baseline(args, cfg, only, old)
    output = args.output or RESULTS / "latest.json"
    systems = systems_of(args, False)
    # rota-bench --backend postgres makes each measurement's database with the test kit's
    # TestDb, which reads the server from this variable.
    os.environ["ROTA_TEST_POSTGRES_URL"] = PG_SERVER
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS / "runs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(log_dir, verbose=False)
    started = time.monotonic()
    # Taken before the runs: the binaries measured were built from this tree.
    git = git_sha()
    say(f"rota bench: mode {cfg.mode}, {cfg.rounds} round(s), systems {', '.join(systems)}; logs in "
        f"{log_dir.relative_to(ROOT)}")
    run_rounds(runner, cfg, systems, only, compare=False)
    if cfg.mode == "full" and (only is None or "soak" in only):
        # Once, after the rounds: 70 % of rota's last burn-down rate (the soak calibrates
        # itself with a burn-down when there is none).
        rate = ["--rate", f"{0.7 * _LAST_BURN['rota']:.1f}"] if "rota" in _LAST_BURN else []
        runner.run(cfg.rounds, "soak", "rota", rota_cmd("soak", "--minutes", 10, *rate), 3600)
    if soak_pg_wanted(systems, only):
        # The PostgreSQL soak, once after the rounds: 70 % of rota-pg's last burn-down (c=8),
        # retention 1 minute (the leader prunes every 6 s), the tables' sizes each minute.
        rate = ["--rate", f"{0.7 * _LAST_BURN['rota-pg']:.1f}"] if "rota-pg" in _LAST_BURN else []
        secs = cfg.soak_pg_intervals * cfg.soak_pg_interval_s
        runner.run(cfg.rounds, "soak-pg", "rota-pg", rota_cmd(
            "soak", "--parts", "soak", "--minutes", cfg.soak_pg_intervals, "--interval-secs",
            cfg.soak_pg_interval_s, *rate, side="rota-pg"), secs + 1200)

    records = runner.records
    summary = summarise(records)
    ratios = pair_ratios(records)
    checks = exactly_once(records)
    goal_list = goals(summary, ratios)
    lines = table(summary, ratios, include_peers=not args.no_peers)
    cmd = "bench/run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    doc = {
        "schema": 1, "command": cmd.strip(), "mode": cfg.mode, "rounds": cfg.rounds,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1), "git": git, "machine": machine(),
        "versions": versions(records),
        "parameters": {k: v for k, v in vars(cfg).items()},
        "not_applicable": {k: v for k, v in NOT_APPLICABLE.items()} if not args.no_peers else {},
        "postgres_server": redact_url(PG_SERVER) if "rota-pg" in systems else None,
        "summary": summary, "ratios": ratios, "exactly_once": checks, "goals": goal_list,
        "runs": records,
    }
    write_json(output, doc, log_dir)

    say("")
    for line in lines:
        say(line)
    say("")
    for g in goal_list:
        if g["met"] is None:
            say(f"  goal  {g['goal']}: not measured")
        else:
            say(f"  goal  {g['goal']}: {fmt(g['measured'])} ({'met' if g['met'] else 'short'}, "
                f"{g['of_target']:.2f} of target)")
    say(f"\nexactly once: lost {checks['lost']}, duplicated {checks['duplicated']}, "
        f"re-executed (expected, failure workload) {checks['reexecuted']}")
    say(f"wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output} "
        f"in {doc['duration_s']:.0f}s")
    if args.update_readme:
        update_readme(lines, cmd.strip())
    return exit_status(checks)


if __name__ == "__main__":
    sys.exit(main())
