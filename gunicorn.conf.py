"""The gunicorn settings PrefLoop ships: `scripts/run`, the Dockerfile and docker-compose start gunicorn with this file,
and `benchmarks/load.py` measures the same file (its own flags only override what it varies).

- gthread workers, one per core this process may use, 4 threads each: a request spends part of its time waiting
  on Postgres, and the threads overlap those waits. Capped at 8 workers: each thread keeps a database connection
  (CONN_MAX_AGE), and 8 × 4 stays well under Postgres's default 100 connections with the Celery workers beside.
- keep-alive 0 (close after each response, as nginx's default upstream does): a gthread worker serves every request
  of a connection it accepted, so with keep-alive on, 32 annotators' persistent connections were spread unevenly
  over the workers and some annotators got 3× the cycles of others (issue 13). Closed connections let each
  request go to whichever worker accepts first. Behind a proxy that keeps client connections alive, nothing is
  lost: the proxy's upstream connections are the ones closed.

WEB_CONCURRENCY (gunicorn's usual variable) and PREFLOOP_WEB_THREADS override the worker and thread counts.
"""

from __future__ import annotations

import os

_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

wsgi_app = "webapp.wsgi:application"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY") or min(_CORES, 8))
threads = int(os.environ.get("PREFLOOP_WEB_THREADS") or 4)
keepalive = 0
# A request is bounded well below this (database connect 3 s, broker 2 s); a worker stuck longer is restarted.
timeout = 120
graceful_timeout = 15
accesslog = "-"  # one line per request on stdout (the benchmark writes it to a file instead)
