"""Text-to-music: conditioning -> noise (or given x_T) -> the guided sampler -> decode -> trim.

Follows the reference pipelines (diffusers StableAudioPipeline): the model's full latent window
by default, decoded and trimmed to [audio_start_in_s, audio_end_in_s].
"""

from __future__ import annotations

import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.models import vae_ops
from musickv_jax.pipeline import common
from musickv_jax.pipeline.plan import build_plan, run_plan
from musickv_jax.pipeline.results import Generation
from musickv_jax.pipeline.settings import GenerationSettings


def generate(model: LoadedModel, settings: GenerationSettings, *, init_latents: np.ndarray | None = None,
             step_noise: np.ndarray | None = None, decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
             on_step: common.Listener | None = None) -> Generation:
  """Generates one clip per prompt. init_latents: the exact x_T (n, C, T), used as given.
  step_noise: a stochastic sampler's noise (steps, 1, C, T), shared by every prompt."""
  cfg = model.config
  settings = settings.for_model(cfg)
  plan = build_plan(model, settings, init_latents, step_noise=step_noise)
  latents, _ = run_plan(model, plan, on_step=on_step)
  audio = common.decode_output(model, latents, *common.output_span(settings, cfg), decode_chunk_frames)
  return Generation(audio=audio, latents=latents, sample_rate=cfg.sample_rate, settings=settings,
                    latent_frames=int(latents.shape[-1]), audio_end_in_s=settings.resolved_end(cfg),
                    use_cfg=plan.use_cfg)
