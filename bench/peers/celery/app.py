"""The Celery app the bench measures (imported by the worker as `celery -A app` and by peer.py).

Settings follow /work/shared/research/peers-measured.md: Redis broker, late acks,
prefetch 1, json, result backend disabled. The one task runs the same thing a rota step
does (`sh -c true` with piped output) and then records exactly-once bookkeeping in a
separate Redis db in ONE pipelined round trip: SADD id + INCR (plus, in the same round
trip, SET NX of the first task-start stamp and, for latency runs, the pre-spawn stamp).

Environment (set by peer.py for the worker child):
  CELERY_BENCH_BROKER  broker URL        (default redis://127.0.0.1:6379/5)
  CELERY_BENCH_BOOK    bookkeeping URL   (default redis://127.0.0.1:6379/6)
"""

import os
import subprocess
import time

import redis
from celery import Celery
from celery.signals import worker_ready

BROKER_URL = os.environ.get("CELERY_BENCH_BROKER", "redis://127.0.0.1:6379/5")
BOOK_URL = os.environ.get("CELERY_BENCH_BOOK", "redis://127.0.0.1:6379/6")

# Bookkeeping keys (in the bookkeeping db).
K_IDS = "bench:ids"            # SET of job ids that ran
K_COUNT = "bench:count"        # INCR per execution
K_FIRST = "bench:first_start"  # wall ns of the first task start (SET NX)
K_STAMPS = "bench:stamps"      # HASH id -> wall ns just before spawning sh (latency runs)
K_READY = "bench:ready"        # wall ns when the worker_ready signal fired
K_READY_CPU = "bench:ready_cpu_ms"  # worker main process CPU (ms) at worker_ready

QUEUE = "celery"

app = Celery("rota_bench_peer", broker=BROKER_URL)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    # Only matters on broker connection loss; set to silence the 5.x startup warning.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_hijack_root_logger=False,
)

_book = None
_book_pid = None


def book():
    """A bookkeeping client per process (pool children are forked)."""
    global _book, _book_pid
    if _book is None or _book_pid != os.getpid():
        _book = redis.Redis.from_url(BOOK_URL)
        _book_pid = os.getpid()
    return _book


@app.task(name="bench.sh")
def sh(job_id, stamp=False):
    t = time.time_ns()  # just before spawning sh
    subprocess.run(["sh", "-c", "true"], capture_output=True)
    p = book().pipeline(transaction=False)
    p.sadd(K_IDS, job_id)
    p.incr(K_COUNT)
    p.set(K_FIRST, t, nx=True)
    if stamp:
        p.hset(K_STAMPS, job_id, t)
    p.execute()


@worker_ready.connect
def _on_ready(sender=None, **_):
    t = time.time_ns()
    cpu = os.times()
    p = book().pipeline(transaction=False)
    p.set(K_READY, t)
    p.set(K_READY_CPU, (cpu.user + cpu.system) * 1000.0)
    p.execute()
