"""A stop the user asked for (SIGINT, SIGTERM), as the steps of a running job see it.

A job's signal handler (pipeline/lifecycle.py) only calls `request_stop()`;
the steps that take long look at `stop_requested()` between their units of
work and end early but normally, so that the pipeline still runs to its
end: the writers' recorders flush what was delivered, the sync state is
folded, the failure records and the summary are written.

- The writers (transforms/delivery/in_flight.py) start no new contact and
  no new request of a contact once a stop is requested; a request already
  sent gets its answer, one waiting on a retry is not retried, and one
  waiting for its slot under the rate limit is not sent
  (transforms/loops/client.py raises `StopRequested`).
- The archive reader (transforms/segment/read.py) opens no new file and
  reads no further chunk.

`pause(seconds)` is a sleep that ends early when a stop is requested, for
waits such as a retry's backoff.

Beam's in-process runner (the default for every batch job here) runs the
steps in the process that received the signal: a flag is enough. Local
worker processes (--direct_running_mode=multi_processing) are started by
that process and inherit its environment: when STOP_FILE_ENV names a file
(the job's launcher sets it before the pipeline starts), `request_stop()`
creates that file and `stop_requested()` looks for it too.
"""
import os
import threading
import time

STOP_FILE_ENV = 'SEGMENT_LOOPS_STOP_FILE'
# How often a pause looks for the stop file (a stop in its own process wakes it at once).
FILE_CHECK_SECONDS = 0.5

_requested = threading.Event()


class StopRequested(Exception):
    """A request was not sent because the job is stopping."""


def request_stop() -> None:
    """Ask every step of this process, and of the worker processes it started, to stop."""
    _requested.set()
    path = os.environ.get(STOP_FILE_ENV)
    if path:
        with open(path, 'w', encoding='utf-8'):
            pass


def stop_requested() -> bool:
    if _requested.is_set():
        return True
    path = os.environ.get(STOP_FILE_ENV)
    if path and os.path.exists(path):
        _requested.set()
        return True
    return False


def clear_stop() -> None:
    """Forget a stop: for a new run in the same process."""
    _requested.clear()
    path = os.environ.get(STOP_FILE_ENV)
    if path and os.path.exists(path):
        os.remove(path)


def pause(seconds: float) -> None:
    """Sleep `seconds`, or until a stop is requested if that comes first."""
    deadline = time.monotonic() + seconds
    while not stop_requested():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        _requested.wait(min(left, FILE_CHECK_SECONDS))
