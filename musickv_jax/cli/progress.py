"""A progress bar on stderr for the sampling steps (shown on a terminal, or with MUSICKV_PROGRESS=1)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

from musickv_jax.jobs.runner import Progress
from musickv_jax.pipeline.common import Listener


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Listener]:
  """with progress_bar(steps, "editing") as listener: pipeline.edit(..., on_step=listener)"""
  bar = tqdm(total=total, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True,
             disable=not sys.stderr.isatty() and os.environ.get("MUSICKV_PROGRESS") != "1")

  def listener(step: int, steps: int) -> None:
    if bar.total != steps:
      bar.total = steps
    bar.update(step - bar.n)

  try:
    yield listener
  finally:
    bar.close()


@contextlib.contextmanager
def run_bar(total: int, description: str) -> Iterator[Callable[[Progress], None]]:
  """with run_bar(steps, "editing") as on_progress: jobs.run(..., on_progress=on_progress)"""
  with progress_bar(total, description) as listener:
    yield lambda progress: listener(progress.done, progress.total)
