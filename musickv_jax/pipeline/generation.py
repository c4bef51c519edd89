"""Text-to-music: conditioning -> noise (or given x_T) -> the guided sampler -> decode -> trim.

Follows the reference pipelines (diffusers StableAudioPipeline): the model's full latent window
by default, decoded and trimmed to [audio_start_in_s, audio_end_in_s].
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from musickv_jax import vae_ops
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.pipeline import common
from musickv_jax.pipeline.conditioning import guided_conditioning
from musickv_jax.pipeline.settings import GenerationSettings
from musickv_jax.sampling import guided


@dataclasses.dataclass
class Generation:
  audio: np.ndarray  # (n, channels, samples) float32, trimmed
  latents: np.ndarray  # (n, C, T) final latents
  sample_rate: int
  settings: GenerationSettings
  latent_frames: int
  audio_end_in_s: float  # resolved (the model's maximum when the settings leave it open)

  def describe(self) -> dict:
    """The settings and what they resolved to, for a sidecar JSON."""
    return {"settings": self.settings.to_json_dict(),
            "resolved": {"audio_end_in_s": self.audio_end_in_s, "latent_frames": self.latent_frames,
                         "sample_rate": self.sample_rate, "use_cfg": self.settings.uses_cfg}}


def generate(model: LoadedModel, settings: GenerationSettings, *, init_latents: np.ndarray | None = None,
             decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
             on_step: common.Listener | None = None) -> Generation:
  """Generates one clip per prompt. init_latents: the exact x_T (n, C, T), used as given."""
  cfg = model.config
  settings.validate(cfg)
  n = len(settings.prompts)
  if init_latents is not None:
    x_init = jnp.asarray(common.check_init_latents(init_latents, n, settings, cfg))
  else:
    x_init = common.initial_latents(settings, cfg, n, common.latent_frames(settings, cfg))
  cond = guided_conditioning(model, settings.prompts, negative_prompt=settings.negative_prompt,
                             seconds_start=settings.audio_start_in_s, seconds_total=settings.resolved_end(cfg),
                             guidance=np.full((n,), settings.guidance_scale, np.float32), use_cfg=settings.uses_cfg)
  with common.progress(on_step):
    latents, _ = guided.sample_in_chunks(model.params["dit"], cond, x_init, common.step_plan(settings),
                                         common.sde_key(settings.seed), dit_config=cfg.dit, solver=settings.sampler,
                                         use_cfg=settings.uses_cfg)
  latents = common.to_host(latents)
  audio = common.decode(model, latents, *common.output_span(settings, cfg), decode_chunk_frames)
  return Generation(audio=audio, latents=latents, sample_rate=cfg.sample_rate, settings=settings,
                    latent_frames=int(x_init.shape[-1]), audio_end_in_s=settings.resolved_end(cfg))
