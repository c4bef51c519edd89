"""MusicKV editing from text: the source (prompt 0) and its edits, with the source's self-attention
K/V injected into the edits' vital layers.

Two modes give the same result (editing.injection):
  joint   source and edits as rows of one sampling run (the reference's way);
  cached  a source run records the vital layers' K/V at every step, then one run edits from
          that cache (the same edit pass serves real-audio edits from an inversion's K/V).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from musickv_jax import vae_ops
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.editing import injection
from musickv_jax.models.dit import KVCache
from musickv_jax.pipeline import common
from musickv_jax.pipeline.conditioning import guided_conditioning
from musickv_jax.pipeline.settings import EditSettings
from musickv_jax.sampling import guided

ROLES = ("source", "edit", "plain")


@dataclasses.dataclass
class EditResult:
  audio: np.ndarray  # (n, channels, samples) float32, trimmed; one row per entry of `prompts`
  latents: np.ndarray  # (n, C, T)
  prompts: list[str]  # the prompt of each row
  roles: list[str]  # "source", "edit" or "plain" (generated without injection) per row
  sample_rate: int
  settings: EditSettings
  schedule: np.ndarray  # the validated injection weights
  latent_frames: int
  audio_end_in_s: float  # resolved seconds_total conditioning

  def describe(self) -> dict:
    """The settings and what they resolved to, for a sidecar JSON."""
    return {"settings": self.settings.generation.to_json_dict(),
            "editing": self.settings.to_json_dict() | {"schedule_values": self.schedule.tolist()},
            "resolved": {"audio_end_in_s": self.audio_end_in_s, "latent_frames": self.latent_frames,
                         "sample_rate": self.sample_rate}}


def edit(model: LoadedModel, settings: EditSettings, *, init_latents: np.ndarray | None = None,
         decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
         on_step: common.Listener | None = None) -> EditResult:
  """Generates the source and the edits. init_latents: the exact x_T (n, C, T), used as given;
  by default one noise draw from the seed is shared by every prompt, as in the reference."""
  cfg = model.config
  gen = settings.generation
  schedule = settings.validate(cfg)
  n = len(gen.prompts)
  if init_latents is not None:
    x_init = common.check_init_latents(init_latents, n, gen, cfg)
  else:
    x_init = common.shared_initial_latents(gen, cfg, n, common.latent_frames(gen, cfg))
  guidance = np.full((n,), gen.guidance_scale, np.float32)
  latents, roles = edit_latents(model, settings, schedule, x_init, guidance, on_step=on_step)
  audio = common.decode(model, latents, *common.output_span(gen, cfg), decode_chunk_frames)
  return EditResult(audio=audio, latents=latents, prompts=list(gen.prompts), roles=roles,
                    sample_rate=cfg.sample_rate, settings=settings, schedule=schedule,
                    latent_frames=int(x_init.shape[-1]), audio_end_in_s=gen.resolved_end(cfg))


def edit_latents(model: LoadedModel, settings: EditSettings, schedule: np.ndarray, x_init, guidance: np.ndarray, *,
                 on_step: common.Listener | None = None) -> tuple[np.ndarray, list[str]]:
  """The sampling part of an edit: x_init (n, C, T) and a guidance scale per prompt -> final
  latents (n, C, T) and the role of each prompt. Settings and schedule must be validated."""
  cfg = model.config
  gen = settings.generation
  n = len(gen.prompts)
  use_cfg = bool(np.any(guidance != 1.0)) or gen.negative_prompt is not None
  layout = injection.EditLayout.reference(n, settings.edit_all, use_cfg)
  roles = ["source"] + ["edit" if p in layout.edits else "plain" for p in range(1, n)]
  cond = guided_conditioning(model, gen.prompts, negative_prompt=gen.negative_prompt,
                             seconds_start=gen.audio_start_in_s, seconds_total=gen.resolved_end(cfg),
                             guidance=guidance, use_cfg=use_cfg)
  x_init = jnp.asarray(x_init)
  plan, key = common.step_plan(gen), common.sde_key(gen.seed)
  layers, skips = tuple(settings.vital_layers), tuple(settings.skip_layers)
  steps = gen.num_inference_steps
  if settings.injection_mode == "joint":
    kv = injection.joint_steps(schedule, layers, cfg.dit, layout, skips)
    with common.progress(on_step):
      latents, _ = guided.sample_in_chunks(model.params["dit"], cond, x_init, plan, key, kv, dit_config=cfg.dit,
                                           solver=gen.sampler, use_cfg=use_cfg)
    return common.to_host(latents), roles
  with common.progress(on_step, 0, 2 * steps):  # the cached mode's progress runs over both passes
    source, cache = injection.record_source(model.params["dit"], injection.take_prompts(cond, [0], n, use_cfg),
                                            x_init[:1], plan, key, layers, dit_config=cfg.dit, solver=gen.sampler,
                                            use_cfg=use_cfg, skip_layers=skips)
  others = edit_from_cache(model, settings, schedule, cache, injection.take_prompts(cond, list(range(1, n)), n, use_cfg),
                           x_init[1:], tuple(p - 1 for p in layout.edits), use_cfg=use_cfg,
                           on_step=on_step, progress_offset=steps, progress_total=2 * steps)
  return np.concatenate([common.to_host(source), others]), roles


def edit_from_cache(model: LoadedModel, settings: EditSettings, schedule: np.ndarray, cache: KVCache,
                    cond: guided.GuidedConditioning, x_init, edits: tuple[int, ...], *, use_cfg: bool,
                    on_step: common.Listener | None = None, progress_offset: int = 0,
                    progress_total: int | None = None) -> np.ndarray:
  """One sampling run of the prompts after the source (their conditioning rows in `cond`,
  x_init (m, C, T)); the runs' prompts listed in `edits` read the source's K/V from `cache`
  (k, v (steps, n_layers, R, S, H, D)). Their SDE noise streams are those of prompts 1..m, so
  the result equals the joint mode's. Returns latents (m, C, T)."""
  cfg = model.config
  gen = settings.generation
  m = int(np.shape(x_init)[0])
  layout = injection.EditLayout(m, edits, use_cfg)
  kv = injection.cached_steps(schedule, cache, cfg.dit, layout, tuple(settings.skip_layers))
  with common.progress(on_step, progress_offset, progress_total):
    latents, _ = guided.sample_in_chunks(model.params["dit"], cond, jnp.asarray(x_init), common.step_plan(gen),
                                         common.sde_key(gen.seed), kv, jnp.arange(1, m + 1), dit_config=cfg.dit,
                                         solver=gen.sampler, use_cfg=use_cfg)
  return common.to_host(latents)


def cache_from_inversion(kv: KVCache) -> KVCache:
  """K/V recorded while inverting, reordered as sampling steps: inversion step i ran at the noise
  level of sampling step (steps - 1 - i)."""
  return KVCache(kv.k[::-1], kv.v[::-1], tuple(kv.layers))

