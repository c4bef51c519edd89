"""The one thread that runs the models. Requests wait in a queue; the worker takes every request
that arrived within a short gathering time, inverts the recordings among them (or takes their
inversion from the cache), and packs the edits of one shape (steps, latent frames, CFG, sampler)
as rows of one sampler call with the library's batching (jobs.batching.pack, run_local): each
result equals the same edit run alone up to float32 reassociation between batch sizes.

One thread owns the device, so the sampler's progress listeners (sampler.on_step) hear only the
run in hand: every request of a batch sees the batch's steps, and a batch whose requests were all
cancelled stops at the next chunk of steps."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping

import jax
import numpy as np

from musickv_jax import pipeline
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.cli.studio.inversions import InversionCache, InversionKey, audio_digest
from musickv_jax.cli.studio.request import RequestError, Resolved, one_line
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import batching
from musickv_jax.pipeline import common
from musickv_jax.pipeline.recording import window_geometry
from musickv_jax.sampling import placement

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


class Cancelled(Exception):
  """The request was cancelled before its result was ready."""


@dataclasses.dataclass
class Task:
  id: str
  model: str  # a key of the worker's models
  resolved: Resolved
  progress: Progress | None = None
  cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
  future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)

  def report(self, fraction: float, what: str) -> None:
    if self.progress is not None and not self.cancel.is_set():
      self.progress(fraction, what)


@dataclasses.dataclass(frozen=True)
class TaskResult:
  result: pipeline.EditResult
  inversion_cached: bool | None  # None: a generated source
  inversion_seconds: float
  batch_requests: int  # how many requests shared this edit's sampler call
  sampling_seconds: float


class Worker:
  def __init__(self, models: Mapping[str, LoadedModel], cache: InversionCache, *, gather_s: float = 0.2,
               rows_per_batch: int = 8):
    self.models = dict(models)
    self.cache = cache
    self.gather_s = gather_s
    self.rows_per_batch = rows_per_batch
    self.batches: list[int] = []  # requests per sampler call, in order (the batching, observable)
    self._queue: queue.Queue[Task | None] = queue.Queue()
    self._thread = threading.Thread(target=self._loop, name="musickv-studio-worker", daemon=True)
    self._thread.start()

  def submit(self, task: Task) -> concurrent.futures.Future:
    self._queue.put(task)
    return task.future

  def stop(self) -> None:
    self._queue.put(None)
    self._thread.join(timeout=5)

  # --------------------------------------------------------------------------- the loop

  def _gather(self) -> list[Task] | None:
    first = self._queue.get()
    if first is None:
      return None
    tasks = [first]
    deadline = time.monotonic() + self.gather_s
    while (left := deadline - time.monotonic()) > 0:
      try:
        task = self._queue.get(timeout=left)
      except queue.Empty:
        break
      if task is None:
        self._queue.put(None)
        break
      tasks.append(task)
    return tasks

  def _loop(self) -> None:
    while (tasks := self._gather()) is not None:
      for name in dict.fromkeys(task.model for task in tasks):
        try:
          self._run(self.models[name], [task for task in tasks if task.model == name])
        except Exception as e:  # noqa: BLE001 -- a bug must not leave a request waiting or stop the server
          traceback.print_exc(file=sys.stderr)
          for task in tasks:
            if task.model == name and not task.future.done():
              task.future.set_exception(RequestError(f"internal error: {one_line(e)}"))

  def _run(self, model: LoadedModel, tasks: list[Task]) -> None:
    prepared: dict[str, tuple[Task, batching.EditJob, bool | None, float]] = {}
    for task in tasks:
      if _cancelled(task):
        continue
      try:
        prepared[task.id] = (task, *self._prepare(model, task))
      except Cancelled:
        _fail(task, Cancelled("cancelled"))
      except (MusicKVError, RequestError, jax.errors.JaxRuntimeError) as e:
        _fail(task, RequestError(one_line(e, task.resolved.request.audio)))
    jobs = [job for _, job, _, _ in prepared.values()]
    groups = [([job], None) for job in jobs if job.is_long]
    groups += [(batch.jobs, batch) for batch in batching.pack([j for j in jobs if not j.is_long],
                                                              self.rows_per_batch, 1)]
    for group, batch in groups:
      members = [prepared[job.id][0] for job in group]
      if all(_cancelled(task) for task in members):
        continue
      start = time.perf_counter()
      try:
        with common.progress(_fan_out(members, "editing")):
          if batch is None:
            latents, plan = batching.run_long(model, group[0], placement.data_mesh(), model.params.dit)
            outcome = {group[0].id: (latents, plan)}
          else:
            outcome = {job_id: (latents, None) for job_id, latents in batching.run_local(model, batch).items()}
      except Cancelled:
        for task in members:
          _fail(task, Cancelled("cancelled"))
        continue
      except (MusicKVError, jax.errors.JaxRuntimeError) as e:
        for task in members:
          _fail(task, RequestError(one_line(e)))
        continue
      seconds = time.perf_counter() - start
      self.batches.append(len(group))
      for job in group:
        task, _, cached, inversion_seconds = prepared[job.id]
        if _cancelled(task):
          continue
        task.report(1.0, "decoding")
        try:
          latents, plan = outcome[job.id]
          result = job.result(model, np.asarray(latents), plan)
        except (MusicKVError, jax.errors.JaxRuntimeError) as e:
          _fail(task, RequestError(one_line(e)))
          continue
        task.future.set_result(TaskResult(result, cached, inversion_seconds, len(group), seconds))

  def _prepare(self, model: LoadedModel, task: Task) -> tuple[batching.EditJob, bool | None, float]:
    """The request's job: a generated source planned from its seed, or a recording inverted (or
    its inversion taken from the cache) and planned from it. Checked first, as musickv-edit does."""
    r = task.resolved
    if r.recording is None:
      return batching.plan_job(model, task.id, r.settings), None, 0.0
    cfg = model.config
    audio = r.recording.audio
    n_samples = int(audio.shape[-1])
    inversion_settings = r.inversion.for_model(cfg)
    settings = r.settings.for_recording(cfg)
    pipeline.check_edit(model, settings, n_samples, window_geometry(model, n_samples, r.windows))
    pipeline.check_inversion(model, n_samples, inversion_settings, r.windows)
    key = InversionKey(task.model, audio_digest(audio), inversion_settings, dataclasses.astuple(r.windows))
    inversion = self.cache.get(key)
    cached, seconds = inversion is not None, 0.0
    if inversion is None:
      start = time.perf_counter()
      with common.progress(_fan_out([task], "inverting")):
        inversion = pipeline.invert_audio(model, audio, inversion_settings, windows=r.windows)
      seconds = time.perf_counter() - start
      self.cache.put(key, inversion)
    return batching.plan_job(model, task.id, settings, inversion), cached, seconds


def _cancelled(task: Task) -> bool:
  if task.cancel.is_set() and not task.future.done():
    task.future.set_exception(Cancelled("cancelled"))
  return task.cancel.is_set()


def _fail(task: Task, error: Exception) -> None:
  if not task.future.done():
    task.future.set_exception(error)


def _fan_out(tasks: list[Task], phase: str) -> Callable[[int, int], None]:
  """A sampler listener telling every task of a run its progress; it stops the run (Cancelled)
  once every task was cancelled."""
  others = f" (with {len(tasks) - 1} other request(s) in one batch)" if len(tasks) > 1 else ""

  def listener(step: int, total: int) -> None:
    if all(task.cancel.is_set() for task in tasks):
      raise Cancelled("cancelled")
    for task in tasks:
      task.report(step / max(total, 1), f"{phase}: step {step} of {total}{others}")
  return listener
