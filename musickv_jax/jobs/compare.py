"""Several ways to edit one recording, side by side (musickv-compare, the studio's compare tab).

Each method (inversion, flowedit, sdedit at a level) runs with the request's KV injection and,
where asked, without it (the same method with injection weight 0: what the method does alone).
Every variant is a job of the batch machinery: the recording is read once, inverted once (the
variants of the inversion method share it through the inversion cache), and the jobs that share a
program (a method's with- and without-injection variants) run as rows of one sampler call. Each
result is scored against the recording with musickv-evaluate's metrics.

  variants = methods_from_text("inversion,flowedit,sdedit:0.5")
  comparison = compare(model, request, variants)      # jobs.EditRequest with a recording
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from musickv_jax.audio import LoadedAudio
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import SettingsError
from musickv_jax.jobs.inversions import InversionCache
from musickv_jax.jobs.prepare import PreparedJob, prepare, read_recording
from musickv_jax.jobs.request import DEFAULTS, EditRequest, ScheduleRequest
from musickv_jax.jobs.runner import Cancelled, Progress, plan_run, run
from musickv_jax.pipeline.results import EditResult, edit_dit_rows, inversion_dit_rows
from musickv_jax.pipeline.settings import METHODS
from musickv_jax.metrics.scoring import Evaluation, evaluate_audio

DEFAULT_METHODS = "inversion,flowedit,sdedit:0.5,sdedit:0.8"
KEPT = "f0_chroma_accuracy"  # the plot's fidelity: the melody kept
MOVED = "timbre_distance"  # the plot's editability: how far the timbre moved
PLOT_FILE = "fidelity_editability.png"
MAX_VARIANTS = 32  # each is a whole edit


@dataclasses.dataclass(frozen=True)
class Variant:
  """One way to edit: a method, SDEdit's level (None: the default), with or without KV injection."""

  method: str
  level: float | None = None
  injection: bool = True

  @property
  def label(self) -> str:
    level = "" if self.level is None else f"-{self.level:g}"
    return f"{self.method}{level}{'' if self.injection else '-no-kv'}"


def methods_from_text(text: str, *, without_injection: bool = True) -> tuple[Variant, ...]:
  """"inversion,flowedit,sdedit:0.5" -> the variants, each with injection and (without_injection)
  without it. Raises SettingsError naming `methods` for an unknown or repeated entry."""
  variants: list[Variant] = []
  for entry in (part.strip() for part in text.split(",")):
    if not entry:
      continue
    name, _, level_text = entry.partition(":")
    if name not in METHODS:
      raise SettingsError(f"{{field}}: unknown method {name!r}; use {', '.join(METHODS)} (sdedit:LEVEL sets its "
                          "level)", field="methods")
    level = None
    if level_text:
      if name != "sdedit":
        raise SettingsError(f"{{field}}: {entry!r}: only sdedit takes a level (sdedit:0.5)", field="methods")
      try:
        level = float(level_text)
      except ValueError:
        level = math.nan
      if not 0.0 <= level <= 1.0:
        raise SettingsError(f"{{field}}: {entry!r}: the level is a number from 0 to 1", field="methods")
    for injection in ((True, False) if without_injection else (True,)):
      variant = Variant(name, level, injection)
      if variant in variants:
        raise SettingsError(f"{{field}}: {entry!r} is listed twice", field="methods")
      variants.append(variant)
  if not variants:
    raise SettingsError("{field} is empty; list at least one of " + ", ".join(METHODS), field="methods")
  if len(variants) > MAX_VARIANTS:
    raise SettingsError(f"{{field}} asks for {len(variants)} edits; at most {MAX_VARIANTS} in one comparison",
                        field="methods")
  return tuple(variants)


def variant_request(request: EditRequest, variant: Variant) -> EditRequest:
  """The request of one variant: its method (the method's own settings kept only where they apply)
  and, without injection, a constant schedule of weight 0."""
  flowedit = variant.method == "flowedit"
  changed = dataclasses.replace(
      request, method=variant.method, init_noise_level=variant.level if variant.method == "sdedit" else None,
      flowedit_samples=request.flowedit_samples if flowedit else DEFAULTS.flowedit_samples,
      flowedit_start=request.flowedit_start if flowedit else DEFAULTS.flowedit_start,
      flowedit_source_guidance=request.flowedit_source_guidance if flowedit else None)
  if not variant.injection:
    changed = dataclasses.replace(changed, schedule=ScheduleRequest(name="constant", weight=0.0))
  return changed


def dit_calls(prepared: PreparedJob) -> int:
  """The DiT rows a job evaluates: its inversion's, unless it came from the cache, and its edit's."""
  inversion = inversion_dit_rows(prepared.settings) if prepared.inversion_cached is False else 0
  return inversion + edit_dit_rows(prepared.settings, recording=prepared.request.is_recording)


@dataclasses.dataclass
class Row:
  """One variant's outcome: its job and result (None: it failed, `error` says why), the DiT rows it
  cost, and the seconds its inversion and its group's sampling took."""

  variant: Variant
  prepared: PreparedJob | None
  result: EditResult | None
  error: str | None
  dit_calls: int = 0
  inversion_seconds: float = 0.0
  sampling_seconds: float = 0.0
  shared_with: tuple[str, ...] = ()  # the variants sampled in the same call


