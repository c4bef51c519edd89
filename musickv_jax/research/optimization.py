"""Learning injection schedules by gradient: w(step, layer) optimised through the whole sampler.

Parameterisation: logits at `time_bins` points spread evenly over the steps, per vital layer,
linearly interpolated to every step and squashed by a sigmoid, so a schedule is smooth and stays
in (0, 1) whatever the optimiser does. It starts at the reference ramp w_i = i / steps (clipped to
[RAMP_CLIP, 1 - RAMP_CLIP] so that its logits are finite).

Objective (minimised), each term a mean over the edits:
  - fidelity_weight * fidelity       structure kept: the soft structure similarity (melody, form,
                                     rhythm; musickv_jax.metrics.music) of edit and source audio
  - editability_weight * editability how far the edit moved toward the same prompt generated
                                     without injection ("plain"), in log-mel space:
                                     1 - d(edit, plain) / d(source, plain)
  + smoothness_weight * smoothness   the squared step-to-step change of the schedule, summed over
                                     steps, averaged over layers
The gradient flows from the decoded audio through the VAE and every step of the `lax.scan`
sampler into the logits. Each step is rematerialised in the backward pass, so memory holds the
per-step carry (latents and solver history) plus one step's activations, not every activation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musickv_jax import files
from musickv_jax.checkpoint import LoadedModel, orbax_checkpointer
from musickv_jax.config import DiTConfig, OobleckConfig, to_jnp_dtype
from musickv_jax.errors import CheckpointError, OptimizationError, SettingsError
from musickv_jax.finite import require_finite
from musickv_jax.metrics import Analysis, compare, structure_similarity
from musickv_jax.models.layers import wide
from musickv_jax.models import vae_ops
from musickv_jax.models.sao import ModelParams
from musickv_jax.pipeline import limits
from musickv_jax.pipeline.plan import EditPlan, block_of
from musickv_jax.sampling import guided

Array = jax.Array
RAMP_CLIP = 0.02
DEFAULT_TIME_BINS = 8
TERMS = ("fidelity", "editability", "smoothness")


@dataclasses.dataclass(frozen=True)
class ScheduleParameters:
  """Logits (time_bins, n_layers) -> a schedule (steps, n_layers) in (0, 1)."""

  steps: int
  n_layers: int
  time_bins: int

  @classmethod
  def for_steps(cls, steps: int, n_layers: int, time_bins: int | None = None) -> "ScheduleParameters":
    """time_bins None: DEFAULT_TIME_BINS, at most the steps (a default never exceeds what it must fit)."""
    return cls(steps, n_layers, min(DEFAULT_TIME_BINS, steps) if time_bins is None else time_bins)

  def validate(self) -> None:
    limits.check_steps(self.steps)  # the interpolation is (steps, time_bins)
    if self.steps < 2:
      raise SettingsError("a learned schedule needs at least 2 steps (a start and an end); raise {field}",
                          field="num_inference_steps")
    if self.time_bins < 2:
      raise SettingsError("{field} must be at least 2 (a schedule needs a start and an end)", field="time_bins")
    if self.time_bins > self.steps:
      raise SettingsError(f"{{field}} ({self.time_bins}) cannot exceed {{num_inference_steps}} ({self.steps})",
                          field="time_bins", mentions=("num_inference_steps",))

  def interpolation(self) -> np.ndarray:
    """(steps, time_bins): linear interpolation from the bins to every step."""
    position = np.linspace(0, self.time_bins - 1, self.steps)
    lower = np.minimum(np.floor(position).astype(int), self.time_bins - 2)
    frac = position - lower
    matrix = np.zeros((self.steps, self.time_bins))
    matrix[np.arange(self.steps), lower] = 1 - frac
    matrix[np.arange(self.steps), lower + 1] += frac
    return matrix.astype(np.float32)

  def schedule(self, logits: Array) -> Array:
    return jax.nn.sigmoid(jnp.asarray(self.interpolation()) @ logits)

  def reference_logits(self) -> Array:
    """Logits whose schedule is the reference ramp w_i = i / steps at the bins."""
    step_at_bin = np.linspace(0, self.steps - 1, self.time_bins)
    ramp = np.clip(step_at_bin / self.steps, RAMP_CLIP, 1 - RAMP_CLIP)
    logits = np.log(ramp) - np.log1p(-ramp)
    return jnp.asarray(np.repeat(logits[:, None], self.n_layers, axis=1), jnp.float32)


@dataclasses.dataclass(frozen=True)
class ObjectiveWeights:
  fidelity: float = 1.0
  editability: float = 1.0
  smoothness: float = 0.1


@dataclasses.dataclass(frozen=True)
class Problem:
  """What the objective holds fixed: the edit's plan (every prompt after the first an edit), the
  plain edits' audio, and the static shapes. Model parameters are passed separately (arguments of
  the jitted step, not constants baked into it)."""

  plan: EditPlan
  dit_config: DiTConfig
  vae_config: OobleckConfig
  span: tuple[int, int]  # samples of the decoded audio the metrics look at
  analysis: Analysis
  plain: Array = dataclasses.field(compare=False)  # (n - 1, samples) mono, each edit prompt without injection
  source_to_plain: Array = dataclasses.field(compare=False)  # (n - 1,) logmel distance of source and plain

  def latents(self, model_params: ModelParams, schedule: Array, *, remat: bool) -> Array:
    plan = self.plan
    block = block_of([plan], weights=[plan.weights(schedule)])
    latents, _ = guided.sample_block(model_params.dit, block, plan.steps, dit_config=self.dit_config,
                                     solver=plan.solver, use_cfg=plan.use_cfg, remat=remat)
    return latents

  def audio(self, model_params: ModelParams, latents: Array) -> Array:
    """Latents (n, C, T) -> mono audio (n, samples) over the span: a one-pass, differentiable decode."""
    audio = vae_ops.decode_traced(model_params.vae, latents, self.vae_config)
    return jnp.mean(audio[..., self.span[0]:self.span[1]], axis=1)


def make_problem(model: LoadedModel, plan: EditPlan, span: tuple[int, int]) -> Problem:
  """Generates the plain edits (each edit prompt without injection, from the same x_T) once.
  plan: an edit whose every prompt after the first is an edit (EditSettings.edit_all)."""
  if plan.n_edits != plan.n - 1:
    raise SettingsError("schedule optimisation edits every prompt after the first; set {field}", field="edit_all")
  cfg = model.config
  analysis = Analysis(sample_rate=cfg.sample_rate)
  plan = dataclasses.replace(plan, x_init=jnp.asarray(plan.x_init, wide(to_jnp_dtype(cfg.dit.dtype))))
  base = Problem(plan=plan, dit_config=cfg.dit, vae_config=cfg.vae, span=span, analysis=analysis,
                 plain=jnp.zeros((0,)), source_to_plain=jnp.zeros((0,)))
  zero = jnp.zeros((plan.steps.steps, len(plan.vital_layers)), jnp.float32)
  audio = jax.jit(lambda p: base.audio(p, base.latents(p, zero, remat=False)))(model.params)
  source, plain = audio[:1], audio[1:]
  distance = compare(jnp.broadcast_to(source, plain.shape), plain, analysis, soft=True)["logmel_distance"]
  return dataclasses.replace(base, plain=plain, source_to_plain=distance)


def objective_terms(problem: Problem, model_params: ModelParams, params: ScheduleParameters, logits: Array) -> dict:
  """The objective's parts for given logits (differentiable in logits)."""
  schedule = params.schedule(logits)
  audio = problem.audio(model_params, problem.latents(model_params, schedule, remat=True))
  source, edits = audio[:1], audio[1:]
  kept = compare(jnp.broadcast_to(source, edits.shape), edits, problem.analysis, soft=True)
  to_plain = compare(edits, problem.plain, problem.analysis, soft=True)["logmel_distance"]
  return {"fidelity": jnp.mean(structure_similarity(kept)),
          "editability": jnp.mean(1.0 - to_plain / jnp.maximum(problem.source_to_plain, 1e-6)),
          "smoothness": jnp.mean(jnp.sum(jnp.square(jnp.diff(schedule, axis=0)), axis=0))}


