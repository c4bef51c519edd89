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
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags

from musickv_jax import files, pipeline
from musickv_jax.audio import LoadedAudio
from musickv_jax.cli import listening, options
from musickv_jax.cli.edit_outputs import outputs_record, write_edit_outputs
from musickv_jax.cli.outputs import OutputSet, check_output_dir, write_npy
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.record import provenance
from musickv_jax.cli.runner import Command, Flags, Refused, UsageError, entry_point, flag_namer
from musickv_jax.convert.sources import is_hub_id
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import batching
from musickv_jax.jobs.manifest import JobSpec, read_manifest
from musickv_jax.pipeline import common, kv_schedules
from musickv_jax.pipeline.plan import EditPlan
from musickv_jax.sampling import placement

SUMMARY = "summary.json"
EXIT_SOME_FAILED = 3
MERGE_TIMEOUT_S = 7 * 24 * 3600  # how long the processes of a multi-host run wait for each other


def define(fv: Flags) -> None:
  options.define_generation_flags(fv, audio_end_default=15.0, output_default="outputs/batch", per_run=False)
  options.define_edit_flags(fv)
  options.define_recording_flags(fv)
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


@dataclasses.dataclass
class JobStatus:
  id: str | None
  line: int
  status: str  # ok | failed
  error: str | None = None
  seconds: float = 0.0

  def to_json(self) -> dict:
    return {"id": self.id, "line": self.line, "status": self.status, "error": self.error,
            "seconds": round(self.seconds, 2)}


# ----------------------------------------------------------------------------- processes


def start_processes(fv: Flags) -> tuple[int, int]:
  """jax.distributed for several hosts: (process index, process count). A process that finishes
  early waits for the others when it shuts down (a long manifest: give it all the time it needs)."""
  given = [fv.coordinator_address is not None, fv.num_processes is not None, fv.process_id is not None]
  if any(given) and not all(given):
    raise UsageError("several hosts need all of --coordinator_address, --num_processes and --process_id")
  if all(given):
    if not 0 <= fv.process_id < fv.num_processes:
      raise UsageError(f"--process_id must be between 0 and {fv.num_processes - 1}, got {fv.process_id}")
    jax.distributed.initialize(coordinator_address=fv.coordinator_address, num_processes=fv.num_processes,
                               process_id=fv.process_id, shutdown_timeout_seconds=MERGE_TIMEOUT_S)
  elif "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a multi-host TPU slice: JAX finds its peers
    jax.distributed.initialize(shutdown_timeout_seconds=MERGE_TIMEOUT_S)
  return jax.process_index(), jax.process_count()


def wait_for_summaries(out_dir: Path, processes: int) -> None:
  """Process 0 waits until every other process has written its final summary. Through the
  (shared) output folder, not a collective: the processes finish at different times, hours apart
  on a long manifest, far beyond a collective's timeout."""
  deadline = time.time() + MERGE_TIMEOUT_S
  pending = set(range(1, processes))
  while pending and time.time() < deadline:
    for other in sorted(pending):
      path = out_dir / f"summary.process-{other}.json"
      if path.is_file() and json.loads(path.read_text()).get("final"):
        pending.discard(other)
    if pending:
      time.sleep(1.0)
  if pending:
    raise UsageError(f"processes {sorted(pending)} did not finish; their summaries are missing from {out_dir}")


# ----------------------------------------------------------------------------- what a job asks for (--resume)

# The flags whose values decide a job's result (its request, recorded in edit.json and compared by
# --resume), and those that only decide how the run goes. Every flag is on one side
# (tests/test_bad_inputs.py).
REQUEST_FLAGS = (
    "model", "t5", "dtype", "negative_prompt", "audio_start_in_s", "audio_end_in_s", "num_inference_steps",
    "guidance_scale", "sampler", "sigma_schedule", "seed", "latent_length", "wav_subtype", "preset", "vital_layers",
    "skip_layers", "schedule", "schedule_weight", "ramp", "window", "layer_schedules", "allow_unbounded_schedule",
    "injection_mode", "edit_all", "input_audio", "input_start_s", "input_end_s", "downmix", "inversion",
    "inversion_order", "sample_latent", "window_s", "overlap_s")
RUN_FLAGS = ("manifest", "output_path", "resume", "recompute_changed", "rows_per_device", "coordinator_address",
             "num_processes", "process_id", "hf_token", "attention", "windows_per_batch", "memory_budget_gib")
RECORDING_FIELDS = ("input_start_s", "input_end_s", "downmix", "inversion", "inversion_order", "sample_latent",
                    "window_s", "overlap_s")


