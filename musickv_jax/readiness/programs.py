"""Every compiled program the project runs, as (the very jitted function, abstract arguments), at a
model's real size and without weights: parameters come from `jax.eval_shape` of the model, every
other argument is built by the pipeline's own code (plans, row blocks, window groups) on zero
arrays and then turned into its shape and dtype. Lowering them (readiness.lowering) or compiling
them (readiness.memory_plan) needs no accelerator and no checkpoint.

A program is named `<model>/<program>/<dtype>/<attention>` (`sao1.0/edit_chunk/bf16/splash`); the
VAE's programs have no attention part (`sao1.0/vae_decode/bf16`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import ModelConfig, named_config, to_jnp_dtype
from musickv_jax.jobs import batching
from musickv_jax.metrics import Analysis
from musickv_jax.models import vae_ops
from musickv_jax.models import family, same
from musickv_jax.models.oobleck import (
  decoder_receptive_radius,
  encoder_receptive_radius,
)
from musickv_jax.models.sao import ModelParams, abstract_params
from musickv_jax.pipeline import presets
from musickv_jax.pipeline.plan import (
  EditPlan,
  PlanRow,
  block_of,
  edit_rows,
  stack_blocks,
)
from musickv_jax.research.optimization import (
  ObjectiveWeights,
  Problem,
  ScheduleOptimizer,
  ScheduleParameters,
)
from musickv_jax.sampling import guided, inversion, placement, sampler, solvers
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling import windows as windows_lib
from musickv_jax.sampling.rows import Role

# the models whose programs are checked: the key in program names and the named config
MODELS = {"sao1.0": "sao-1.0", "sao-small": "sao-small", "sa3-small": "sa3-small"}
DTYPES = {"f32": "float32", "bf16": "bfloat16"}
PLATFORMS = ("tpu", "cuda")
# the attention implementations that apply to a platform, and the dtypes each runs in
ATTENTION_PLATFORMS = {"xla": ("tpu", "cuda"), "splash": ("tpu",), "cudnn": ("cuda",)}
ATTENTION_DTYPES = {"xla": ("f32", "bf16"), "splash": ("f32", "bf16"), "cudnn": ("bf16",)}  # cuDNN flash: 16-bit
DIT_PROGRAMS = ("dit_call", "edit_step", "generation_chunk", "edit_chunk", "inversion_chunk", "window_group",
                "batch_bucket", "schedule_gradient")
VAE_PROGRAMS = ("vae_encode", "vae_decode")
CHUNK_STEPS = sampler.CHUNK_TARGET  # the steps of one chunk program (the command lines' progress chunks)
MESH_DEVICES = 1  # the data mesh of a batch bucket: this machine's devices (one CPU); the program is per-device
WINDOW_GROUPS, WINDOWS_PER_GROUP = 2, 2  # a long recording of 3.5 windows, two windows a group


@dataclasses.dataclass(frozen=True)
class ProgramName:
  model: str  # a key of MODELS
  program: str  # one of DIT_PROGRAMS or VAE_PROGRAMS
  dtype: str  # a key of DTYPES
  attention: str | None  # None for the VAE's programs

  def __str__(self) -> str:
    parts = [self.model, self.program, self.dtype] + ([self.attention] if self.attention else [])
    return "/".join(parts)

  @property
  def platforms(self) -> tuple[str, ...]:
    return PLATFORMS if self.attention is None else ATTENTION_PLATFORMS[self.attention]


@dataclasses.dataclass(frozen=True)
class Program:
  """A jitted function of the project and the abstract arguments it is called with."""

  name: ProgramName
  function: Callable  # a jax.jit-wrapped function
  args: tuple
  kwargs: dict[str, Any]  # its static arguments


def all_names(models=tuple(MODELS)) -> list[ProgramName]:
  """Every program of item 1 of issue 17, for the given models."""
  names = []
  for model in models:
    for dtype in DTYPES:
      for attention, dtypes in ATTENTION_DTYPES.items():
        if dtype in dtypes:
          names += [ProgramName(model, program, dtype, attention) for program in DIT_PROGRAMS]
      names += [ProgramName(model, program, dtype, None) for program in VAE_PROGRAMS]
  return names


def shapes_of(tree):
  """Arrays -> jax.ShapeDtypeStruct of each (the pytree's structure kept)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.asarray(a).dtype)
                      if not isinstance(a, jax.ShapeDtypeStruct) else a, tree)


def model_config(name: ProgramName) -> ModelConfig:
  config = named_config(MODELS[name.model]).with_dtype(DTYPES[name.dtype])
  return config.with_attention(name.attention or "xla")


def dit_params(config: ModelConfig):
  """The DiT's parameters as shapes, in the model's matmul dtype (what the command lines pass). Traced
  with the xla attention: the parameters do not depend on it, and cuDNN's refuses to trace without cuDNN."""
  return abstract_params(config.with_attention("xla"), to_jnp_dtype(config.dit.dtype))["dit"]


# ----------------------------------------------------------------------------- plans on zero arrays


