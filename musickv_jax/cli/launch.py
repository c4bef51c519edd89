"""The commands' entry points. A command's module imports the library (JAX, Flax, Orbax, the
tokenizer) at its top, which takes a second or two; Ctrl-C and SIGTERM are handled from the first
moment, so an interruption while it imports ends in the same one line as one while it works. Each
entry point imports its command's module here and only here: the one lazy import of a command."""

from __future__ import annotations

import importlib
import os
import signal
import sys

_EXIT = {signal.SIGINT: (130, "interrupted; nothing was written"),
         signal.SIGTERM: (143, "terminated; nothing was written")}


def _while_importing(signum, frame) -> None:
  status, message = _EXIT[signum]
  print(message, file=sys.stderr, flush=True)
  os._exit(status)  # nothing has been written yet; the interpreter's teardown would only race the imports


def launch(module: str) -> None:
  """Imports musickv_jax.cli.<module> with the interruption handlers in place, then runs it."""
  previous = {signum: signal.signal(signum, _while_importing) for signum in _EXIT}
  command = importlib.import_module(f"musickv_jax.cli.{module}")
  for signum, handler in previous.items():
    signal.signal(signum, handler)
  command.main()


def edit() -> None:
  launch("edit")


def generate() -> None:
  launch("generate")


def invert() -> None:
  launch("invert")


def convert() -> None:
  launch("convert")


def demo() -> None:
  launch("demo")


def benchmark() -> None:
  launch("benchmark")


def compare() -> None:
  launch("compare")


def evaluate() -> None:
  launch("evaluate")


def probe_layers() -> None:
  launch("probe_layers")


def optimize_schedule() -> None:
  launch("optimize_schedule")


def edit_batch() -> None:
  launch("edit_batch")


def studio() -> None:
  launch("studio.command")
