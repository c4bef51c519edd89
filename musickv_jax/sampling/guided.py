"""The DiT sampler with classifier-free guidance and per-step self-attention controls.

Batch layout per step: [uncond_0 .. uncond_{B-1}, cond_0 .. cond_{B-1}] (like diffusers), so
the model sees 2B rows; v = v_uncond + g * (v_cond - v_uncond) with a per-sample scale g (B,).
`use_cfg=False` runs the B conditional rows only (v = v_cond).

Everything that varies between jobs of one shape is an argument array: prompts (as
conditioning), seeds (as x_init / key), guidance, sigma schedules and injection weights. Only
the shapes, the solver, whether CFG runs, and which layers are recorded are static.
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import flax.struct
import jax
import jax.numpy as jnp

from musickv_jax.config import DiTConfig, SA3DiTConfig
from musickv_jax.models import family
from musickv_jax.models.dit import KVCache, KVControls
from musickv_jax.sampling import flowedit as flowedit_lib
from musickv_jax.sampling import regions
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling import sampler as sampler_lib
from musickv_jax.sampling import solvers
from musickv_jax.sampling import windows as windows_lib

Array = jax.Array


@flax.struct.dataclass
class GuidedConditioning:
  """Conditioning of the rows the DiT sees: (2B, ...) with CFG ([uncond; cond]), else (B, ...).

  cross_tokens (R, N, D) and global_cond (R, Dg): every family; cross_mask (R, N) bool, the text's
  padding (Stable Audio 3: its DiT puts a learned embedding there), and local_cond (R, C + 1, T),
  the inpainting conditioning (Stable Audio 3), or None. guidance (B,) per prompt row."""

  cross_tokens: Array
  global_cond: Array
  guidance: Array  # (B,) per-sample guidance scale
  cross_mask: Array | None = None
  local_cond: Array | None = None

  ROW_FIELDS = ("cross_tokens", "global_cond", "cross_mask", "local_cond")  # one entry per DiT row

  def per_row(self) -> dict[str, Array]:
    """The arrays with one entry per DiT row (leading axis), by name."""
    return {name: getattr(self, name) for name in self.ROW_FIELDS if getattr(self, name) is not None}

  def map_rows(self, fn, guidance: Array | None = None) -> "GuidedConditioning":
    """fn applied to every per-row array (the guidance replaced when given)."""
    return self.replace(**{name: fn(array) for name, array in self.per_row().items()},
                        guidance=self.guidance if guidance is None else guidance)


def join_rows(conds, combine, guidance: Array) -> GuidedConditioning:
  """Conditionings of the same fields combined row-array by row-array (combine(list) -> array)."""
  first = conds[0]
  return first.replace(**{name: combine([getattr(c, name) for c in conds]) for name in first.per_row()},
                       guidance=guidance)


@flax.struct.dataclass
class KVSteps:
  """Self-attention controls over the whole loop (rows as the DiT sees them, R = 2B or B).

  inject_weight: (steps, depth, R) blend weight per step, layer and row, or None.
  source_index: (R,) int32 joint mode: the row whose K/V each row blends in, or None.
  injected: KVCache with k, v (steps, n_layers, R, S, H, D), cached mode, or None.
  bypass: (depth,) bool, layers whose self-attention is skipped for every row, or (depth, R) per row,
    or None.
  blend_layers: (depth,) bool, the layers that blend (the vital layers), or None for every layer.
  """

  inject_weight: Array | None = None
  source_index: Array | None = None
  injected: KVCache | None = None
  bypass: Array | None = None
  blend_layers: Array | None = None


@flax.struct.dataclass
class RowBlock:
  """The arrays of one sampler call over the rows of one or more plans (R = branches x n prompt
  rows, sampling.rows): what the sampler takes.

  cond: (R, ...) conditioning, guidance (n,) (over windows: (groups, R, ...), guidance (G * n,));
  x_init (n, C, T); kv: the injection and bypass controls of the DiT rows; keys (n, 2) uint32 key
  data and sample_ids (n,): each row's noise; step_noise (steps, n, C, T) or None; paste: the
  rows' region edits (sampling.regions) or None; flowedit: the rows' FlowEdit references and noise
  (sampling.flowedit: the block is edited by FlowEdit instead of sampled) or None."""

  cond: GuidedConditioning
  x_init: Array
  kv: KVSteps
  keys: Array
  sample_ids: Array
  step_noise: Array | None = None
  paste: regions.Paste | None = None  # region edits (sampling.regions), or None
  flowedit: flowedit_lib.FlowEditData | None = None  # FlowEdit's references and noise, or None

  @property
  def n(self) -> int:
    return self.x_init.shape[0]

  @property
  def key(self) -> Array:
    """The rows' stochastic-sampler keys (typed)."""
    return jax.random.wrap_key_data(self.keys)


