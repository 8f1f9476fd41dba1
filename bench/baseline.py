"""Old binary against new for `bench/run --baseline REV`: resolves REV, builds it once into its
own target directory (bench/.baseline/<full sha>/, git-ignored), and turns the orchestrator's
records of alternating old/new runs into pair ratios, a table and the compare document
(bench/results/compare/<name>.json).

It owns the old side's build cache and the compare figures. It does not schedule or run
measurements (orchestrate.py does, with the same plan and runner as a peer comparison), and it
never touches the working tree: REV is exported with `git archive`, not checked out.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

# The minimum the issue asks of every comparison that is later cited.
MIN_PAIRS = 5
SIDES = ("old", "new")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BaselineError(Exception):
    """REV cannot be resolved or built; the message says which and where to look."""


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def resolve(root: Path, rev: str) -> dict:
    """The commit REV names, or BaselineError (an unknown revision is a usage error)."""
    if not rev or rev.startswith("-"):
        raise BaselineError(f"--baseline {rev!r}: not a git revision")
    p = git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    sha = p.stdout.strip()
    if p.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", sha):
        raise BaselineError(f"--baseline {rev}: unknown revision in {root} (try a SHA, a branch or HEAD~1)")
    log = git(root, "log", "-1", "--format=%s%n%cI", sha).stdout.splitlines()
    return {"rev": rev, "sha": sha, "subject": log[0] if log else None,
            "committed": log[1] if len(log) > 1 else None}


def binaries(cache: Path, sha: str) -> tuple[Path, Path]:
    """Where `rota` and `rota-bench` of `sha` live once built."""
    return cache / sha / "bin" / "rota", cache / sha / "bin" / "rota-bench"


def ensure_built(root: Path, cache: Path, sha: str, seed: Path | None, say) -> tuple[Path, Path]:
    """`rota` and `rota-bench` of `sha`, release profile, built once and kept under
    cache/<sha>/bin. A second run with the same SHA finds them and builds nothing."""
    home = cache / sha
    rota, rota_bench = binaries(cache, sha)
    bin_dir = rota.parent
    home.mkdir(parents=True, exist_ok=True)
    # Two runs against the same REV at once must not build into one target dir together.
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rota.exists() and rota_bench.exists():
            say(f"baseline {sha[:12]}: cached in {rel(root, bin_dir)}")
            return rota, rota_bench
        src, target, log = home / "src", home / "target", home / "build.log"
        shutil.rmtree(src, ignore_errors=True)
        if seed is not None and seed.is_dir() and not (target / "release").exists():
            # Dependencies compile the same for both revisions; copying the new tree's
            # release dir saves most of a cold build. `cp -a` keeps the outputs' old mtimes
            # and the export below is stamped with the time of extraction, so every crate
            # of REV is newer than any seeded output and is rebuilt (checked below).
            say(f"baseline {sha[:12]}: seeding {rel(root, target)} from {rel(root, seed)}")
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(seed), str(target / "release")], check=False)
        export(root, sha, src)
        say(f"baseline {sha[:12]}: building rota and rota-bench (release) into {rel(root, target)}; "
            f"log {rel(root, log)}")
        started = time.monotonic()
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        # Revisions with the feature `test-hooks` keep the bench flags behind it; older ones
        # have them always.
        cli_manifest = (src / "crates" / "cli" / "Cargo.toml").read_text(errors="replace")
        hooks = ["--features", "rota-cli/test-hooks"] if re.search(r"^test-hooks\s*=", cli_manifest, re.M) else []
        with open(log, "wb") as out:
            proc = subprocess.run(["cargo", "build", "--release", "-p", "rota-cli", "-p", "rota-bench", *hooks],
                                  cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise BaselineError(f"building {sha[:12]} failed (exit {proc.returncode}); see {rel(root, log)}")
        text = log.read_text(errors="replace")
        for crate in ("rota-cli", "rota-bench"):
            # A seeded target that cargo wrongly judged fresh would hand back the new tree's
            # binary as the old one: refuse rather than compare a binary with itself.
            if not re.search(rf"Compiling {re.escape(crate)} v", text):
                raise BaselineError(f"building {sha[:12]}: cargo did not compile {crate} from the export "
                                    f"(stale seed?); remove {rel(root, home)} and retry")
        bin_dir.mkdir(exist_ok=True)
        for name in ("rota", "rota-bench"):
            tmp = bin_dir / f".{name}.tmp"
            shutil.copy2(target / "release" / name, tmp)
            tmp.replace(bin_dir / name)
        (home / "built.json").write_text(json.dumps({
            "sha": sha, "build_s": round(time.monotonic() - started, 1),
            "rustc": subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip(),
        }, indent=1) + "\n")
        # The binaries are all a later run needs; the export and the target dir are ~1 GB.
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        say(f"baseline {sha[:12]}: built in {time.monotonic() - started:.0f}s")
        return rota, rota_bench


def export(root: Path, sha: str, dest: Path) -> None:
    """REV's tree (committed files only) into dest, every file stamped with the time of
    extraction (`tar -m`; see ensure_built for why)."""
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", sha], cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-m", "-C", str(dest)], stdin=archive.stdout,
                           stderr=subprocess.PIPE, check=False)
    if archive.stdout is not None:
        archive.stdout.close()
    err = archive.stderr.read().decode(errors="replace").strip() if archive.stderr else ""
    if archive.wait() != 0 or untar.returncode != 0:
        why = err or untar.stderr.decode(errors="replace").strip()
        raise BaselineError(f"exporting {sha[:12]} (git archive | tar) failed: {why}")


def rel(root: Path, p: Path) -> str:
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def check_name(name: str) -> str:
    name = name[:-5] if name.endswith(".json") else name
    if not NAME_RE.match(name):
        raise BaselineError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (no '/')")
    return name


def default_name(out_dir: Path, old_sha: str, new: dict, stamp: str) -> str:
    name = f"{old_sha[:7]}-vs-{new['sha'][:7]}{'-dirty' if new['dirty'] else ''}"
    # A default name never replaces an earlier comparison someone may already cite.
    return f"{name}-{stamp}" if (out_dir / f"{name}.json").exists() else name


def verdict(better: str, median: float, lo: float, hi: float) -> str:
    """In words, from the better direction: 'new better by 3.1 %', and whether the pairs agree."""
    good = median >= 1 if better == "higher" else median <= 1
    pct = abs(median - 1) * 100
    words = "no change" if pct < 0.05 else f"new {'better' if good else 'worse'} by {pct:.1f} %"
    if lo < 1 < hi:
        words += " (pairs disagree: range spans 1)"
    return words


def compare(records: list[dict], figures: dict, paired) -> dict:
    """Per workload and figure: every pair's figures and ratio new ÷ old, the median ratio, its
    range, and which direction is better. `paired` is the orchestrator's pairing of two
    systems' runs within each round (one round is one pair here)."""
    out: dict = {}
    for key, figs in figures.items():
        runs = [r for r in records if r["key"] == key]
        if not runs:
            continue
        for label, path, better, unit in figs:
            done = {rnd: (old, new) for rnd, old, new in paired(records, key, path, "old", "new")}
            pairs = []
            for rnd in sorted({r["round"] for r in runs}):
                mine = [r for r in runs if r["round"] == rnd]
                old, new = done.get(rnd, (None, None))
                # An incomplete pair (a side failed) stays listed; its error is in "runs".
                pairs.append({"pair": rnd, "order": [r["system"] for r in mine], "old": old, "new": new,
                              "ratio": new / old if old else None,
                              "wall_s": round(sum(r["wall_s"] for r in mine), 1)})
            ratios = [p["ratio"] for p in pairs if p["ratio"] is not None]
            entry = {"better": better, "unit": unit, "path": path, "n": len(ratios), "pairs": pairs}
            if ratios:
                med, lo, hi = statistics.median(ratios), min(ratios), max(ratios)
                entry.update({
                    "ratio_new_over_old": {"median": med, "min": lo, "max": hi},
                    "old_median": statistics.median(old for old, _ in done.values()),
                    "new_median": statistics.median(new for _, new in done.values()),
                    "verdict": verdict(better, med, lo, hi),
                })
            out.setdefault(key, {})[label] = entry
    return out


