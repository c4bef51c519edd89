"""Signals that arrived while a run was in flight, remembered for whoever puts outputs in place.

Python may swallow the exception a signal handler raises (e.g. when it lands inside a
garbage-collection callback), so the command-line layer's handler also records the signal here,
and every writer of an output set calls `raise_if_interrupted` before renaming files into place:
a run stopped by Ctrl-C or SIGTERM never leaves a finished-looking output behind."""

from __future__ import annotations

import signal


class Terminated(BaseException):
  """SIGTERM, raised in the main thread so that cleanups (`finally`, context managers) run."""


_received: list[int] = []


def remember(signum: int) -> None:
  _received.append(signum)


def clear() -> None:
  _received.clear()


def raise_if_interrupted() -> None:
  """Raises KeyboardInterrupt (SIGINT) or Terminated (SIGTERM) if a signal arrived since `clear`."""
  if _received:
    raise KeyboardInterrupt if _received[0] == signal.SIGINT else Terminated()