def _controls(kv: KVSteps | None, step: dict, record_layers: tuple[int, ...]) -> KVControls:
  if kv is None:
    return KVControls(record_layers=record_layers)
  return KVControls(inject_weight=step.get("inject_weight"), source_index=kv.source_index,
                    injected=step.get("injected"), bypass=kv.bypass, blend_layers=kv.blend_layers,
                    record_layers=record_layers)


def _per_step(kv: KVSteps | None) -> dict:
  """The per-step inputs the scan hands to each step (leading axis: steps)."""
  if kv is None:
    return {}
  out = {}
  if kv.inject_weight is not None:
    out["inject_weight"] = kv.inject_weight
  if kv.injected is not None:
    out["injected"] = kv.injected
  return out


def guided_denoiser(dit_params, dit_config: DiTConfig | SA3DiTConfig, cond: GuidedConditioning, *, use_cfg: bool,
                    kv: KVSteps | None = None, record_layers: tuple[int, ...] = ()):
  """A sampler.Denoiser for the family's DiT with CFG; aux = recorded K/V (KVCache) or None."""

  def v_fn(x_scaled, t, step):
    rows = jnp.concatenate([x_scaled, x_scaled]) if use_cfg else x_scaled
    t_rows = jnp.broadcast_to(t, (rows.shape[0],))
    v, recorded = family.apply_dit(dit_params, dit_config, rows, t_rows, cond.cross_tokens, cond.global_cond,
                                   _controls(kv, step, record_layers), cross_mask=cond.cross_mask,
                                   local_cond=cond.local_cond)
    if use_cfg:
      v_uncond, v_cond = jnp.split(v, 2)
      v = v_uncond + cond.guidance[:, None, None] * (v_cond - v_uncond)
    return v, recorded

  return sampler_lib.v_denoiser(v_fn)


def windowed_denoiser(dit_params, dit_config: DiTConfig, cond: GuidedConditioning, windows: windows_lib.Windows, *,
                      use_cfg: bool, kv: KVSteps | None = None, mesh: jax.sharding.Mesh | None = None):
  """A sampler.Denoiser over a latent longer than the model's window (sampling.windows): every
  group of windows is one batch of DiT rows, the groups run one after another, and the windows'
  predictions are fused into one prediction of the whole latent.

  cond: per group, cross_tokens (groups, R, N, D) and global_cond (groups, R, Dg), the rows of a
  group laid out [branch][window][prompt]; guidance (G * B,). kv: controls for a group's rows.
  mesh: a 1-D mesh of several devices: the groups are spread over them (their number a multiple of
  the mesh's size), each device running its own groups one after another; the fusion then sees
  every window's prediction."""
  def denoise(x, plan_step, step):
    def one_group(args):
      x_group, group_rows = args
      group_cond = cond.replace(**group_rows)
      denoised, _ = guided_denoiser(dit_params, dit_config, group_cond, use_cfg=use_cfg, kv=kv)(x_group, plan_step,
                                                                                             step)
      return denoised

    rows = windows_lib.gather(x, windows)
    groups = cond.per_row()  # each (groups, R, ...)
    if mesh is not None and mesh.size > 1:
      spec = jax.sharding.PartitionSpec(mesh.axis_names[0])
      # check_vma off: the groups are independent, and the closed-over parameters and controls are replicated
      denoised = jax.shard_map(lambda *args: jax.lax.map(one_group, args), mesh=mesh,
                               in_specs=(spec, jax.tree.map(lambda _: spec, groups)), out_specs=spec,
                               check_vma=False)(rows, groups)
    elif windows.groups == 1:  # no loop: a latent that fits one window runs exactly the plain program's DiT call
      denoised = one_group((rows[0], jax.tree.map(lambda a: a[0], groups)))[None]
    else:
      denoised = jax.lax.map(one_group, (rows, groups))
    return windows_lib.fuse(denoised, windows, x.shape[-1]), None

  return denoise