@dataclasses.dataclass
class Comparison:
  recording: LoadedAudio
  rows: list[Row]
  evaluation: Evaluation | None  # the scores of the rows that finished, in their order

  def finished(self) -> list[Row]:
    return [row for row in self.rows if row.result is not None]


def compare(model: LoadedModel, request: EditRequest, variants: Sequence[Variant], *,
            inversions: InversionCache | None = None, model_key: str = "", recording: LoadedAudio | None = None,
            on_progress: Callable[[Progress], None] | None = None,
            on_step: Callable[[int, int], None] | None = None,
            log: Callable[[str], None] = lambda message: None) -> Comparison:
  """Every variant of the request's edit of its recording (see the module). The request has the
  source description and one edit prompt. A variant that cannot run fails alone (its row's error);
  a request that no variant can run is refused (SettingsError) before any work.

  model_key: the model's name in `inversions` (a server's cache of several models). on_step: the
  inversion's progress. Cancelled raised by a listener stops the whole comparison."""
  if request.recording is None or request.recording.path is None:
    raise SettingsError("{field}: a comparison edits a recording; give one", field="input_audio")
  if len(request.prompts) != 2:
    raise SettingsError(f"{{field}}: a comparison takes the recording's description and one edit prompt, got "
                        f"{len(request.prompts)} prompt(s)", field="prompts")
  recording = recording if recording is not None else read_recording(model, request)
  inversions = inversions if inversions is not None else InversionCache()
  rows: list[Row] = []
  prepared_jobs: dict[str, PreparedJob] = {}
  for variant in variants:
    try:
      prepared = prepare(model, variant_request(request, variant), variant.label, model_key=model_key,
                         inversions=inversions, recording=recording, on_step=on_step, log=log)
    except SettingsError as e:
      if len(variants) == 1:
        raise
      rows.append(Row(variant, None, None, e.describe()))
      continue
    prepared_jobs[variant.label] = prepared
    rows.append(Row(variant, prepared, None, None, dit_calls(prepared), prepared.inversion_seconds))
  if not prepared_jobs:
    raise SettingsError(f"{{field}}: no method can edit this recording ({rows[0].error})", field="methods")
  n_prompts = len(request.prompts)
  run_plan = plan_run([p.job for p in prepared_jobs.values()], rows_per_device=2 * n_prompts)
  by_label = {row.variant.label: row for row in rows}
  for outcome in run(model, run_plan, on_progress=on_progress):
    if isinstance(outcome.error, Cancelled):  # the person stopped it: no later group starts
      raise outcome.error
    ids = outcome.group.ids
    for job_id in ids:
      row = by_label[job_id]
      row.sampling_seconds, row.shared_with = outcome.seconds, tuple(i for i in ids if i != job_id)
      if outcome.error is not None:
        row.error = outcome.message()
        continue
      row.result = row.prepared.job.result(model, *outcome.latents[job_id])
  finished = [row for row in rows if row.result is not None]
  evaluation = None
  if finished:
    evaluation = evaluate_audio(recording.audio, [(row.variant.label, row.result.audio[1]) for row in finished],
                                model.config.sample_rate)
  return Comparison(recording, rows, evaluation)


def metrics_of(comparison: Comparison) -> dict[str, dict[str, float]]:
  """Each finished variant's metrics by label."""
  if comparison.evaluation is None:
    return {}
  return {scores.file: scores.metrics for scores in comparison.evaluation.edits}


def compare_record(comparison: Comparison, prompts: Sequence[str], provenance: dict) -> dict:
  """compare.json: each variant's method, settings, file, metrics (None: it failed, with its
  error), DiT rows and seconds, the recording, and the plot's axes."""
  metrics = metrics_of(comparison)
  rows = []
  for row in comparison.rows:
    variant, prepared = row.variant, row.prepared
    level = prepared.settings.generation.init_noise_level if prepared is not None else variant.level
    rows.append({"label": variant.label, "method": variant.method, "injection": variant.injection,
                 "init_noise_level": level if variant.method == "sdedit" else None,
                 "file": f"{variant.label}.wav" if row.result is not None else None,
                 "metrics": metrics.get(variant.label), "error": row.error, "dit_calls": row.dit_calls,
                 "inversion_seconds": round(row.inversion_seconds, 3),
                 "sampling_seconds": round(row.sampling_seconds, 3), "sampled_with": list(row.shared_with),
                 "editing": prepared.settings.to_json_dict() if prepared is not None else None})
  recording = comparison.recording
  return provenance | {
      "prompts": list(prompts),
      "recording": {"seconds": recording.audio.shape[-1] / recording.sample_rate,
                    "sample_rate": recording.sample_rate, "file": "input.wav"},
      "rows": rows,
      "higher_is_better": comparison.evaluation.higher_is_better if comparison.evaluation else {},
      "plot": {"file": PLOT_FILE, "x": MOVED, "y": KEPT,
               "points": [{"label": row["label"], "x": row["metrics"][MOVED], "y": row["metrics"][KEPT]}
                          for row in rows if row["metrics"]]}}


def clips(comparison: Comparison) -> list[tuple[str, np.ndarray]]:
  """(file name, audio (channels, samples)) of every finished variant's edit."""
  return [(f"{row.variant.label}.wav", row.result.audio[1]) for row in comparison.finished()]
