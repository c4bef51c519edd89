"""One process's share of a batch of edit jobs: every job prepared (a failure confined to its job),
the jobs run in device batches over a data mesh (jobs.runner), each job's folder written as its
group finishes, and summary.json kept current after every job, so that a crash leaves an honest
account and --resume knows what is done.

musickv-edit-batch reads the manifest and flags into `JobAsk`s and hands them here; the library's
refusals name their settings with `name_of` (the command: its flags)."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import batching, runner, summary
from musickv_jax.jobs.prepare import PreparedJob, prepare
from musickv_jax.jobs.request import EditRequest, check_combinations, resolve
from musickv_jax.jobs.results import edit_record, write_job_folder
from musickv_jax.jobs.summary import JobStatus
from musickv_jax.sampling import placement


@dataclasses.dataclass(frozen=True)
class JobAsk:
  """One job as asked: its id, where it was asked (its manifest line), its request (or why it could
  not be read), and the record of what it asks (jobs.resume.request_record)."""

  id: str
  line: int
  request: EditRequest | Exception
  record: dict | None = None


def shared_refusal(model: LoadedModel, requests: Sequence[EditRequest]) -> MusicKVError | None:
  """The refusal of a batch in which no job can run: every request refused by the checks made before
  any work (jobs.check_combinations, jobs.resolve: no recording read, nothing inverted) with one and
  the same error, which is then the batch's to report once, not each job's. None when a request
  passes them or the refusals differ."""
  first = None
  for request in requests:
    try:
      check_combinations(request)
      resolve(request, model)
    except MusicKVError as e:
      if first is not None and (type(e), e.template, e.field, e.mentions) != (
          type(first), first.template, first.field, first.mentions):
        return None
      first = first or e
    else:
      return None
  return first


def _stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


class BatchRun:
  def __init__(self, out_dir: Path, *, rows_per_device: int, memory_budget_gib: float | None = None,
               wav_subtype: str = "FLOAT", command: str = "", process: int = 0, processes: int = 1,
               name_of: Callable[[str], str] = str, log: Callable[[str], None] = _stderr):
    self.out_dir, self.process, self.processes = Path(out_dir), process, processes
    self.rows_per_device, self.memory_budget_gib, self.wav_subtype = rows_per_device, memory_budget_gib, wav_subtype
    self.command, self.name_of, self.log = command, name_of, log
    self.started = time.time()
    self.devices = jax.local_device_count()
    self.statuses: list[JobStatus] = []
    self.summary = summary.summary_path(self.out_dir, process, processes)

  def done(self, ask: JobAsk, seconds: float) -> None:
    """A job finished earlier (and verified by --resume)."""
    self.statuses.append(JobStatus(ask.id, ask.line, "ok", None, seconds))

  def failed(self, job_id: str | None, line: int, error: BaseException | str) -> None:
    if isinstance(error, MusicKVError):
      message = error.describe(self.name_of)
    else:
      message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    self.statuses.append(JobStatus(job_id, line, "failed", message))
    self.log(f"error: job {job_id} (manifest line {line}): {message}")
    self.write_summary()

  def write_summary(self, final: bool = False) -> None:
    summary.write_summary(self.summary, self.statuses, self.devices, self.processes, self.started, final)

  def run(self, model: LoadedModel, asks: Sequence[JobAsk], *,
          on_progress: Callable[[runner.Progress], None] | None = None) -> None:
    """Prepares, runs and writes every job asked (see the module). Raises SettingsError before
    anything is sampled when a device's batch would not fit the memory budget."""
    lines = {ask.id: ask for ask in asks}
    prepared = [job for ask in asks if (job := self._prepare(model, ask)) is not None]
    by_id = {job.id: job for job in prepared}
    run_plan = runner.plan_run([job.job for job in prepared], self.rows_per_device, self.devices)
    for job_id, problem in run_plan.refused.items():
      self.failed(job_id, lines[job_id].line, problem)
    if run_plan.batches:  # refused before anything is written or sampled
      batching.check_memory(model, run_plan.batches, self.memory_budget_gib)
    self.write_summary()
    if not run_plan.groups:
      return
    for outcome in runner.run(model, run_plan, mesh=placement.data_mesh(), on_progress=on_progress):
      shared = outcome.seconds / len(outcome.group.jobs)
      for job in outcome.group.jobs:
        ask = lines[job.id]
        if outcome.error is not None:
          self.failed(job.id, ask.line, outcome.message(self.name_of))
        else:
          self._write(model, ask, by_id[job.id], outcome.latents[job.id], shared)

  def _prepare(self, model: LoadedModel, ask: JobAsk) -> PreparedJob | None:
    if isinstance(ask.request, Exception):
      self.failed(ask.id, ask.line, ask.request)
      return None
    try:
      job = prepare(model, ask.request, ask.id)
    except MusicKVError as e:
      self.failed(ask.id, ask.line, e)
      return None
    for warning in job.warnings:
      self.log(f"warning: job {ask.id}: {warning}")
    return job

  def _write(self, model: LoadedModel, ask: JobAsk, prepared: PreparedJob, latents_and_plan, shared: float) -> None:
    start = time.perf_counter()
    try:
      result = prepared.job.result(model, *latents_and_plan)
      record = edit_record(model, prepared, result, shared, self.command,
                           extra={"job_id": ask.id, "manifest_line": ask.line, "request": ask.record})
      write_job_folder(self.out_dir / ask.id, prepared, result, record, wav_subtype=self.wav_subtype)
    except (MusicKVError, OSError) as e:
      self.failed(ask.id, ask.line, e)
      return
    self.statuses.append(JobStatus(ask.id, ask.line, "ok", None, shared + time.perf_counter() - start))
    self.write_summary()

  def finish(self) -> list[JobStatus]:
    """The final summary: process 0 waits for and merges every process's, and writes the page."""
    if self.processes > 1:
      self.write_summary(final=True)
    statuses = self.statuses
    if self.process == 0:
      summary.wait_for_summaries(self.out_dir, self.processes)
      statuses = summary.merge_summaries(self.out_dir, statuses, self.processes)
      summary.write_summary(self.out_dir / summary.SUMMARY, statuses, self.devices, self.processes, self.started,
                            final=True)
      summary.write_page(self.out_dir, statuses)
    return statuses
