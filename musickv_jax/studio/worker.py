"""The one thread that runs the models. Requests wait in a queue; the worker takes every request
that arrived within a short gathering time, prepares each (jobs.prepare: its checks, its
recording's inversion or the cached one), and runs them with jobs.run on one device: the edits of
one shape (steps, latent frames, CFG, sampler) as rows of one sampler call, each result equal to
the same edit run alone up to float32 reassociation between batch sizes (alone: exactly).

Progress goes to each request's own callback (jobs.run reports which jobs a chunk of steps
belongs to), so requests never hear each other's steps; a group whose requests were all
cancelled stops at its next chunk of steps.

Work that makes its own calls of a model (a comparison: several methods, jobs.compare) is a `Solo`
task: the worker runs it alone, after the edits gathered with it, so the models are only ever run
by this thread."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping

import numpy as np

from musickv_jax import jobs
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import Cancelled
from musickv_jax.studio.request import RequestError, name_of, one_line

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


class _Reports:
  """What a queued task and a solo task share: progress reported until the task is cancelled."""

  progress: Progress | None
  cancel: threading.Event

  def report(self, fraction: float, what: str) -> None:
    if self.progress is not None and not self.cancel.is_set():
      self.progress(fraction, what)


@dataclasses.dataclass
class Task(_Reports):
  id: str
  model: str  # a key of the worker's models
  request: jobs.EditRequest
  upload: str | None = None  # the uploaded file's temporary path (shortened in messages)
  progress: Progress | None = None
  cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
  future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


@dataclasses.dataclass
class Solo(_Reports):
  """Work the worker runs alone on its thread: work(model, this task) -> the future's result. It
  reports with `report` and stops (jobs.Cancelled) when `listener`'s steps find it cancelled."""

  id: str
  model: str  # a key of the worker's models
  work: Callable[[LoadedModel, "Solo"], object]
  upload: str | None = None  # the uploaded file's temporary path (shortened in messages)
  progress: Progress | None = None
  cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
  future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)

  def listener(self, phase: str) -> Callable[[int, int], None]:
    """A step listener: progress as `phase: step N of M`; Cancelled once this task is cancelled."""
    return _fan_out({self.id: self}, phase)


@dataclasses.dataclass(frozen=True)
class TaskResult:
  prepared: jobs.PreparedJob
  result: object  # pipeline.EditResult
  batch_requests: int  # how many requests shared this edit's sampler call
  sampling_seconds: float


class Worker:
  def __init__(self, models: Mapping[str, LoadedModel], cache: jobs.InversionCache, *, gather_s: float = 0.2,
               rows_per_batch: int = 8):
    self.models = dict(models)
    self.cache = cache
    self.gather_s = gather_s
    self.rows_per_batch = rows_per_batch
    self.batches: list[int] = []  # requests per sampler call, in order (the batching, observable)
    self._queue: queue.Queue[Task | Solo | None] = queue.Queue()
    self._thread = threading.Thread(target=self._loop, name="musickv-studio-worker", daemon=True)
    self._thread.start()

  def submit(self, task: Task | Solo) -> concurrent.futures.Future:
    self._queue.put(task)
    return task.future

  def stop(self) -> None:
    self._queue.put(None)
    self._thread.join(timeout=5)

  def _gather(self) -> list[Task | Solo] | None:
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
    while (gathered := self._gather()) is not None:
      tasks = [task for task in gathered if isinstance(task, Task)]
      for name in dict.fromkeys(task.model for task in tasks):
        mine = [task for task in tasks if task.model == name]
        try:
          self._run(name, mine)
        except Exception as e:  # noqa: BLE001 -- a bug must not leave a request waiting or stop the server
          traceback.print_exc(file=sys.stderr)
          for task in mine:
            _fail(task, RequestError(f"internal error: {one_line(e)}"))
      for solo in (task for task in gathered if isinstance(task, Solo)):
        self._run_solo(solo)

  def _run_solo(self, task: Solo) -> None:
    if _cancelled(task):
      return
    try:
      task.future.set_result(task.work(self.models[task.model], task))
    except Cancelled:
      _fail(task, Cancelled("cancelled"))
    except (MusicKVError, RequestError) as e:
      _fail(task, RequestError(one_line(e, task.upload)))
    except Exception as e:  # noqa: BLE001 -- a bug must not leave a request waiting or stop the server
      traceback.print_exc(file=sys.stderr)
      _fail(task, RequestError(f"internal error: {one_line(e)}"))

  def _run(self, name: str, tasks: list[Task]) -> None:
    model = self.models[name]
    prepared: dict[str, tuple[Task, jobs.PreparedJob]] = {}
    for task in tasks:
      if _cancelled(task):
        continue
      try:
        job = jobs.prepare(model, task.request, task.id, model_key=name, inversions=self.cache,
                           on_step=_fan_out({task.id: task}, "inverting"))
        prepared[task.id] = (task, job)
      except Cancelled:
        _fail(task, Cancelled("cancelled"))
      except (MusicKVError, RequestError) as e:
        _fail(task, RequestError(one_line(e, task.upload)))
    if not prepared:
      return
    run_plan = jobs.plan_run([job.job for _, job in prepared.values()], self.rows_per_batch)
    tasks_by_id = {job_id: task for job_id, (task, _) in prepared.items()}
    for outcome in jobs.run(model, run_plan, on_progress=_progress_of(tasks_by_id)):
      members = [tasks_by_id[job.id] for job in outcome.group.jobs]
      if isinstance(outcome.error, Cancelled):
        for task in members:
          _fail(task, Cancelled("cancelled"))
        continue
      if outcome.error is not None:
        for task in members:
          _fail(task, RequestError(outcome.message(name_of)))
        continue
      self.batches.append(len(members))
      for task in members:
        if _cancelled(task):
          continue
        task.report(1.0, "decoding")
        job = prepared[task.id][1]
        try:
          latents, plan = outcome.latents[task.id]
          result = job.job.result(model, np.asarray(latents), plan)
        except MusicKVError as e:
          _fail(task, RequestError(one_line(e)))
          continue
        task.future.set_result(TaskResult(job, result, len(members), outcome.seconds))


def _cancelled(task: Task | Solo) -> bool:
  if task.cancel.is_set() and not task.future.done():
    task.future.set_exception(Cancelled("cancelled"))
  return task.cancel.is_set()


def _fail(task: Task | Solo, error: Exception) -> None:
  if not task.future.done():
    task.future.set_exception(error)


def _fan_out(tasks: Mapping[str, Task | Solo], phase: str, ids: tuple[str, ...] | None = None) -> Callable[[int, int], None]:
  """A step listener telling the tasks of a run their progress; it stops the run (Cancelled) once
  every one of them was cancelled."""
  members = [tasks[i] for i in (ids or tuple(tasks))]
  others = f" (with {len(members) - 1} other request(s) in one batch)" if len(members) > 1 else ""

  def listener(step: int, total: int) -> None:
    if all(task.cancel.is_set() for task in members):
      raise Cancelled("cancelled")
    for task in members:
      task.report(step / max(total, 1), f"{phase}: step {step} of {total}{others}")
  return listener


def _progress_of(tasks: Mapping[str, Task]) -> Callable[[jobs.Progress], None]:
  """jobs.run's progress -> each task of the group running hears its own group's steps."""
  def on_progress(progress: jobs.Progress) -> None:
    _fan_out(tasks, "editing", progress.jobs)(progress.step, progress.steps)
  return on_progress
