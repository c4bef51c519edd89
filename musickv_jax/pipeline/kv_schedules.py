"""Injection schedules: how strongly each vital layer takes the source's keys and values at each
step. A schedule is an array w of shape (steps, n_layers) (or (steps, n_layers, n_edits) for a
different schedule per edit); at step i the edit's K/V in layer j become
  w[i, j] * source + (1 - w[i, j]) * edit.
Step 0 is the first, noisiest step. All builders return float32 NumPy arrays; the sampler takes
them as data, so a new schedule never recompiles and `jax.grad` can flow into one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musickv_jax.errors import ScheduleError
from musickv_jax.files import not_a_file

NAMES = ("linear_ramp", "constant", "cosine", "window")


def _steps(steps: int, n_layers: int) -> None:
  if steps < 1 or n_layers < 1:
    raise ScheduleError(f"a schedule needs steps >= 1 and at least one layer, got steps={steps}, "
                        f"layers={n_layers}", field=None)


def constant(steps: int, n_layers: int, weight: float = 1.0) -> np.ndarray:
  """The same weight at every step: the reference without its time-varying option (w = 1)."""
  _steps(steps, n_layers)
  return np.full((steps, n_layers), weight, np.float32)


def linear_ramp(steps: int, n_layers: int, start: float = 0.0, end: float = 1.0) -> np.ndarray:
  """The reference's time-varying schedule: w_i = start + (end - start) * i / steps, i.e. 0 at
  the first, noisiest step rising linearly toward 1 (the source shapes the later steps)."""
  _steps(steps, n_layers)
  ramp = start + (end - start) * np.arange(steps) / steps
  return np.repeat(ramp[:, None], n_layers, axis=1).astype(np.float32)


def cosine(steps: int, n_layers: int, start: float = 0.0, end: float = 1.0) -> np.ndarray:
  """A smooth ramp: w_i = start + (end - start) * (1 - cos(pi * i / steps)) / 2."""
  _steps(steps, n_layers)
  ramp = start + (end - start) * 0.5 * (1.0 - np.cos(np.pi * np.arange(steps) / steps))
  return np.repeat(ramp[:, None], n_layers, axis=1).astype(np.float32)


def window(steps: int, n_layers: int, start: float = 0.0, end: float = 1.0, weight: float = 1.0) -> np.ndarray:
  """`weight` for the steps whose fraction i / steps lies in [start, end), 0 elsewhere."""
  _steps(steps, n_layers)
  if not 0.0 <= start <= end <= 1.0:
    raise ScheduleError(f"the window schedule needs 0 <= start <= end <= 1 (fractions of the steps), got {start}, "
                        f"{end}")
  fraction = np.arange(steps) / steps
  on = (fraction >= start) & (fraction < end)
  return np.repeat(np.where(on, weight, 0.0)[:, None], n_layers, axis=1).astype(np.float32)


def per_layer(columns: Sequence[np.ndarray]) -> np.ndarray:
  """One schedule per layer: each a (steps,) or (steps, 1) array, stacked to (steps, n_layers)."""
  cols = [np.asarray(c, np.float32).reshape(len(c), -1)[:, 0] for c in columns]
  if len({len(c) for c in cols}) != 1:
    raise ScheduleError(f"per-layer schedules differ in length: {[len(c) for c in cols]}")
  return np.stack(cols, axis=1)


def by_name(name: str, steps: int, n_layers: int, **params) -> np.ndarray:
  builders = {"linear_ramp": linear_ramp, "constant": constant, "cosine": cosine, "window": window}
  if name not in builders:
    raise ScheduleError(f"{{field}}: unknown schedule {name!r}; use one of {', '.join(NAMES)} or a .npy file")
  try:
    return builders[name](steps, n_layers, **params)
  except TypeError as e:
    raise ScheduleError(f"{{field}} {name!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  """A schedule by name, built once the steps and layers are known (they may come from the model):
  `linear_ramp`, `constant`, `cosine`, `window` with their parameters, or `per_layer` with one such
  spec per vital layer."""

  name: str
  params: tuple[tuple[str, float], ...] = ()
  layers: tuple["ScheduleSpec", ...] = ()  # per_layer: one spec per vital layer

  def build(self, steps: int, n_layers: int) -> np.ndarray:
    if self.name == "per_layer":
      if len(self.layers) != n_layers:
        raise ScheduleError(f"{{field}} per_layer needs one schedule per vital layer ({n_layers}), got "
                            f"{len(self.layers)}")
      return per_layer([spec.build(steps, 1) for spec in self.layers])
    return by_name(self.name, steps, n_layers, **dict(self.params))


def to_json(schedule) -> list | dict | None:
  """A schedule as it was asked for, for a record: its weights, a ScheduleSpec's recipe, or None."""
  if schedule is None:
    return None
  if isinstance(schedule, ScheduleSpec):
    return {"name": schedule.name, "params": dict(schedule.params), "layers": [to_json(s) for s in schedule.layers]}
  return np.asarray(schedule, np.float32).tolist()


def load_npy(path: str | Path) -> np.ndarray:
  path = Path(path)
  problem = not_a_file(path, f"{{field}} {path}", kind=".npy file")
  if problem:
    raise ScheduleError(problem)
  try:
    return np.asarray(np.load(path, allow_pickle=False), np.float32)
  except (ValueError, OSError) as e:
    raise ScheduleError(f"{{field}} file {path} is not a readable .npy array ({e})") from None


def validate(schedule: np.ndarray, steps: int, n_layers: int, n_edits: int | None = None, *,
             allow_unbounded: bool = False) -> np.ndarray:
  """Checks shape (steps, n_layers) or (steps, n_layers, n_edits), finiteness, and [0, 1]."""
  schedule = np.asarray(schedule, np.float32)
  shapes = [(steps, n_layers)] + ([(steps, n_layers, n_edits)] if n_edits else [])
  if schedule.shape not in shapes:
    raise ScheduleError(f"{{field}} has shape {schedule.shape}; expected "
                        + " or ".join(str(s) for s in shapes) + " (steps, vital layers[, edits])")
  if not np.all(np.isfinite(schedule)):
    bad = int(np.sum(~np.isfinite(schedule)))
    raise ScheduleError(f"{{field}} contains {bad} NaN or infinite value(s)")
  if not allow_unbounded and (schedule.min() < 0.0 or schedule.max() > 1.0):
    raise ScheduleError(f"{{field}} values must lie in [0, 1] (found {schedule.min():g} .. {schedule.max():g}); "
                        "set {allow_unbounded_schedule} to use them anyway", mentions=("allow_unbounded_schedule",))
  return schedule
