"""Studio: the models (loaded once), the worker that runs them, and what an edit leaves behind --
the files and the edit.json record musickv-edit writes (jobs.results), in a folder of its own
under the output folder, and the music metrics of musickv-evaluate (research.evaluation) of each
edit against its source. No gradio here: the page and the API (cli/studio/app.py) call Studio.edit."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from musickv_jax import files, jobs
from musickv_jax.audio import load_audio
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import Cancelled
from musickv_jax.research.evaluation import evaluate
from musickv_jax.studio.request import RequestError, StudioRequest, name_of, one_line
from musickv_jax.studio.worker import Progress, Task, TaskResult, Worker
from musickv_jax.writers.sets import OutputSet

# the command that makes the same edit (the command-line layer knows its flags): (model source, request) -> text
CommandOf = Callable[[str, jobs.EditRequest], str]


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
  """What an edit with nothing set runs with on a model (the controls' first values)."""

  num_inference_steps: int
  guidance_scale: float
  duration_s: float
  sampler: str
  vital_layers: str
  max_seconds: float


@dataclasses.dataclass(frozen=True)
class Metrics:
  """musickv-evaluate's metrics of each clip against the source (rows: clip name, values in order)."""

  names: tuple[str, ...]
  higher_is_better: tuple[bool, ...]
  rows: tuple[tuple[str, tuple[float, ...]], ...]

  def table(self) -> list[list]:
    return [[clip, *(round(v, 4) for v in values)] for clip, values in self.rows]


@dataclasses.dataclass(frozen=True)
class EditOutcome:
  folder: Path
  input_wav: Path | None  # the recording as the model heard it
  source_wav: Path  # source.wav, or source_reconstruction.wav for a recording
  edit_wavs: tuple[Path, ...]
  spectrogram: Path
  record: Path  # edit.json
  metrics: Metrics
  inversion_cached: bool | None
  batch_requests: int
  seconds: float
  command: str  # the musickv-edit command of the same edit

  @property
  def files(self) -> list[Path]:
    return [p for p in (self.input_wav, self.source_wav, *self.edit_wavs, self.record, self.spectrogram) if p]

  def summary(self) -> str:
    inversion = {None: "", True: "; inversion from the cache", False: "; recording inverted"}[self.inversion_cached]
    batched = f"; batched with {self.batch_requests - 1} other request(s)" if self.batch_requests > 1 else ""
    return f"done in {self.seconds:.1f} s{inversion}{batched}: {self.folder.name}"


class Studio:
  def __init__(self, models: Mapping[str, tuple[str, LoadedModel]], output_dir: Path, *, gather_s: float = 0.2,
               rows_per_batch: int = 8, cache_size: int = 16, command_of: CommandOf = lambda source, request: ""):
    """models: name shown -> (where it was loaded from, the loaded model). command_of: the command
    line of the same edit, recorded in its edit.json."""
    if not models:
      raise ValueError("the studio needs at least one model")
    self.sources = {name: source for name, (source, _) in models.items()}
    self.models = {name: model for name, (_, model) in models.items()}
    self.output_dir = Path(output_dir)
    self.cache = jobs.InversionCache(cache_size)
    self.worker = Worker(self.models, self.cache, gather_s=gather_s, rows_per_batch=rows_per_batch)
    self.command_of = command_of
    self._count = itertools.count(1)
    self._lock = threading.Lock()  # matplotlib (the spectrogram) draws one figure at a time
    self._cancels: dict[str, set[threading.Event]] = {}

  @property
  def model_names(self) -> list[str]:
    return list(self.models)

  def defaults(self, name: str) -> ModelDefaults:
    model = self.models[name]
    resolved = jobs.resolve(dataclasses.replace(jobs.DEFAULTS, prompts=("source", "edit")), model)
    gen = resolved.settings.generation
    return ModelDefaults(gen.num_inference_steps, float(gen.guidance_scale), round(gen.resolved_end(model.config), 2),
                         gen.sampler, ",".join(str(v) for v in resolved.settings.vital_layers or ()),
                         round(model.config.max_audio_seconds, 2))

  def check_recording(self, path: str, model_name: str | None = None) -> str:
    """An upload read and checked as musickv-edit --input_audio reads it: its description in one
    line, or RequestError (one line) for a file the edit would refuse."""
    model = self.models[model_name or self.model_names[0]]
    try:
      loaded = load_audio(path, sample_rate=model.config.sample_rate, max_seconds=model.config.conditioner.seconds_max,
                          channels=model.config.vae.audio_channels)
    except MusicKVError as e:
      raise RequestError(one_line(e, path)) from None
    seconds = loaded.audio.shape[-1] / model.config.sample_rate
    window = model.config.max_audio_seconds
    fits = "fits the model's window" if seconds <= window else f"longer than the model's {window:.2f} s window: " \
        "edited over overlapping windows, or pick a segment"
    notes = "".join(f"; {w}" for w in loaded.warnings)
    return f"{Path(path).name}: {seconds:.2f} s at {loaded.source_rate} Hz, {fits}{notes}"

  def cancel(self, session: str) -> int:
    """Cancels the session's requests in flight; returns how many."""
    events = self._cancels.get(session, set())
    for event in events:
      event.set()
    return len(events)

  def edit(self, request: StudioRequest, model_name: str | None = None, *, progress: Progress | None = None,
           session: str = "") -> EditOutcome:
    """Runs one edit (waiting for its turn and batch) and writes its outputs. Raises RequestError
    (one line) for a request the studio refuses, Cancelled when cancelled."""
    name = model_name or self.model_names[0]
    if name not in self.models:
      raise RequestError(f"model {name!r} is not loaded here; choose one of {', '.join(self.models)}")
    start = time.perf_counter()
    edit_request = request.edit_request()
    try:  # refused at once, before the queue: a bad request never waits for a batch
      jobs.check_combinations(edit_request)
      jobs.resolve(edit_request, self.models[name])
    except MusicKVError as e:
      raise RequestError(one_line(e, request.audio)) from None
    task = Task(id=f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._count):04d}", model=name, request=edit_request,
                upload=request.audio, progress=progress)
    self._cancels.setdefault(session, set()).add(task.cancel)
    try:
      done = self.worker.submit(task).result()
    finally:
      self._cancels[session].discard(task.cancel)
    if task.cancel.is_set():
      raise Cancelled("cancelled")
    return self._write(name, request, task.id, done, time.perf_counter() - start)

  def _write(self, name: str, request: StudioRequest, task_id: str, done: TaskResult, seconds: float) -> EditOutcome:
    model, prepared, result = self.models[name], done.prepared, done.result
    real_audio = request.audio is not None
    command = self.command_of(self.sources[name], prepared.request)
    upload = Path(request.audio).name if real_audio else None
    record = jobs.edit_record(model, prepared, result, seconds, command, input_audio=upload, extra={
        "command": command,
        "studio": {"model": name, "inversion_cached": prepared.inversion_cached,
                   "inversion_seconds": round(prepared.inversion_seconds, 3), "batch_requests": done.batch_requests,
                   "sampling_seconds": round(done.sampling_seconds, 3),
                   "notes": prepared.resolved.described_notes(name_of) + list(prepared.warnings)}})
    folder = self.output_dir / task_id
    with self._lock, OutputSet(folder, announce=False) as outputs:
      jobs.stage_job(outputs, prepared, result, record, input_label=upload or "")
      outputs.commit()
    wavs = [folder / output["file"] for output in record["outputs"]]
    roles = [output["role"] for output in record["outputs"]]
    source = wavs[roles.index("source")]
    edits = tuple(w for w, role in zip(wavs, roles) if role == "edit")
    input_wav = folder / "input.wav" if real_audio else None
    metrics = self._metrics(folder, input_wav or source, ([source] if real_audio else []) + list(edits))
    return EditOutcome(folder, input_wav, source, edits, folder / "spectrograms.png", folder / "edit.json", metrics,
                       prepared.inversion_cached, done.batch_requests, seconds, command)

  def _metrics(self, folder: Path, reference: Path, clips: list[Path]) -> Metrics:
    """musickv-evaluate --source reference --edits clips, also written to metrics.json."""
    evaluation = evaluate(reference, clips)
    files.write_atomic(folder / "metrics.json",
                       lambda tmp: tmp.write_text(json.dumps(evaluation.to_json_dict() | {"source": reference.name},
                                                             indent=2) + "\n"))
    names = tuple(evaluation.higher_is_better)
    return Metrics(names, tuple(evaluation.higher_is_better[n] for n in names),
                   tuple((Path(e.file).stem, tuple(e.metrics[n] for n in names)) for e in evaluation.edits))

  def close(self) -> None:
    for events in self._cancels.values():
      for event in events:
        event.set()
    self.worker.stop()
