"""Queues burn-down jobs j<start>..j<end-1> for peer.py, `group(...).apply_async()` a chunk at a
time: `enqueue.py <start> <end> <chunk>`, run with the venv's python and the CELERY_BENCH_*
environment peer.py sets. peer.py runs a few of these side by side because Celery's client
queues ~1 000 messages/s per Python process, which made queueing 20 000 jobs take longer
than draining them. Queueing is not timed; only the drain is.
"""

import sys

from celery import group

import app as bench_app


def main():
    start, end, chunk = (int(x) for x in sys.argv[1:4])
    for lo in range(start, end, chunk):
        group(bench_app.sh.s(f"j{i}") for i in range(lo, min(end, lo + chunk))).apply_async()


if __name__ == "__main__":
    main()
