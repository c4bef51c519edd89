"""musickv-edit-batch: many MusicKV edits from a manifest, on every device of the host (and of
several hosts), surviving crashes.

  musickv-edit-batch --model ckpt/sao --manifest jobs.jsonl --output_path batch/ [--resume [--recompute_changed]] \
      [--rows_per_device 4] [any musickv-edit flag, as the default of jobs that do not set it]

jobs.jsonl holds one JSON object a line (see musickv_jax/jobs/manifest.py):
  {"id": "piano-to-guitar", "prompts": ["Piano solo", "Acoustic guitar, country, soft"], "seed": 3}
  {"id": "song", "input_audio": "song.mp3", "prompts": ["clean indie guitar", "classical piano"]}
Bad lines are reported by number before any work starts and skipped; the other jobs run.

Writes batch/<id>/ for each job (exactly what musickv-edit writes, plus latents.npy (n_prompts, 64,
T)), each folder appearing only when complete; batch/summary.json, rewritten after every job:
{"jobs": [{"id", "status": "ok" | "failed", "error", "seconds"}], "devices", ...}; and batch/index.html,
a listening page over every job. Exit status 0 when every job succeeded, 3 when some failed.

--resume skips the jobs already done and runs the rest. A job is done when its folder records
(edit.json's "request") exactly what the manifest line and the flags now ask for: prompts, seed,
steps, guidance, sampler, length, vital and skip layers, the schedule's values, the model and
dtype, the recording's content (sha256 of the file) and segment and inversion, the WAV format (see
`job_request`; how the run goes -- devices, rows per device, memory -- is not compared). If a
finished job differs, or its folder has no such record, the run names each such job and the
fields that differ and stops with status 1 before any work, changing nothing;
--recompute_changed recomputes those jobs instead, each folder replaced only once its new result
is complete.

Jobs that share a shape (steps, latent frames, CFG, sampler) run together as rows of one jitted
sampler call, rows_per_device prompt rows on each local device. Several hosts:
--coordinator_address HOST:PORT --num_processes N --process_id I on each (nothing on a TPU pod,
where JAX finds them); each process runs every N-th job on its own devices, process 0 merges the
summary and writes the page.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import jax
from absl import flags

from musickv_jax import files, jobs
from musickv_jax.cli import options
from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.progress import run_bar
from musickv_jax.cli.runner import (
  Command,
  Flags,
  Refused,
  UsageError,
  command_line,
  entry_point,
  flag_namer,
)
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import batch as jobs_batch
from musickv_jax.jobs import resume, summary
from musickv_jax.jobs.batch import BatchRun, JobAsk
from musickv_jax.jobs.manifest import JobSpec, read_manifest
from musickv_jax.jobs.summary import JobStatus
from musickv_jax.pipeline import limits

EXIT_SOME_FAILED = 3


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=None, output_default="outputs/batch", per_run=False)
  options.define_edit_flags(fv)
  options.define_recording_flags(fv)
  options.define_method_flags(fv)
  flags.DEFINE_string("manifest", None, "The jobs: a JSON object a line (id, prompts, and optional settings).",
                      flag_values=fv)
  flags.DEFINE_bool("resume", False, "Skip the jobs already done (a folder made with the settings the manifest and "
                    "flags now ask for); run the rest. Stops without changing anything if a finished job was made "
                    "with other settings.", flag_values=fv)
  flags.DEFINE_bool("recompute_changed", False, "With --resume: recompute the finished jobs made with other settings "
                    "(or that cannot be verified); each folder is replaced once its new result is complete.",
                    flag_values=fv)
  flags.DEFINE_integer("rows_per_device", 4, "Prompt rows per device in one sampler call (x2 with CFG).",
                       flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for several hosts.", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "How many processes (hosts) share the manifest.", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index, 0 to num_processes - 1.", flag_values=fv)


# The flags whose values decide a job's result (its request, recorded in edit.json and compared by
# --resume), and those that only decide how the run goes. Every flag is on one side
# (tests/test_bad_inputs.py).
REQUEST_FLAGS = (
    "model", "t5", "dtype", "negative_prompt", "audio_start_in_s", "audio_end_in_s", "num_inference_steps",
    "guidance_scale", "sampler", "sigma_schedule", "seed", "latent_length", "wav_subtype", "preset", "vital_layers",
    "skip_layers", "schedule", "schedule_weight", "ramp", "window", "layer_schedules", "allow_unbounded_schedule",
    "injection_mode", "edit_all", "input_audio", "input_start_s", "input_end_s", "downmix", "inversion",
    "inversion_order", "sample_latent", "window_s", "overlap_s", "edit_region", "region_crossfade_s", "edit_method",
    "init_noise_level", "flowedit_samples", "flowedit_start", "flowedit_source_guidance")
RUN_FLAGS = ("manifest", "output_path", "resume", "recompute_changed", "rows_per_device", "coordinator_address",
             "num_processes", "process_id", "hf_token", "attention", "windows_per_batch", "memory_budget_gib")


def job_request(fv: Flags, spec: JobSpec) -> jobs.EditRequest:
  """A manifest line's request: the flags with the line's own values on top."""
  values = options.Values.from_flags(fv).over({"prompts": list(spec.prompts), **spec.overrides})
  stray = sorted({"window_s", "overlap_s"} & set(spec.overrides))
  if stray and not values.input_audio:
    raise UsageError(f"{', '.join(stray)} apply to recordings (input_audio); this job has none")
  return options.edit_request(values)


def ask(fv: Flags, spec: JobSpec) -> JobAsk:
  """A manifest line as a job: its request and the record of what it asks (None: it cannot be read;
  the job fails with that error)."""
  try:
    request = job_request(fv, spec)
    identity = resume.RunIdentity(model=fv.model, t5=fv.t5, dtype=fv.dtype, wav_subtype=fv.wav_subtype)
    return JobAsk(spec.id, spec.line, request, resume.request_record(request, identity))
  except (UsageError, MusicKVError, OSError) as e:
    return JobAsk(spec.id, spec.line, e)


def check_flags(fv: Flags) -> None:
  if not fv.manifest:
    raise UsageError("--manifest is required: the jobs, one JSON object a line")
  problem = files.not_a_file(fv.manifest, f"--manifest {fv.manifest}", kind="manifest file")
  if problem:
    raise UsageError(problem)
  if fv.rows_per_device < 1:
    raise UsageError(f"--rows_per_device must be at least 1, got {fv.rows_per_device}")
  limits.check_at_most(fv.rows_per_device, limits.MAX_ROWS, "rows_per_device", "rows")
  if fv.wav_subtype not in options.WAV_SUBTYPES:
    raise UsageError(f"--wav_subtype must be one of {options.WAV_SUBTYPES}, got {fv.wav_subtype!r}")
  if fv.recompute_changed and not fv.resume:
    raise UsageError("--recompute_changed goes with --resume (without --resume every job runs)")
  options.check_model_flag(fv)  # before anything is compared (the model is part of what a job asks)


def manifest_jobs(fv: Flags) -> tuple[list[JobSpec], list]:
  try:
    specs, problems = read_manifest(fv.manifest)
  except UnicodeDecodeError:
    raise UsageError(f"--manifest {fv.manifest} is not a text file; give the JSON lines file of the jobs") from None
  if not specs and not problems:  # nothing to do is a mistake in the path or the content
    raise UsageError(f"--manifest {fv.manifest} holds no jobs (only empty or # comment lines); give one JSON object "
                     "a line, with \"id\" and \"prompts\"")
  for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
  return specs, problems


def finished_jobs(fv: Flags, asks: list[JobAsk], out_dir: Path) -> resume.FinishedJobs:
  """--resume: the jobs done; refused (nothing run or changed) when finished ones differ, unless
  --recompute_changed. Every process compares every job (cheap: no model), so all stop or go on."""
  if not fv.resume:
    return resume.FinishedJobs()
  finished = resume.check_finished([(a.id, f"manifest line {a.line}", a.record) for a in asks], out_dir)
  if finished.changed and not fv.recompute_changed:
    for line in finished.changed.values():
      print(line, file=sys.stderr)
    raise Refused(f"{len(finished.changed)} finished job(s) in {out_dir} differ from what the manifest and flags now "
                  "ask, or cannot be verified (listed above); nothing was run or changed. Pass --recompute_changed "
                  "to recompute them (each folder is replaced once its new result is complete), or give another "
                  "--output_path")
  if finished.changed:
    print(f"recomputing {len(finished.changed)} job(s) whose settings changed or cannot be verified: "
          f"{', '.join(finished.changed)}", flush=True)
  return finished


def body(fv: Flags) -> int:
  check_flags(fv)
  specs, problems = manifest_jobs(fv)
  out_dir = check_output_dir(fv.output_path)
  asks = [ask(fv, spec) for spec in specs]
  finished = finished_jobs(fv, asks, out_dir)
  process, processes = summary.start_processes(summary.Processes(fv.coordinator_address, fv.num_processes,
                                                                 fv.process_id))
  name_of = flag_namer(COMMAND, fv)
  batch = BatchRun(out_dir, rows_per_device=fv.rows_per_device, memory_budget_gib=fv.memory_budget_gib,
                   wav_subtype=fv.wav_subtype, command=command_line(), process=process, processes=processes,
                   name_of=name_of)
  mine = [a for i, a in enumerate(asks) if i % processes == process]
  todo = [a for a in mine if a.id not in finished.done]
  if process == 0:
    batch.statuses += [JobStatus(p.id, p.line, "failed", str(p)) for p in problems]
  for done in (a for a in mine if a.id in finished.done):
    batch.done(done, finished.done[done.id])
  print(f"{len(mine)} job(s) for this process ({len(mine) - len(todo)} already done), {batch.devices} device(s)"
        + (f", process {process} of {processes}" if processes > 1 else ""), flush=True)
  if todo:
    left = [a for a in asks if a.id not in finished.done]  # every process's: all decide alike
    run_jobs(fv, batch, todo, processes, out_dir, lambda model, probed: refused_by_a_flag(
        fv, model, [probed(a) for a in left], specs, name_of))
  else:
    open_output(out_dir)
  statuses = batch.finish()
  print_table(statuses)
  if processes > 1:
    jax.distributed.shutdown()  # here, not at interpreter exit, so that a clean finish exits 0
  failed = sum(s.status == "failed" for s in statuses)
  if process == 0:
    print(f"{len(statuses) - failed} job(s) ok, {failed} failed; summary in {out_dir / summary.SUMMARY}, "
          f"listening page {out_dir / 'index.html'}")
  return EXIT_SOME_FAILED if failed else 0


def open_output(out_dir: Path) -> None:
  """The output folder, made once the batch will run (a refused batch writes nothing), without what
  a killed run left."""
  out_dir.mkdir(parents=True, exist_ok=True)
  for stale in files.remove_stale_temporaries(out_dir):
    print(f"removed {stale}, left by an interrupted run", file=sys.stderr)


def refused_by_a_flag(fv: Flags, model, asks: list[JobAsk], specs: list[JobSpec], name_of) -> Refused | None:
  """A flag that no job of the batch can run with (issue 29): every job refused, before any work,
  with the same error about a setting the command line gave and no manifest line overrides. Reported
  once, before the batch starts, instead of once per job in an all-failed summary."""
  requests = [a.request for a in asks if not isinstance(a.request, Exception)]
  error = jobs_batch.shared_refusal(model, requests) if requests else None
  if error is None or error.field is None:
    return None
  flag = COMMAND.flag_of_field.get(error.field, error.field)
  overridden = {key for spec in specs for key in spec.overrides}
  if flag not in fv or not fv[flag].present or flag in overridden or error.field in overridden:
    return None
  return Refused(f"{error.describe(name_of)} (no job of the batch can run with it; nothing was run or written)")


def run_jobs(fv: Flags, batch: BatchRun, todo: list[JobAsk], processes: int, out_dir: Path,
             refusal: Callable[[object, Callable[[JobAsk], JobAsk]], Refused | None]) -> None:
  """Loads the model and runs this process's jobs; `refusal(model, probed)` is a flag no job can run
  with (probed: a job with --preset=probe resolved to this checkpoint's preset), raised before the
  output folder is touched."""
  try:
    model = options.load_model(fv)
  except MusicKVError as e:
    if processes == 1:
      raise
    open_output(out_dir)
    for job in todo:  # one host cannot load the model: its jobs fail, and process 0 still gets their summary
      batch.failed(job.id, job.line, e)
    return
  def probed(a: JobAsk) -> JobAsk:
    if isinstance(a.request, Exception):
      return a
    return dataclasses.replace(a, request=options.with_probed_preset(a.request, model))

  refused = refusal(model, probed)
  if refused is not None:
    raise refused
  open_output(out_dir)
  todo = [probed(a) for a in todo]
  steps = 0  # the bar's total comes with the first report
  with run_bar(steps, f"{len(todo)} job(s)") as on_progress:
    batch.run(model, todo, on_progress=on_progress)


def print_table(statuses: list[JobStatus]) -> None:
  print(f"{'job':<28}{'status':<8}{'seconds':>9}  error")
  for s in statuses:
    print(f"{str(s.id or 'line ' + str(s.line))[:27]:<28}{s.status:<8}{s.seconds:9.1f}  {s.error or ''}")


COMMAND = Command(name="musickv-edit-batch", doc=__doc__, define=define, body=body,
                  flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
