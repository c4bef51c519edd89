"""Studio: the models (loaded once), the worker that runs them, and what an edit leaves behind --
the files and the edit.json record musickv-edit writes (jobs.results), in a folder of its own
under the output folder, and the music metrics of musickv-evaluate (research.evaluation) of each
edit against its source. Studio.compare runs several methods on one recording (jobs.compare, as
musickv-compare does) and writes musickv-compare's folder (writers.compare). No gradio here: the
page and the API (cli/studio/app.py) call Studio.edit and Studio.compare."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from musickv_jax import files, jobs
from musickv_jax.audio import LoadedAudio, load_audio
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import Cancelled
from musickv_jax.jobs import compare as compare_lib
from musickv_jax.research.evaluation import evaluate
from musickv_jax.studio.request import RequestError, StudioRequest, name_of, one_line
from musickv_jax.studio.worker import Progress, Solo, Task, TaskResult, Worker
from musickv_jax.writers import compare as compare_writer
from musickv_jax.writers.record import provenance
from musickv_jax.writers.sets import OutputSet

# the command that makes the same edit (the command-line layer knows its flags): (model source, request) -> text
CommandOf = Callable[[str, jobs.EditRequest], str]
# the same for a comparison: (model source, request, methods text, also without injection) -> text
CompareCommandOf = Callable[[str, jobs.EditRequest, str, bool], str]
# the comparison table's metrics (compare.json's names), after the variant; then its DiT rows and error
COMPARE_METRICS = ("f0_chroma_accuracy", "timbre_distance", "cqt1_pcc", "chroma_cosine", "form_ssm_correlation",
                   "onset_correlation")


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


@dataclasses.dataclass(frozen=True)
class CompareOutcome:
  """A comparison's folder (musickv-compare's files) and what the page shows of it."""

  folder: Path
  input_wav: Path  # the recording as the model heard it
  variants: tuple[tuple[str, Path | None], ...]  # (label, its WAV; None: it failed) in the order asked
  plot: Path  # fidelity_editability.png
  record: Path  # compare.json
  page: Path  # index.html
  rows: tuple[dict, ...]  # compare.json's rows
  higher_is_better: Mapping[str, bool]  # per metric (compare.json's)
  seconds: float
  command: str  # the musickv-compare command of the same comparison

  @property
  def files(self) -> list[Path]:
    return [self.record, self.page, self.plot, self.input_wav, *(wav for _, wav in self.variants if wav)]

  def table(self) -> list[list]:
    """One line per variant: its label, COMPARE_METRICS (None: it failed), its DiT rows, its error."""
    lines = []
    for row in self.rows:
      metrics = row["metrics"] or {}
      values = [None if metrics.get(name) is None else round(metrics[name], 4) for name in COMPARE_METRICS]
      lines.append([row["label"], *values, row["dit_calls"], row["error"] or ""])
    return lines

  def headers(self) -> list[str]:
    arrows = [{True: " ↑", False: " ↓"}.get(self.higher_is_better.get(name), "") for name in COMPARE_METRICS]
    return ["variant", *(name + arrow for name, arrow in zip(COMPARE_METRICS, arrows)), "DiT rows", "error"]

  def summary(self) -> str:
    failed = sum(1 for row in self.rows if row["error"])
    failures = f"; {failed} failed (see the table)" if failed else ""
    return f"compared {len(self.rows) - failed} edit(s) in {self.seconds:.1f} s{failures}: {self.folder.name}"


class Studio:
  def __init__(self, models: Mapping[str, tuple[str, LoadedModel]], output_dir: Path, *, gather_s: float = 0.2,
               rows_per_batch: int = 8, cache_size: int = 16, command_of: CommandOf = lambda source, request: "",
               compare_command_of: CompareCommandOf = lambda source, request, methods, without: ""):
    """models: name shown -> (where it was loaded from, the loaded model). command_of: the command
    line of the same edit, recorded in its edit.json; compare_command_of: of the same comparison, in
    its compare.json."""
    if not models:
      raise ValueError("the studio needs at least one model")
    self.sources = {name: source for name, (source, _) in models.items()}
    self.models = {name: model for name, (_, model) in models.items()}
    self.output_dir = Path(output_dir)
    self.cache = jobs.InversionCache(cache_size)
    self.worker = Worker(self.models, self.cache, gather_s=gather_s, rows_per_batch=rows_per_batch)
    self.command_of = command_of
    self.compare_command_of = compare_command_of
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

  def _model_name(self, model_name: str | None) -> str:
    name = model_name or self.model_names[0]
    if name not in self.models:
      raise RequestError(f"model {name!r} is not loaded here; choose one of {', '.join(self.models)}")
    return name

  def _task_id(self) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._count):04d}"

  def _wait(self, task: Task | Solo, session: str):
    """The worker's result of the task; Cancelled when the session cancelled it."""
    self._cancels.setdefault(session, set()).add(task.cancel)
    try:
      done = self.worker.submit(task).result()
    finally:
      self._cancels[session].discard(task.cancel)
    if task.cancel.is_set():
      raise Cancelled("cancelled")
    return done

  def edit(self, request: StudioRequest, model_name: str | None = None, *, progress: Progress | None = None,
           session: str = "") -> EditOutcome:
    """Runs one edit (waiting for its turn and batch) and writes its outputs. Raises RequestError
    (one line) for a request the studio refuses, Cancelled when cancelled."""
    name = self._model_name(model_name)
    start = time.perf_counter()
    edit_request = request.edit_request()
    try:  # refused at once, before the queue: a bad request never waits for a batch
      jobs.check_combinations(edit_request)
      jobs.resolve(edit_request, self.models[name])
    except MusicKVError as e:
      raise RequestError(one_line(e, request.audio)) from None
    task = Task(id=self._task_id(), model=name, request=edit_request, upload=request.audio, progress=progress)
    done = self._wait(task, session)
    return self._write(name, request, task.id, done, time.perf_counter() - start)

  def compare(self, request: StudioRequest, methods: str = compare_lib.DEFAULT_METHODS, *,
              without_injection: bool = True, model_name: str | None = None, progress: Progress | None = None,
              session: str = "") -> CompareOutcome:
    """Several ways to edit the request's recording with its one edit prompt (musickv-compare):
    methods as compare's text ("inversion,flowedit,sdedit:0.5"), each also without KV injection if
    asked; everything else (steps, guidance, seed, vital layers, regions ...) as the request says,
    with an edit's defaults. Runs on the worker alone (the models are never run by two threads),
    then writes musickv-compare's folder under the output folder. Raises RequestError (one line)
    for a request the studio refuses, Cancelled when cancelled."""
    name = self._model_name(model_name)
    start = time.perf_counter()
    edit_request, variants = self._comparison(request, methods, without_injection, name)
    task = Solo(id=f"{self._task_id()}-compare", model=name, upload=request.audio, progress=progress,
                work=lambda model, task: self._run_comparison(model, name, edit_request, variants, task))
    recording, comparison = self._wait(task, session)
    return self._write_comparison(name, request, edit_request, methods, without_injection, task.id, recording,
                                  comparison, time.perf_counter() - start)

  def _comparison(self, request: StudioRequest, methods: str, without_injection: bool,
                  name: str) -> tuple[jobs.EditRequest, tuple[compare_lib.Variant, ...]]:
    """The comparison's request and variants, refused at once (before the queue) where they cannot run."""
    if not request.audio:
      raise RequestError("audio is empty: a comparison edits a recording; upload one")
    if request.method != jobs.DEFAULTS.method or request.init_noise_level is not None:
      raise RequestError("a comparison sets each variant's method from methods (e.g. inversion,flowedit,sdedit:0.5): "
                         "leave method and SDEdit level unset")
    if len([p for p in request.edit_prompts if p.strip()]) > 1:
      raise RequestError("a comparison takes one edit prompt; give the others their own comparison")
    edit_request = request.edit_request()
    try:
      variants = compare_lib.methods_from_text(methods or "", without_injection=without_injection)
      first = compare_lib.variant_request(edit_request, variants[0])
      jobs.check_combinations(first)
      jobs.resolve(first, self.models[name])
    except MusicKVError as e:
      raise RequestError(one_line(e, request.audio)) from None
    return edit_request, variants

  def _run_comparison(self, model: LoadedModel, name: str, request: jobs.EditRequest,
                      variants: tuple[compare_lib.Variant, ...], task: Solo
                      ) -> tuple[LoadedAudio, compare_lib.Comparison]:
    """On the worker's thread: the recording read once, every variant run and scored."""
    recording = jobs.read_recording(model, request)
    listener = task.listener("comparing")

    def on_progress(progress: jobs.Progress) -> None:
      listener(progress.done, progress.total)
    comparison = compare_lib.compare(model, request, variants, inversions=self.cache, model_key=name,
                                     recording=recording, on_progress=on_progress,
                                     on_step=task.listener("inverting"))
    task.report(1.0, "scoring")
    return recording, comparison

  def _write_comparison(self, name: str, request: StudioRequest, edit_request: jobs.EditRequest, methods: str,
                        without_injection: bool, task_id: str, recording: LoadedAudio, comparison: compare_lib.Comparison,
                        seconds: float) -> CompareOutcome:
    model = self.models[name]
    command = self.compare_command_of(self.sources[name], edit_request, methods, without_injection)
    record = compare_lib.compare_record(comparison, edit_request.prompts, provenance(model, seconds, command) | {
        "studio": {"model": name, "input_audio": Path(request.audio).name, "methods": methods,
                   "without_injection": without_injection, "notes": list(recording.warnings)}})
    folder = self.output_dir / task_id
    with self._lock, OutputSet(folder, announce=False) as outputs:  # the plot: one figure at a time
      compare_writer.stage_comparison(outputs, record, recording.audio, recording.sample_rate,
                                      compare_lib.clips(comparison))
      outputs.commit()
    variants = tuple((row["label"], folder / row["file"] if row["file"] else None) for row in record["rows"])
    return CompareOutcome(folder, folder / record["recording"]["file"], variants, folder / record["plot"]["file"],
                          folder / "compare.json", folder / "index.html", tuple(record["rows"]),
                          dict(record["higher_is_better"]), seconds, command)

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