def _denoiser(dit_params, dit_config: DiTConfig, cond: GuidedConditioning, windows: windows_lib.Windows | None, *,
              use_cfg: bool, kv: KVSteps | None, record_layers: tuple[int, ...], mesh=None):
  if windows is None:
    return guided_denoiser(dit_params, dit_config, cond, use_cfg=use_cfg, kv=kv, record_layers=record_layers)
  if record_layers:
    raise ValueError("recording K/V is not supported over windows")
  return windowed_denoiser(dit_params, dit_config, cond, windows, use_cfg=use_cfg, kv=kv, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("dit_config", "solver", "use_cfg", "record_layers", "remat"))
def sample(dit_params, cond: GuidedConditioning, x_init: Array, plan: sampler_lib.StepPlan, key: Array,
           kv: KVSteps | None = None, sample_ids: Array | None = None, step_noise: Array | None = None, *,
           dit_config: DiTConfig, solver: str = "dpmpp-2m", use_cfg: bool = True, record_layers: tuple[int, ...] = (),
           remat: bool = False, paste: regions.Paste | None = None,
           flowedit: flowedit_lib.FlowEditData | None = None) -> tuple[Array, KVCache | None]:
  """x_init (B, C, T) at noise level plan.sigma[0] -> (x_0, recorded K/V over steps or None).

  sample_ids (B,): the stochastic sampler's noise stream of each sample (default 0..B-1).
  step_noise (steps, B, C, T): the noise a stochastic sampler adds at each step, instead of drawing it.
  Recorded K/V, when record_layers is given: a KVCache with k, v (steps, n_layers, R, S, H, D).
  paste: region edits (sampling.regions); flowedit: FlowEdit instead of the solver (x_init: the
  rows' references).
  """
  batch = x_init.shape[0]
  rows = rows_lib.branches(use_cfg) * batch
  chex.assert_shape(cond.cross_tokens, (rows, None, dit_config.cond_input_dim))
  chex.assert_shape(cond.global_cond, (rows, dit_config.global_cond_dim))
  chex.assert_shape(cond.guidance, (batch,))
  denoise = guided_denoiser(dit_params, dit_config, cond, use_cfg=use_cfg, kv=kv, record_layers=record_layers)
  final, aux = _run_steps(denoise, solvers.init_state(x_init), plan, _per_step(kv), jnp.arange(plan.steps),
                          solver=solver, key=key, sample_ids=sample_ids, step_noise=step_noise, paste=paste,
                          flowedit=flowedit, remat=remat)
  return final.x, aux


def _run_steps(denoise, state: solvers.SolverState, plan: sampler_lib.StepPlan, per_step: dict, step_index: Array, *,
               solver: str, key: Array, sample_ids: Array | None, step_noise: Array | None,
               paste: regions.Paste | None, flowedit: flowedit_lib.FlowEditData | None,
               remat: bool = False) -> tuple[solvers.SolverState, KVCache | None]:
  """The steps of a plan by the solver, or by FlowEdit when its data is given."""
  if flowedit is not None:
    return flowedit_lib.run_steps(denoise, state, plan, per_step, flowedit, paste=paste, remat=remat)
  return sampler_lib.run_steps(denoise, state, plan, per_step, step_index, solver=solver, key=key,
                               sample_ids=sample_ids, step_noise=step_noise, paste=paste, remat=remat)


@functools.partial(jax.jit, static_argnames=("dit_config", "solver", "use_cfg", "record_layers", "mesh"))
def sample_chunk(dit_params, cond: GuidedConditioning, state: solvers.SolverState, plan: sampler_lib.StepPlan,
                 key: Array, kv: KVSteps | None, per_step: dict, sample_ids: Array | None, step_index: Array,
                 windows: windows_lib.Windows | None = None, step_noise: Array | None = None,
                 paste: regions.Paste | None = None, flowedit: flowedit_lib.FlowEditData | None = None, *,
                 dit_config: DiTConfig, solver: str = "dpmpp-2m",
                 use_cfg: bool = True, record_layers: tuple[int, ...] = (),
                 mesh: jax.sharding.Mesh | None = None) -> tuple[solvers.SolverState, KVCache | None]:
  """Some consecutive steps of `sample` from a carried state (plan, per_step, step_index and the
  paste's and flowedit's per-step arrays hold just those steps). windows: sample a latent longer
  than the model's window (windowed_denoiser, with its groups spread over `mesh`)."""
  denoise = _denoiser(dit_params, dit_config, cond, windows, use_cfg=use_cfg, kv=kv, record_layers=record_layers,
                      mesh=mesh)
  return _run_steps(denoise, state, plan, per_step, step_index, solver=solver, key=key, sample_ids=sample_ids,
                    step_noise=step_noise, paste=paste, flowedit=flowedit)