def step_plan(config: ModelConfig, steps: int) -> tuple[sampler.StepPlan, str]:
  """A plan of `steps` steps of the model's default sampler (the values do not change the program)."""
  solver = config.diffusion.defaults.sampler
  top = 1.0 if config.diffusion.is_rectified_flow else 80.0
  return sampler.make_plan(np.linspace(top, 0.0, steps + 1), solver, config.diffusion.objective), solver


def edit_plan(config: ModelConfig, frames: int, steps: int, *, edit: bool = True, prompts: int = 2) -> EditPlan:
  """An edit (a source and one edit) or a generation of `prompts` prompts as build_plan makes them,
  with the model's default sampler and guidance and zero conditioning (no T5 run)."""
  defaults = config.diffusion.defaults
  guidance = defaults.guidance_scale
  rows = (edit_rows(prompts, False, guidance) if edit
          else tuple(PlanRow(Role.PLAIN, "", guidance, noise_stream=p) for p in range(prompts)))
  use_cfg = rows_lib.uses_cfg([guidance] * prompts, None)
  dit_rows = rows_lib.branches(use_cfg) * prompts
  d = config.dit
  mask = jnp.ones((dit_rows, config.cross_tokens), bool) if config.is_sa3 else None  # SA3: the text's padding
  cond = guided.GuidedConditioning(jnp.zeros((dit_rows, config.cross_tokens, d.cond_input_dim), jnp.float32),
                                   jnp.zeros((dit_rows, d.global_cond_dim), jnp.float32),
                                   jnp.full((prompts,), guidance, jnp.float32), cross_mask=mask)
  plan, solver = step_plan(config, steps)
  vital = presets.default_for(config).vital_layers if edit else ()
  noise = jnp.zeros((steps, prompts, d.io_channels, frames), jnp.float32) if solver in solvers.STOCHASTIC else None
  return EditPlan(rows=rows, use_cfg=use_cfg, conditioning=cond, x_init=jnp.zeros((prompts, d.io_channels, frames)),
                  steps=plan, solver=solver, seed=0, depth=d.depth, vital_layers=tuple(vital),
                  schedule=jnp.full((steps, len(vital)), 0.5, jnp.float32) if edit else None, step_noise=noise)


def _chunk_args(config: ModelConfig, plan: EditPlan, block, steps: int):
  return (block.cond, solvers.init_state(block.x_init), plan.steps, jax.random.wrap_key_data(block.keys),
          dataclasses.replace(block.kv, inject_weight=None, injected=None),
          {"inject_weight": block.kv.inject_weight} if block.kv.inject_weight is not None else {}, block.sample_ids,
          jnp.arange(steps), None, block.step_noise)


# ----------------------------------------------------------------------------- the programs


def build(name: ProgramName) -> Program:
  """The program `name` stands for, with abstract arguments."""
  config = model_config(name)
  frames = config.dit.sample_size  # the full window
  if name.program in VAE_PROGRAMS:
    return _vae(name, config)
  params = dit_params(config)
  d = config.dit
  static = {"dit_config": d}
  if name.program == "dit_call":
    forward = jax.jit(lambda p, x, t, c: family.apply_dit(p, d, x, t, c.cross_tokens, c.global_cond,
                                                          cross_mask=c.cross_mask)[0])
    plan = edit_plan(config, frames, 1)
    rows = plan.conditioning.cross_tokens.shape[0]
    return Program(name, forward, shapes_of((params, jnp.zeros((rows, d.io_channels, frames)), jnp.zeros((rows,)),
                                             plan.conditioning)), {})
  if name.program == "edit_step":  # one step of musickv-edit: guided.sample over a one-step plan
    plan = edit_plan(config, frames, 1)
    block = block_of([plan])
    return Program(name, guided.sample_block, shapes_of((params, block, plan.steps)),
                   {**static, "solver": plan.solver, "use_cfg": plan.use_cfg})
  if name.program in ("generation_chunk", "edit_chunk"):
    plan = edit_plan(config, frames, CHUNK_STEPS, edit=name.program == "edit_chunk")
    block = block_of([plan])
    return Program(name, guided.sample_chunk, (params, *shapes_of(_chunk_args(config, plan, block, CHUNK_STEPS))),
                   {**static, "solver": plan.solver, "use_cfg": plan.use_cfg})
  if name.program == "inversion_chunk":
    if config.diffusion.is_rectified_flow:
      inv = inversion.make_rf_inversion_plan(np.linspace(1.0, 0.0, CHUNK_STEPS + 1))
    else:
      inv = inversion.make_inversion_plan(CHUNK_STEPS)
    plan = edit_plan(config, frames, 1, edit=False, prompts=1)
    cond = plan.conditioning.map_rows(lambda rows: rows[-1:], guidance=jnp.ones((1,)))
    return Program(name, inversion.invert_chunk, (params, *shapes_of((cond, solvers.init_state(plan.x_init), inv))),
                   static)
  if name.program == "window_group":
    return _window_group(name, config, params)
  if name.program == "batch_bucket":
    return _batch_bucket(name, config, params)
  if name.program == "schedule_gradient":
    return _schedule_gradient(name, config)
  raise ValueError(f"unknown program {name.program!r}")


