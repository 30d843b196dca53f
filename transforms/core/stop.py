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

The flag is per process: Beam's in-process runner (the default for every
batch job here) runs the steps in the process that received the signal.
"""
import threading

_requested = threading.Event()


class StopRequested(Exception):
    """A request was not sent because the job is stopping."""


def request_stop() -> None:
    """Ask every step running in this process to stop."""
    _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def clear_stop() -> None:
    """Forget a stop: for a new run in the same process."""
    _requested.clear()


def pause(seconds: float) -> None:
    """Sleep `seconds`, or until a stop is requested if that comes first."""
    if seconds > 0:
        _requested.wait(seconds)