def job_values(fv: Flags, spec: JobSpec) -> options.Values:
  """The flags with the manifest line's own values on top."""
  return options.Values.from_flags(fv).over({"prompts": list(spec.prompts), **spec.overrides})


def model_identity(source: str) -> str:
  """--model as an identity: a hub id as given, a local path made absolute."""
  text = source.strip()
  return text if is_hub_id(text) else str(Path(text).expanduser().resolve())


def file_digest(path: str | Path) -> str:
  """sha256 of a file's bytes (a recording's content, whatever its name)."""
  digest = hashlib.sha256()
  with open(Path(path).expanduser(), "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return f"sha256:{digest.hexdigest()}"


def job_request(values: options.Values, chosen: options.EditFlags) -> dict:
  """What a job asks for, resolved as far as it can be without the model: the generation settings
  (guidance and length from the preset unless given), vital and skip layers, the schedule's values,
  the model, the recording's content and segment, the WAV format. With the same model, equal
  requests give the same edit. JSON values, so that it compares equal to the record it is read
  back from."""
  gen, edit = chosen.settings.generation, chosen.settings
  request = gen.to_json_dict()
  if values.input_audio and not values.given("audio_end_in_s"):
    request["audio_end_in_s"] = None  # a recording's own length (options.fit_to_model)
  request |= edit.to_json_dict()
  request["schedule"] = kv_schedules.to_json(edit.schedule)
  request["preset"] = values.preset  # None: the model's own (the model is compared too)
  request |= {"model": model_identity(values.model), "t5": str(options.absolute(values.t5)) if values.t5 else None,
              "dtype": values.dtype, "wav_subtype": values.wav_subtype,
              "input_audio": file_digest(values.input_audio) if values.input_audio else None}
  if values.input_audio:
    request |= {name: getattr(values, name) for name in RECORDING_FIELDS}
  return json.loads(json.dumps(request))


def read_record(folder: Path) -> dict | str:
  """A finished job's edit.json, or why it cannot be verified (no record, or no request in it)."""
  try:
    record = json.loads((folder / "edit.json").read_text())
  except (OSError, ValueError):
    return "its edit.json is missing or unreadable"
  if not isinstance(record, dict) or not isinstance(record.get("request"), dict):
    return "its edit.json does not record what it was asked (written by an earlier version)"
  return record


def _shown(value) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def request_differences(recorded: dict, asked: dict) -> list[str]:
  """The fields where a finished job's request and what is asked now differ, each with its values."""
  out = []
  for key in [*asked, *(k for k in recorded if k not in asked)]:
    old, new = recorded.get(key), asked.get(key)
    if old == new:
      continue
    if key == "input_audio" and old is not None and new is not None:
      out.append("input_audio (the recording's content)")
    elif key == "schedule" and old is not None and new is not None:
      out.append("schedule (its values)")
    else:
      out.append(f"{key} ({_shown(old)} -> {_shown(new)})")
  return out


@dataclasses.dataclass
class ResumeCheck:
  """--resume: the jobs already done, and the finished ones that differ from what is asked (or
  cannot be verified), each with its line of explanation."""

  done: dict[str, float]  # job id -> seconds it took
  changed: dict[str, str]  # job id -> why it is not what is asked


def check_finished(fv: Flags, specs: list[JobSpec], out_dir: Path) -> ResumeCheck:
  """Compares every finished job's recorded request with what the manifest and flags now ask. A
  job whose request cannot be built is left to run (and fail with its own message)."""
  check = ResumeCheck({}, {})
  for spec in specs:
    folder = out_dir / spec.id
    if not folder.is_dir():
      continue
    try:
      values = job_values(fv, spec)
      asked = job_request(values, options.edit_settings(values))
    except (UsageError, MusicKVError, OSError):
      continue
    record = read_record(folder)
    where = f"job {spec.id} (manifest line {spec.line})"
    if isinstance(record, str):
      check.changed[spec.id] = f"{where}: cannot verify: {record}"
      continue
    differences = request_differences(record["request"], asked)
    if differences:
      check.changed[spec.id] = f"{where}: finished with other settings: {', '.join(differences)}"
    else:
      check.done[spec.id] = float(record.get("seconds", 0.0))
  return check


# ----------------------------------------------------------------------------- jobs


@dataclasses.dataclass
class ResolvedJob:
  """A manifest line made ready: its job (plan or long recording) and what its outputs record."""

  spec: JobSpec
  job: batching.EditJob
  chosen: options.EditFlags
  values: options.Values
  recording: LoadedAudio | None
  request: dict  # what the job asks for (job_request): recorded in edit.json, compared by --resume


def resolve(fv: Flags, spec: JobSpec, model) -> ResolvedJob:
  """A manifest line -> its job, inverted first for a recording. Raises MusicKVError / UsageError."""
  cfg = model.config
  values = job_values(fv, spec)
  stray = sorted({"window_s", "overlap_s"} & set(spec.overrides))
  if stray and not values.input_audio:
    raise UsageError(f"{', '.join(stray)} apply to recordings (input_audio); this job has none")
  chosen = options.edit_settings(values, model)
  request = job_request(values, options.edit_settings(values))  # as --resume computes it, before a model loads
  settings = options.fit_to_model(chosen, values, cfg, real_audio=bool(values.input_audio)).validated(cfg)
  if not values.input_audio:
    return ResolvedJob(spec, batching.plan_job(model, spec.id, settings), chosen, values, None, request)
  recording = options.load_recording(values, model, job=spec.id)
  gen = settings.generation
  inv_settings = options.inversion_settings(values, gen.prompts[0], gen.num_inference_steps, gen.audio_end_in_s)
  windows = options.window_settings(values)
  n_samples = recording.audio.shape[-1]
  geometry = pipeline.check_inversion(model, n_samples, inv_settings, windows)
  if geometry is not None and gen.audio_end_in_s is not None:
    raise UsageError("audio_end_in_s does not apply to a recording longer than one window (each window is "
                     "conditioned on its start and the recording's length): give this job \"audio_end_in_s\": null")
  pipeline.check_edit(model, settings, n_samples, geometry)  # what the edit refuses, before the inversion
  try:
    inversion = pipeline.invert_audio(model, recording.audio, inv_settings, windows=windows)
  except jax.errors.JaxRuntimeError as e:  # e.g. out of memory: this job fails, the others go on
    raise UsageError(f"inverting the recording failed: {str(e).splitlines()[0]}") from None
  return ResolvedJob(spec, batching.plan_job(model, spec.id, settings, inversion), chosen, values, recording, request)


def write_job(out_dir: Path, model, resolved: ResolvedJob, latents: np.ndarray, plan: EditPlan | None,
              seconds: float, wav_subtype: str) -> None:
  """Decodes one job and puts its folder in place atomically (staged beside it, then renamed)."""
  job, values = resolved.job, resolved.values
  result = job.result(model, latents, plan)
  real_audio = resolved.recording is not None
  record = provenance(model, seconds) | result.describe() | {
      "job_id": job.id, "manifest_line": resolved.spec.line, "preset": resolved.chosen.preset.name,
      "outputs": outputs_record(result, real_audio), "request": resolved.request}
  record["editing"]["schedule"] = resolved.chosen.schedule_name
  if real_audio:
    record["real_audio"] |= {"input_audio": values.input_audio, "input_start_s": values.input_start_s,
                             "input_end_s": values.input_end_s, "source_sample_rate": resolved.recording.source_rate}
  final = out_dir / job.id
  staging = files.temporary_path(final)
  try:
    with OutputSet(staging, announce=False) as outputs:
      write_edit_outputs(outputs, result, record, recording=resolved.recording,
                         input_label=str(values.input_audio or ""), wav_subtype=wav_subtype)
      write_npy(outputs.path("latents.npy"), latents)
      outputs.commit()
    files.replace_directory(staging, final)
  except BaseException:
    files.remove_path(staging)
    raise


def write_summary(path: Path, statuses: list[JobStatus], devices: int, processes: int, started: float,
                  final: bool = False) -> None:
  data = {"jobs": [s.to_json() for s in statuses], "devices": devices, "processes": processes,
          "ok": sum(s.status == "ok" for s in statuses), "failed": sum(s.status == "failed" for s in statuses),
          "seconds": round(time.time() - started, 2), "final": final}
  files.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_page(out_dir: Path, statuses: list[JobStatus]) -> None:
  sections = []
  for status in statuses:
    record_path = out_dir / str(status.id) / "edit.json"
    if status.status == "ok" and record_path.is_file():
      sections.append(listening.sections_from_record(json.loads(record_path.read_text()), prefix=f"{status.id}/"))
    else:
      sections.append(listening.JobSection(title=str(status.id or f"manifest line {status.line}"), clips=[],
                                           error=status.error or "failed"))
  ok = sum(s.status == "ok" for s in statuses)
  files.write_atomic(out_dir / "index.html", lambda tmp: listening.write_page(
      tmp, "musickv-jax batch", sections, summary=f"{ok} of {len(statuses)} jobs succeeded"))


def print_table(statuses: list[JobStatus], edits: dict[str, int]) -> None:
  print(f"{'job':<28}{'status':<8}{'seconds':>9}{'s / edit':>10}  error")
  for s in statuses:
    per_edit = f"{s.seconds / edits[s.id]:10.1f}" if s.status == "ok" and edits.get(s.id) else " " * 10
    print(f"{str(s.id or 'line ' + str(s.line))[:27]:<28}{s.status:<8}{s.seconds:9.1f}{per_edit}  {s.error or ''}")


def _fail(statuses: list[JobStatus], resolved: list[ResolvedJob], message: str) -> None:
  for r in resolved:
    statuses.append(JobStatus(r.job.id, r.spec.line, "failed", message))


def body(fv: Flags) -> int:
  started = time.time()
  name_of = flag_namer(COMMAND, fv)
  if not fv.manifest:
    raise UsageError("--manifest is required: the jobs, one JSON object a line")
  problem = files.not_a_file(fv.manifest, f"--manifest {fv.manifest}", kind="manifest file")
  if problem:
    raise UsageError(problem)
  if fv.rows_per_device < 1:
    raise UsageError(f"--rows_per_device must be at least 1, got {fv.rows_per_device}")
  if fv.wav_subtype not in options.WAV_SUBTYPES:
    raise UsageError(f"--wav_subtype must be one of {options.WAV_SUBTYPES}, got {fv.wav_subtype!r}")
  if fv.recompute_changed and not fv.resume:
    raise UsageError("--recompute_changed goes with --resume (without --resume every job runs)")
  options.check_model_flag(fv)  # before anything is compared (the model is part of what a job asks)
  try:
    specs, problems = read_manifest(fv.manifest)
  except UnicodeDecodeError:
    raise UsageError(f"--manifest {fv.manifest} is not a text file; give the JSON lines file of the jobs") from None
  if not specs and not problems:  # nothing to do is a mistake in the path or the content
    raise UsageError(f"--manifest {fv.manifest} holds no jobs (only empty or # comment lines); give one JSON object "
                     "a line, with \"id\" and \"prompts\"")
  for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
  out_dir = check_output_dir(fv.output_path)
  # every process compares every job (cheap: no model), so that all of them stop or go on together
  finished = check_finished(fv, specs, out_dir) if fv.resume else ResumeCheck({}, {})
  if finished.changed and not fv.recompute_changed:
    for line in finished.changed.values():
      print(line, file=sys.stderr)
    raise Refused(f"{len(finished.changed)} finished job(s) in {out_dir} differ from what the manifest and flags now "
                  "ask, or cannot be verified (listed above); nothing was run or changed. Pass --recompute_changed "
                  "to recompute them (each folder is replaced once its new result is complete), or give another "
                  "--output_path")
  process, processes = start_processes(fv)
  mine = [spec for i, spec in enumerate(specs) if i % processes == process]
  statuses = [JobStatus(p.id, p.line, "failed", str(p)) for p in problems] if process == 0 else []
  out_dir.mkdir(parents=True, exist_ok=True)
  for stale in files.remove_stale_temporaries(out_dir):
    print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
  todo = []
  for spec in mine:
    if spec.id in finished.done:
      statuses.append(JobStatus(spec.id, spec.line, "ok", None, finished.done[spec.id]))
    else:
      todo.append(spec)
  recomputed = [spec.id for spec in todo if spec.id in finished.changed]
  if recomputed:
    print(f"recomputing {len(recomputed)} job(s) whose settings changed or cannot be verified: "
          f"{', '.join(recomputed)}", flush=True)
  summary_path = out_dir / (SUMMARY if processes == 1 else f"summary.process-{process}.json")
  devices = jax.local_device_count()
  print(f"{len(mine)} job(s) for this process ({len(mine) - len(todo)} already done), {devices} device(s)"
        + (f", process {process} of {processes}" if processes > 1 else ""), flush=True)

  model = None
  if todo:
    try:
      model = options.load_model(fv)
    except MusicKVError as e:
      if processes == 1:
        raise
      # one host cannot load the model: its jobs fail, and process 0 still gets their summary
      statuses += [JobStatus(spec.id, spec.line, "failed", e.describe(name_of)) for spec in todo]
      todo = []
  resolved: dict[str, ResolvedJob] = {}
  for spec in todo:
    try:
      job = resolve(fv, spec, model)
    except (MusicKVError, UsageError) as e:
      message = e.describe(name_of) if isinstance(e, MusicKVError) else str(e)
      statuses.append(JobStatus(spec.id, spec.line, "failed", message))
      print(f"error: job {spec.id} (manifest line {spec.line}): {message}", file=sys.stderr)
      continue
    if job.job.n_prompts > fv.rows_per_device and not job.job.is_long:
      message = (f"{job.job.n_prompts} prompts do not fit the {fv.rows_per_device} rows of a device; raise "
                 "--rows_per_device")
      statuses.append(JobStatus(spec.id, spec.line, "failed", message))
      print(f"error: job {spec.id} (manifest line {spec.line}): {message}", file=sys.stderr)
      continue
    resolved[spec.id] = job
  jobs = [r.job for r in resolved.values()]
  batches = batching.pack([job for job in jobs if not job.is_long], fv.rows_per_device, devices)
  if batches:  # refused before anything is written or sampled (no model is loaded when all is done)
    batching.check_memory(model, batches, fv.memory_budget_gib)
  write_summary(summary_path, statuses, devices, processes, started)

  edits = {job_id: r.job.n_edits for job_id, r in resolved.items()}
  if resolved:
    mesh = placement.data_mesh()
    dit_params = placement.replicate(model.params.dit, mesh)
    groups = [(batch.jobs, batch.bucket.steps, batch) for batch in batches]
    groups += [([job], job.settings.generation.num_inference_steps, None) for job in jobs if job.is_long]
    total_steps = sum(steps for _, steps, _ in groups)
    done_steps = 0
    with progress_bar(total_steps, f"{len(jobs)} job(s)") as listener:
      for group_jobs, steps, batch in groups:
        batch_start = time.perf_counter()
        try:
          with common.progress(listener, done_steps, total_steps):
            if batch is None:
              latents, plan = batching.run_long(model, group_jobs[0], mesh, dit_params)
              outcome = {group_jobs[0].id: (latents, plan)}
            else:
              outcome = {job_id: (latents, None)
                         for job_id, latents in batching.run_batch(model, dit_params, batch, mesh).items()}
        except (MusicKVError, jax.errors.JaxRuntimeError) as e:  # e.g. out of memory: these jobs fail, not the run
          message = e.describe(name_of) if isinstance(e, MusicKVError) else str(e).splitlines()[0]
          _fail(statuses, [resolved[job.id] for job in group_jobs], message)
          write_summary(summary_path, statuses, devices, processes, started)
          continue
        finally:
          done_steps += steps
        shared = (time.perf_counter() - batch_start) / len(group_jobs)
        for job in group_jobs:
          job_start = time.perf_counter()
          line = resolved[job.id].spec.line
          try:
            latents, plan = outcome[job.id]
            write_job(out_dir, model, resolved[job.id], latents, plan, shared, fv.wav_subtype)
            statuses.append(JobStatus(job.id, line, "ok", None, shared + time.perf_counter() - job_start))
          except (MusicKVError, OSError) as e:
            statuses.append(JobStatus(job.id, line, "failed", str(e)))
          write_summary(summary_path, statuses, devices, processes, started)

  if processes > 1:
    write_summary(summary_path, statuses, devices, processes, started, final=True)
  if process == 0:
    wait_for_summaries(out_dir, processes)
    statuses = merge_summaries(out_dir, statuses, processes)
    write_summary(out_dir / SUMMARY, statuses, devices, processes, started, final=True)
    write_page(out_dir, statuses)
  print_table(statuses, edits)
  if processes > 1:
    jax.distributed.shutdown()  # here, not at interpreter exit, so that a clean finish exits 0
  failed = sum(s.status == "failed" for s in statuses)
  if process == 0:
    print(f"{len(statuses) - failed} job(s) ok, {failed} failed; summary in {out_dir / SUMMARY}, "
          f"listening page {out_dir / 'index.html'}")
  return EXIT_SOME_FAILED if failed else 0


def merge_summaries(out_dir: Path, statuses: list[JobStatus], processes: int) -> list[JobStatus]:
  """Process 0: every process's statuses, in manifest order."""
  if processes > 1:
    for other in range(1, processes):
      path = out_dir / f"summary.process-{other}.json"
      for entry in json.loads(path.read_text())["jobs"]:
        statuses.append(JobStatus(entry["id"], entry["line"], entry["status"], entry["error"], entry["seconds"]))
      path.unlink()
    (out_dir / "summary.process-0.json").unlink(missing_ok=True)
  return sorted(statuses, key=lambda s: s.line)


COMMAND = Command(name="musickv-edit-batch", doc=__doc__, define=define, body=body,
                  flag_of_field=options.FLAG_OF_FIELD)
main = entry_point(COMMAND)