def _window_group(name: ProgramName, config: ModelConfig, params) -> Program:
  """A chunk of a long recording's edit: windows as rows, a group at a time (long_recording.edit_latents)."""
  width = config.dit.sample_size
  overlap = width // 8
  frames = width + (WINDOW_GROUPS * WINDOWS_PER_GROUP - 1) * (width - overlap) - width // 2
  layout = windows_lib.layout(frames, width, overlap)
  windows = layout.arrays(WINDOWS_PER_GROUP)
  plan = edit_plan(config, width, CHUNK_STEPS)
  blocks = [block_of([plan] * WINDOWS_PER_GROUP) for _ in range(windows.groups)]
  cond = guided.join_rows([b.cond for b in blocks], jnp.stack, blocks[0].cond.guidance)
  kv = dataclasses.replace(blocks[0].kv, inject_weight=None, injected=None)
  per_step = {"inject_weight": blocks[0].kv.inject_weight}
  x = jnp.zeros((plan.n, config.dit.io_channels, frames))
  noise = None if plan.step_noise is None else jnp.zeros((CHUNK_STEPS, plan.n, config.dit.io_channels, frames))
  args = (cond, solvers.init_state(x), plan.steps, jax.random.wrap_key_data(jnp.asarray(plan.keys())), kv, per_step,
          jnp.arange(plan.n, dtype=jnp.int32), jnp.arange(CHUNK_STEPS), windows, noise)
  return Program(name, guided.sample_chunk, (params, *shapes_of(args)),
                 {"dit_config": config.dit, "solver": plan.solver, "use_cfg": plan.use_cfg})


def _batch_bucket(name: ProgramName, config: ModelConfig, params) -> Program:
  """A batch of edit jobs on a data mesh (jobs.batching.run_batch): two jobs per device, padded."""
  plan = edit_plan(config, config.dit.sample_size, CHUNK_STEPS)
  mesh = placement.data_mesh(jax.local_devices()[:MESH_DEVICES])
  rows_per_device = 2 * plan.n + 1  # two jobs and a padding row
  block = stack_blocks([block_of([plan, plan], rows_per_device, dense=True) for _ in range(MESH_DEVICES)])
  return Program(name, batching.sample_on_mesh, (params, *shapes_of((block, plan.steps))),
                 {"mesh": mesh, "dit_config": config.dit, "solver": plan.solver, "use_cfg": plan.use_cfg})


def _schedule_gradient(name: ProgramName, config: ModelConfig) -> Program:
  """One step of musickv-optimize-schedule: loss, gradient through the sampler and the VAE, Adam."""
  steps = CHUNK_STEPS
  plan = edit_plan(config, config.dit.sample_size, steps)
  samples = config.dit.sample_size * config.vae.hop_length
  problem = Problem(plan=plan, dit_config=config.dit, vae_config=config.vae, span=(0, samples),
                    analysis=Analysis(sample_rate=config.sample_rate), plain=jnp.zeros((plan.n - 1, samples)),
                    source_to_plain=jnp.ones((plan.n - 1,)))
  schedule = ScheduleParameters.for_steps(steps, len(plan.vital_layers))
  optimizer = ScheduleOptimizer(problem, schedule, ObjectiveWeights(), 1e-2)
  state = jax.eval_shape(optimizer.init)
  model_params = abstract_params(config.with_attention("xla"), to_jnp_dtype(config.dit.dtype))
  return Program(name, optimizer.step, (state, ModelParams.from_tree(model_params)), {})


def _vae(name: ProgramName, config: ModelConfig) -> Program:
  """The windowed VAE's one compiled window (models.vae_ops): decode a chunk with its context on both
  sides, encode a chunk of audio with its context."""
  v = config.vae
  params = abstract_params(config, to_jnp_dtype(v.dtype))["vae"]
  if config.is_sa3:  # SAME: windows decoded at their absolute positions; encoded whole
    if name.program == "vae_decode":
      width = min(config.dit.sample_size, vae_ops.DECODE_CHUNK_FRAMES + 2 * same.decoder_receptive_radius(v))
      latents = jax.ShapeDtypeStruct((2, v.latent_dim, width), jnp.float32)
      return Program(name, same.decode, (params, latents, jax.ShapeDtypeStruct((), jnp.int32)), {"config": v})
    audio = jax.ShapeDtypeStruct((1, v.audio_channels, config.dit.sample_size * v.hop_length), jnp.float32)
    return Program(name, same.encode, (params, audio), {"config": v})
  if name.program == "vae_decode":
    width = min(config.dit.sample_size, vae_ops.DECODE_CHUNK_FRAMES + 2 * decoder_receptive_radius(v))
    latents = jax.ShapeDtypeStruct((2, v.latent_dim, width), jnp.float32)
    return Program(name, vae_ops._decode, (params, latents), {"config": v})
  width = min(config.dit.sample_size, vae_ops.ENCODE_CHUNK_FRAMES + 2 * encoder_receptive_radius(v))
  audio = jax.ShapeDtypeStruct((1, v.audio_channels, width * v.hop_length), jnp.float32)
  return Program(name, vae_ops._encode, (params, audio), {"config": v})
