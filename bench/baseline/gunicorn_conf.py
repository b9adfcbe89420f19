"""gunicorn settings of the baseline: the documented production recommendation, (2 x cores) + 1 sync workers."""

import multiprocessing

workers = 2 * multiprocessing.cpu_count() + 1
worker_class = "sync"
timeout = 60
keepalive = 5
accesslog = None
loglevel = "warning"


def on_starting(server):  # type: ignore[no-untyped-def]
    from bench.baseline.app import engine, init_db

    init_db()   # create the tables once, in the master, before the workers fork
    engine.dispose()   # no connection may cross the fork