@functools.partial(jax.jit, static_argnames=("dit_config", "solver", "use_cfg", "record_layers", "remat"))
def sample_block(dit_params, block: RowBlock, plan: sampler_lib.StepPlan, *, dit_config: DiTConfig,
                 solver: str = "dpmpp-2m", use_cfg: bool = True, record_layers: tuple[int, ...] = (),
                 remat: bool = False) -> tuple[Array, KVCache | None]:
  """`sample` over the rows of a block (traceable: jit, grad and shard_map take it)."""
  return sample(dit_params, block.cond, block.x_init, plan, block.key, block.kv, block.sample_ids, block.step_noise,
                dit_config=dit_config, solver=solver, use_cfg=use_cfg, record_layers=record_layers, remat=remat,
                paste=block.paste, flowedit=block.flowedit)


def sample_block_in_chunks(dit_params, block: RowBlock, plan: sampler_lib.StepPlan,
                           windows: windows_lib.Windows | None = None, *, dit_config: DiTConfig,
                           solver: str = "dpmpp-2m", use_cfg: bool = True, record_layers: tuple[int, ...] = (),
                           mesh: jax.sharding.Mesh | None = None,
                           on_step: sampler_lib.Listener | None = None) -> tuple[Array, KVCache | None]:
  """`sample_in_chunks` over the rows of a block (windows: the block holds a group's rows, see
  windowed_denoiser)."""
  return sample_in_chunks(dit_params, block.cond, block.x_init, plan, block.key, block.kv, block.sample_ids, windows,
                          block.step_noise, dit_config=dit_config, solver=solver, use_cfg=use_cfg,
                          record_layers=record_layers, mesh=mesh, on_step=on_step, paste=block.paste,
                          flowedit=block.flowedit)


def sample_in_chunks(dit_params, cond: GuidedConditioning, x_init: Array, plan: sampler_lib.StepPlan, key: Array,
                     kv: KVSteps | None = None, sample_ids: Array | None = None,
                     windows: windows_lib.Windows | None = None, step_noise: Array | None = None, *,
                     dit_config: DiTConfig, solver: str = "dpmpp-2m",
                     use_cfg: bool = True, record_layers: tuple[int, ...] = (),
                     mesh: jax.sharding.Mesh | None = None, on_step: sampler_lib.Listener | None = None,
                     paste: regions.Paste | None = None,
                     flowedit: flowedit_lib.FlowEditData | None = None) -> tuple[Array, KVCache | None]:
  """`sample`, run a chunk of steps at a time from the host, calling on_step(steps done, steps)
  between chunks. Computes what `sample` computes; the chunk program has no host callbacks, so
  JAX's persistent compilation cache keeps it between runs.

  windows: x_init (B, C, L) is longer than the model's window; cond and kv hold a group's rows
  (see windowed_denoiser)."""
  batch = x_init.shape[0]
  if windows is None:
    rows = rows_lib.branches(use_cfg) * batch
    chex.assert_shape(cond.cross_tokens, (rows, None, dit_config.cond_input_dim))
    chex.assert_shape(cond.guidance, (batch,))
  else:
    rows = rows_lib.branches(use_cfg) * windows.per_group * batch
    chex.assert_shape(cond.cross_tokens, (windows.groups, rows, None, dit_config.cond_input_dim))
    chex.assert_shape(cond.guidance, (windows.per_group * batch,))
  fixed = None if kv is None else dataclasses.replace(kv, inject_weight=None, injected=None)

  def run_chunk(state, chunk, step_index):
    chunk_plan, per_step, chunk_noise, chunk_paste, chunk_flowedit = chunk
    chunk_paste = None if paste is None else paste.replace(**chunk_paste)
    chunk_flowedit = None if flowedit is None else flowedit.replace(**chunk_flowedit)
    return sample_chunk(dit_params, cond, state, chunk_plan, key, fixed, per_step, sample_ids, step_index, windows,
                        chunk_noise, chunk_paste, chunk_flowedit, dit_config=dit_config, solver=solver,
                        use_cfg=use_cfg, record_layers=record_layers, mesh=mesh)

  per_step = (plan, _per_step(kv), step_noise, None if paste is None else paste.per_step(),
              None if flowedit is None else flowedit.per_step())
  state, aux = sampler_lib.run_in_chunks(run_chunk, solvers.init_state(x_init), per_step, plan.steps, on_step)
  return state.x, aux
