"""Vital-layer probing: which self-attention layers carry a piece's musical structure?

For every prompt and seed, the model generates the piece in full and with one layer's
self-attention bypassed (its residual only), each bypassed layer a row of the same batch (the
bypass mask is data: one compiled program serves every layer). Each variant is compared with the
full model's piece by the structure metrics (musickv_jax.metrics.music):
  melody  = mean(f0_chroma_accuracy, chroma_cosine),  form = form_ssm_correlation,  rhythm = onset_correlation
  score   = 1 - (melody + form + rhythm) / 3
averaged over prompts and seeds. A layer whose bypass leaves the piece unchanged scores 0; the
more structure changes without it, the higher its score. The highest-scoring layers are the
vital layers MusicKV injects into.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from musickv_jax import files, resources
from musickv_jax.checkpoint import PROBE_PRESET_FILE, LoadedModel
from musickv_jax.errors import SettingsError
from musickv_jax.finite import require_finite
from musickv_jax.metrics import Analysis, compare_jit, structure_similarity
from musickv_jax.metrics.music import STRUCTURE_METRICS
from musickv_jax.pipeline import common, limits, presets
from musickv_jax.pipeline.plan import EditPlan, build_plan, run_plan
from musickv_jax.pipeline.presets import EditPreset
from musickv_jax.pipeline.settings import GenerationSettings

SCORE = "score"
PROBE_SECONDS = 10.0  # long enough for form and rhythm, short enough for many prompts
PROBE_MAX_STEPS = 50  # structure is settled well before the reference's 100 steps


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
  """What to probe over. The defaults trade the reference's 100 steps and full window for speed:
  structure is settled well before the last steps."""

  prompts: tuple[str, ...]
  seeds: tuple[int, ...] = (0,)
  layers: tuple[int, ...] | None = None  # None: every layer of the model
  num_inference_steps: int | None = None  # None: the model's default steps, at most PROBE_MAX_STEPS
  guidance_scale: float | None = None  # None: the model's default
  audio_end_in_s: float | None = None  # None: PROBE_SECONDS, at most the model's window
  latent_length: str = "fit"
  variants_per_call: int = 8  # bypassed layers per sampling run (rows: (1 + this) x 2 with CFG)
  top_k: int = 3

  def resolved_seconds(self, config) -> float:
    if self.audio_end_in_s is not None:
      return self.audio_end_in_s
    return min(PROBE_SECONDS, config.max_audio_seconds)

  def generation(self, prompt: str, seed: int, config) -> GenerationSettings:
    steps = self.num_inference_steps
    if steps is None:
      steps = min(PROBE_MAX_STEPS, config.diffusion.defaults.steps)
    return GenerationSettings(prompts=(prompt,), seed=seed, num_inference_steps=steps,
                              guidance_scale=self.guidance_scale, audio_end_in_s=self.resolved_seconds(config),
                              latent_length=self.latent_length)

  def resolved_layers(self, depth: int) -> tuple[int, ...]:
    return tuple(range(depth)) if self.layers is None else tuple(self.layers)

  def check_sizes(self) -> None:
    """Sizes over their caps (pipeline.limits: prompts, seeds, rows of a run, steps); needs no model."""
    limits.check_prompts(self.prompts)
    limits.check_at_most(len(self.seeds), limits.MAX_SEEDS, "seeds", "seeds")
    limits.check_at_most(self.variants_per_call, limits.MAX_ROWS, "variants_per_call", "variants")
    limits.check_steps(self.num_inference_steps)

  def validate(self, depth: int, config) -> None:
    Analysis(sample_rate=config.sample_rate).check_rate()
    if not self.prompts:
      raise SettingsError("{field}: no prompts to probe with", field="prompts")
    if not self.seeds:
      raise SettingsError("{field}: give at least one seed", field="seeds")
    self.check_sizes()
    for layer in self.resolved_layers(depth):
      if not 0 <= layer < depth:
        raise SettingsError(f"{{field}}: layer {layer} is out of range; this model's layers are 0..{depth - 1}",
                            field="layers")
    if len(set(self.resolved_layers(depth))) != len(self.resolved_layers(depth)):
      raise SettingsError("{field} lists a layer more than once", field="layers")
    if self.variants_per_call < 1:
      raise SettingsError("{field} must be at least 1", field="variants_per_call")
    if not 1 <= self.top_k <= len(self.resolved_layers(depth)):
      raise SettingsError(f"{{field}} must be between 1 and the number of probed layers "
                          f"({len(self.resolved_layers(depth))})", field="top_k")
    for prompt in self.prompts:
      for seed in self.seeds:
        self.generation(prompt, seed, config).validate(config)

  def to_json_dict(self) -> dict:
    # the metrics are part of what decides the results: a probe saved with others does not resume
    return dataclasses.asdict(self) | {"prompts": list(self.prompts), "seeds": list(self.seeds),
                                       "metrics": list(STRUCTURE_METRICS)}


@dataclasses.dataclass(frozen=True)
class LayerResult:
  """The structure metrics of one bypassed layer on one prompt and seed."""

  prompt_index: int
  seed: int
  layer: int
  metrics: dict[str, float]


def variant_plan(model: LoadedModel, settings: ProbeSettings, prompt_index: int, seed: int,
                 layers: tuple[int, ...]) -> EditPlan:
  """The plan of one sampling run: row 0 the full model, row 1 + i with layers[i] bypassed; every
  row the same prompt, conditioning, initial noise and noise stream (conditioned once, repeated)."""
  one = build_plan(model, settings.generation(settings.prompts[prompt_index], seed, model.config))
  plan = one.select([0] * (1 + len(layers)))
  rows = tuple(dataclasses.replace(row, skip_layers=() if i == 0 else (layers[i - 1],))
               for i, row in enumerate(plan.rows))
  return dataclasses.replace(plan, rows=rows)


def variant_audio(model: LoadedModel, settings: ProbeSettings, prompt_index: int, seed: int,
                  layers: tuple[int, ...]) -> np.ndarray:
  """One sampling run: mono audio (1 + len(layers), samples) of the full model (row 0) and of each
  of `layers` bypassed, for one prompt and seed."""
  gen = settings.generation(settings.prompts[prompt_index], seed, model.config)
  latents, _ = run_plan(model, variant_plan(model, settings, prompt_index, seed, layers))
  return common.decode(model, latents, *common.output_span(gen, model.config)).mean(axis=1)


def probe_layers_once(model: LoadedModel, settings: ProbeSettings, prompt_index: int, seed: int,
                      layers: tuple[int, ...], analysis: Analysis) -> list[LayerResult]:
  """Scores each of `layers` on one prompt and seed (one sampling run)."""
  audio = variant_audio(model, settings, prompt_index, seed, layers)
  full, variants = jnp.asarray(audio[:1]), jnp.asarray(audio[1:])
  values = compare_jit(jnp.broadcast_to(full, variants.shape), variants, analysis)
  values = {name: np.asarray(values[name]) for name in STRUCTURE_METRICS}
  scores = np.asarray(structure_similarity({k: jnp.asarray(v) for k, v in values.items()}))
  require_finite([values, scores], stage="layer probing", what="scores",
                 advice="a lower {guidance_scale} keeps the generations in range", mentions=("guidance_scale",))
  return [LayerResult(prompt_index, seed, layer,
                      {**{name: float(values[name][i]) for name in STRUCTURE_METRICS}, SCORE: float(1.0 - scores[i])})
          for i, layer in enumerate(layers)]


def pending_units(settings: ProbeSettings, depth: int, done: Iterable[LayerResult]) -> list[tuple[int, int, tuple]]:
  """(prompt index, seed, layers still to probe) for every prompt and seed with work left."""
  finished = {(r.prompt_index, r.seed, r.layer) for r in done}
  units = []
  for p in range(len(settings.prompts)):
    for seed in settings.seeds:
      left = tuple(layer for layer in settings.resolved_layers(depth) if (p, seed, layer) not in finished)
      for start in range(0, len(left), settings.variants_per_call):
        units.append((p, seed, left[start:start + settings.variants_per_call]))
  return units


def run_probe(model: LoadedModel, settings: ProbeSettings, *, done: Iterable[LayerResult] = (),
              on_results: Callable[[list[LayerResult]], None] = lambda results: None,
              on_progress: Callable[[int, int], None] | None = None,
              analysis: Analysis | None = None) -> list[LayerResult]:
  """Probes every (prompt, seed, layer) not in `done`; on_results(results) after each sampling run
  (to save them: an interrupted probe resumes from what was saved). Returns every result."""
  depth = model.config.dit.depth
  settings.validate(depth, model.config)
  analysis = analysis or Analysis(sample_rate=model.config.sample_rate)
  results = list(done)
  units = pending_units(settings, depth, results)
  for i, (prompt_index, seed, layers) in enumerate(units):
    batch = probe_layers_once(model, settings, prompt_index, seed, layers, analysis)
    results.extend(batch)
    on_results(batch)
    if on_progress is not None:
      on_progress(i + 1, len(units))
  return results


@dataclasses.dataclass
class ProbeSummary:
  ranking: list[int]  # most structure-critical first
  layers: dict[int, dict]  # layer -> {"score": mean, "metrics": {name: {"mean", "std"}}}
  settings: ProbeSettings

  def vital_layers(self) -> tuple[int, ...]:
    return tuple(self.ranking[:self.settings.top_k])

  def to_json_dict(self) -> dict:
    return {"ranking": self.ranking, "layers": {str(k): v for k, v in sorted(self.layers.items())},
            "settings": self.settings.to_json_dict()}

  def preset(self, model_name: str, depth: int) -> EditPreset:
    """An editing preset with the top_k layers (guidance and length: the model's own unless probed with one)."""
    s = self.settings
    return EditPreset(name="probe", vital_layers=self.vital_layers(), guidance_scale=s.guidance_scale,
                      description=f"vital layers found by musickv-probe-layers on {model_name}: {len(s.prompts)} "
                                  f"prompt(s) x {len(s.seeds)} seed(s)", depth=depth)


def summarize(results: Iterable[LayerResult], settings: ProbeSettings, depth: int) -> ProbeSummary:
  """Mean and spread of every metric per layer over prompts and seeds; ranking by mean score
  (ties: the lower layer first)."""
  by_layer: dict[int, list[LayerResult]] = {}
  for r in results:
    by_layer.setdefault(r.layer, []).append(r)
  layers = {}
  for layer in settings.resolved_layers(depth):
    rows = by_layer.get(layer, [])
    if len(rows) != len(settings.prompts) * len(settings.seeds):
      raise SettingsError(f"layer {layer} has {len(rows)} results, expected "
                          f"{len(settings.prompts) * len(settings.seeds)}; the probe is not complete", field=None)
    stats = {name: {"mean": float(np.mean([r.metrics[name] for r in rows])),
                    "std": float(np.std([r.metrics[name] for r in rows]))} for name in STRUCTURE_METRICS}
    layers[layer] = {"score": float(np.mean([r.metrics[SCORE] for r in rows])), "metrics": stats}
  ranking = sorted(layers, key=lambda layer: (-layers[layer]["score"], layer))
  return ProbeSummary(ranking=ranking, layers=layers, settings=settings)


# ----------------------------------------------------------------------------- saved results


def result_to_json(result: LayerResult) -> str:
  return json.dumps(dataclasses.asdict(result))


def read_results(path: Path) -> list[LayerResult]:
  """The results saved so far (one JSON object a line); a line cut short by a kill is ignored."""
  results = []
  if not path.is_file():
    return results
  for line in path.read_text().splitlines():
    try:
      results.append(LayerResult(**json.loads(line)))
    except (json.JSONDecodeError, TypeError):
      continue
  return results


# ----------------------------------------------------------------------------- the probed preset of a checkpoint

PRESET_FILE = PROBE_PRESET_FILE  # kept in the converted checkpoint's folder


def read_prompt_file(path: str | Path) -> tuple[str, ...]:
  """One prompt a line; empty lines and lines starting with '#' are skipped."""
  path = Path(path).expanduser()
  problem = files.not_a_file(path, f"{{field}} {path}")
  if problem:
    raise SettingsError(problem, field="prompts_file")
  try:
    lines = [line.strip() for line in path.read_text().splitlines()]
  except (OSError, UnicodeDecodeError) as e:
    raise SettingsError(f"{{field}} {path}: cannot read it as text ({e})", field="prompts_file") from None
  prompts = tuple(line for line in lines if line and not line.startswith("#"))
  if not prompts:
    raise SettingsError(f"{{field}} {path} has no prompts (one a line; '#' starts a comment)", field="prompts_file")
  return prompts


def default_prompts_file() -> Path:
  """The shipped probe prompts (configs/probe_prompts.txt): varied genres and instruments."""
  return resources.configs_dir() / "probe_prompts.txt"


def checkpoint_preset(model: LoadedModel, *, on_progress: Callable[[int, int], None] | None = None,
                      log: Callable[[str], None] = lambda message: None) -> EditPreset:
  """This checkpoint's own vital layers: probed once (the default probe over the shipped prompts)
  and kept as a preset in the converted checkpoint's folder; later calls read it."""
  path = Path(model.path) / PRESET_FILE
  if path.is_file():
    return presets.load(path)
  prompts = read_prompt_file(default_prompts_file())
  # a shallow model (fewer layers than the default top_k) keeps what it has
  settings = ProbeSettings(prompts=prompts, top_k=min(ProbeSettings.top_k, model.config.dit.depth))
  log(f"finding this checkpoint's vital layers once: the layer probe over {len(settings.prompts)} prompts; the preset "
      f"is kept in {path}")
  summary = summarize(run_probe(model, settings, on_progress=on_progress), settings, model.config.dit.depth)
  preset = summary.preset(model.config.name, model.config.dit.depth)
  files.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(preset.to_json_dict(), indent=2) + "\n"))
  return presets.load(path)