def pair_lines(records: list[dict], key: str, rnd: int, figures: dict, paired, fmt) -> list[str]:
    """What is printed as soon as both sides of one pair have run."""
    lines = []
    for label, path, better, unit in figures.get(key, []):
        got = [(old, new) for r, old, new in paired(records, key, path, "old", "new") if r == rnd]
        u = "" if unit in ("/s", "×") else " " + unit
        if got:
            old, new = got[0]
            lines.append(f"  pair {rnd}  {key:<22} {label}: old {fmt(old)}{u}, new {fmt(new)}{u}, "
                         f"new ÷ old {new / old:.3f} ({better} is better)")
        else:
            lines.append(f"  pair {rnd}  {key:<22} {label}: no ratio (a side failed or reported nothing)")
    return lines


def table(cmp: dict, fmt) -> list[str]:
    cols = ["workload", "figure", "old", "new", "new ÷ old (median)", "range", "better", "verdict"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for key, figs in cmp.items():
        for label, e in figs.items():
            u = "" if e["unit"] in ("/s", "×") else " " + e["unit"]
            r = e.get("ratio_new_over_old")
            if r is None:
                row = [key, label, "–", "–", "–", "–", e["better"], f"no complete pair ({e['n']})"]
            else:
                row = [key, label, f"{fmt(e['old_median'])}{u}", f"{fmt(e['new_median'])}{u}",
                       f"{r['median']:.3f}", f"{r['min']:.3f}–{r['max']:.3f}", e["better"],
                       f"{e['verdict']}, {e['n']} pairs"]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def loadavg() -> list[float] | None:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None