def total_loss(terms: dict, weights: ObjectiveWeights) -> Array:
  return (-weights.fidelity * terms["fidelity"] - weights.editability * terms["editability"]
          + weights.smoothness * terms["smoothness"])


@flax.struct.dataclass
class TrainState:
  logits: Array  # (time_bins, n_layers)
  opt_state: Any
  iteration: Array  # () int32: optimiser steps taken


class ScheduleOptimizer:
  """Adam on the schedule's logits; one jitted step = objective, gradient, update."""

  def __init__(self, problem: Problem, params: ScheduleParameters, weights: ObjectiveWeights,
               learning_rate: float):
    if not (np.isfinite(learning_rate) and learning_rate > 0):
      raise SettingsError(f"{{field}} must be a positive number, got {learning_rate}", field="learning_rate")
    params.validate()
    self.problem, self.params, self.weights = problem, params, weights
    self.optimizer = optax.adam(learning_rate)

    def loss(logits, model_params):
      terms = objective_terms(problem, model_params, params, logits)
      return total_loss(terms, weights), terms

    def step(state: TrainState, model_params):
      (value, terms), grads = jax.value_and_grad(loss, has_aux=True)(state.logits, model_params)
      updates, opt_state = self.optimizer.update(grads, state.opt_state, state.logits)
      new = TrainState(optax.apply_updates(state.logits, updates), opt_state, state.iteration + 1)
      return new, value, terms

    self.loss = jax.jit(loss)
    self.step = jax.jit(step)

  def init(self) -> TrainState:
    logits = self.params.reference_logits()
    return TrainState(logits, self.optimizer.init(logits), jnp.zeros((), jnp.int32))


def check_step(iteration: int, loss, terms: dict, state: TrainState) -> None:
  """Raises OptimizationError when step `iteration` (1-based) gave a loss, a term or logits that
  are not finite (an overflow, a NaN weight): the state before that step is the last good one."""
  values = {"loss": float(loss)} | {name: float(value) for name, value in terms.items()}
  bad = {name: value for name, value in values.items() if not np.isfinite(value)}
  if bad:
    what = "the loss" if "loss" in bad else f"the {next(iter(bad))} term"
    raise OptimizationError(f"{what} became {next(iter(bad.values()))} at iteration {iteration}")
  if not bool(jnp.all(jnp.isfinite(state.logits))):
    raise OptimizationError(f"the schedule's update became non-finite at iteration {iteration} (a gradient "
                            "that overflowed)")


# ----------------------------------------------------------------------------- checkpoints


def save_state(directory: Path, state: TrainState, history: dict) -> None:
  """The optimiser's state (Orbax) and the loss history, replacing the previous save atomically."""
  directory = Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = files.temporary_path(directory)
  try:
    staging.mkdir()
    ocp, checkpointer = orbax_checkpointer()
    checkpointer.save(staging / "state", args=ocp.args.StandardSave(state))
    (staging / "history.json").write_text(json.dumps(history))
    files.replace_directory(staging, directory)
  except BaseException:
    files.remove_path(staging)
    raise


def restore_state(directory: Path, template: TrainState) -> tuple[TrainState, dict]:
  directory = Path(directory)
  ocp, checkpointer = orbax_checkpointer()
  try:
    history = json.loads((directory / "history.json").read_text())
    state = checkpointer.restore(directory / "state", args=ocp.args.StandardRestore(template))
  except FileNotFoundError:
    raise CheckpointError(f"{directory}: no optimiser checkpoint to resume from") from None
  except Exception as e:  # noqa: BLE001  Orbax reports a damaged or mismatched save in many ways
    raise CheckpointError(f"{directory}: the optimiser checkpoint cannot be read ({str(e).splitlines()[0][:160]}); "
                          "it is damaged or from other settings") from None
  return state, history


def schedule_array(params: ScheduleParameters, state: TrainState) -> np.ndarray:
  """The learned schedule (steps, n_layers), checked finite before anyone writes it."""
  schedule = np.asarray(params.schedule(state.logits), np.float32)
  require_finite(schedule, stage="schedule optimisation", what="schedule weights",
                 advice="a lower {learning_rate} or other weights may help", mentions=("learning_rate",))
  return schedule

