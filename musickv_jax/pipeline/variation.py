"""Generation from a recording: audio-to-audio (a variation that starts from the recording's latent
noised part-way) and inpainting (regenerating spans of it, conditioned on the rest).

Audio-to-audio, as Stable Audio 3's audio-to-audio pipeline and SDEdit do: the recording's latent
(encoded, then zero-padded or cut to the generation's length) is mixed with noise at the level
`init_noise_level` s of the model's time axis, and sampling runs from there:
  rectified flow  x = (1 - s) latent + s noise, on the schedule that starts at s
  v objective     x = latent + sigma_s noise, sigma_s = tan(s atan(sigma_max)) (the DiT's time s)
s = 1 is plain generation (the recording is ignored); smaller s keeps more of it.

Inpainting (Stable Audio 3's native conditioning, diffusers' StableAudio3InpaintPipeline): every
DiT block adds a projection of [mask, latent * mask] (mask 1 = keep, 0 = regenerate, per latent
frame), and sampling starts from pure noise; nothing is pasted back. The regenerated frames of
[start, end) seconds are [int(start rate / hop), min(int(end rate / hop), frames)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.audio import pad_to_hop
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.models import vae_ops
from musickv_jax.pipeline import common
from musickv_jax.pipeline.plan import build_plan, run_plan
from musickv_jax.pipeline.results import Generation
from musickv_jax.pipeline.settings import GenerationSettings

DEFAULT_NOISE_LEVEL = 0.6  # audio-to-audio / SDEdit left without a level: a variation that keeps the form


def reference_latents(model: LoadedModel, audio: np.ndarray, frames: int) -> np.ndarray:
  """(channels, samples) audio at the model's rate -> its latent (1, C, frames): encoded (the
  posterior mean), then zero-padded or cut to `frames`, as the pipelines do."""
  cfg = model.config
  padded = pad_to_hop(np.asarray(audio, np.float32), cfg.vae.hop_length)[None]
  latent = np.asarray(vae_ops.encode(model.params.vae, padded, cfg.vae).mean)
  if latent.shape[-1] >= frames:
    return latent[..., :frames]
  return np.pad(latent, [(0, 0), (0, 0), (0, frames - latent.shape[-1])])


def noised(config: ModelConfig, latent: np.ndarray, noise: np.ndarray, settings: GenerationSettings) -> np.ndarray:
  """The reference latent (1 or n, C, T) noised to the settings' init_noise_level (see the module)."""
  level = settings.init_noise_level
  if config.diffusion.is_rectified_flow:
    return ((1.0 - np.float32(level)) * latent + np.float32(level) * noise).astype(np.float32)
  return (latent + np.float32(common.start_sigma(settings)) * noise).astype(np.float32)


def unit_noise(settings: GenerationSettings, config: ModelConfig, n: int, frames: int) -> np.ndarray:
  """(n, C, frames) standard normal noise from the seed, one draw shared by every prompt."""
  noise = jax.random.normal(jax.random.key(settings.seed), (1, config.dit.io_channels, frames), jnp.float32)
  return np.repeat(np.asarray(noise), n, axis=0)


def _check_noise(noise, n: int, config: ModelConfig, frames: int, field: str = "init_latents") -> np.ndarray:
  noise = np.asarray(noise)
  expected = {(n, config.dit.io_channels, frames), (1, config.dit.io_channels, frames)}
  if noise.shape not in expected or not np.issubdtype(noise.dtype, np.floating) or not np.all(np.isfinite(noise)):
    raise SettingsError(f"{{field}} has shape {noise.shape}; a run from a recording needs the noise it mixes in, "
                        f"finite, of shape ({n}, {config.dit.io_channels}, {frames}) or (1, ...) shared by every "
                        "prompt", field=field)
  return np.broadcast_to(noise, (n, config.dit.io_channels, frames)).astype(np.float32)


def audio_to_audio(model: LoadedModel, audio: np.ndarray, settings: GenerationSettings, *, noise=None,
                   step_noise=None, on_step: common.Listener | None = None) -> Generation:
  """A generation of every prompt from a recording (channels, samples at the model's rate), started
  at settings.init_noise_level (see the module). noise (n or 1, C, T): what is mixed with the
  recording's latent (default: drawn from the seed); step_noise: a stochastic sampler's (steps, 1, C, T)."""
  cfg = model.config
  settings = settings.for_model(cfg)
  settings.validate(cfg)
  n = len(settings.prompts)
  frames = common.latent_frames(settings, cfg)
  latent = reference_latents(model, audio, frames)
  noise = unit_noise(settings, cfg, n, frames) if noise is None else _check_noise(noise, n, cfg, frames)
  return _generate(model, settings, noised(cfg, latent, noise, settings), step_noise, None, on_step)


def inpainting_mask(config: ModelConfig, frames: int, regions: Sequence[tuple[float, float]]) -> np.ndarray:
  """(1, 1, frames) float32: 0 on the latent frames of every region [start, end) seconds, 1 elsewhere."""
  if not regions:
    raise SettingsError("{field} needs at least one START,END span (seconds) to regenerate", field="inpaint_range")
  rate = config.sample_rate / config.vae.hop_length
  mask = np.ones((1, 1, frames), np.float32)
  for start, end in regions:
    if not (np.isfinite(start) and np.isfinite(end) and 0.0 <= start < end):
      raise SettingsError(f"{{field}} {start:g},{end:g}: a span needs 0 <= START < END (seconds)",
                          field="inpaint_range")
    first, last = int(start * rate), min(int(end * rate), frames)
    if first >= last:
      raise SettingsError(f"{{field}} {start:g},{end:g} holds no whole latent frame of this {frames}-frame run "
                          f"({frames / rate:.2f} s at {rate:.2f} frames a second); widen it or move it earlier",
                          field="inpaint_range")
    mask[..., first:last] = 0.0
  return mask


def inpaint(model: LoadedModel, audio: np.ndarray, settings: GenerationSettings,
            regions: Sequence[tuple[float, float]], *, noise=None, step_noise=None,
            on_step: common.Listener | None = None) -> Generation:
  """Every prompt regenerates the `regions` (seconds) of a recording, conditioned on the rest (Stable
  Audio 3's inpainting conditioning; see the module). noise: the initial latents (n or 1, C, T)
  (default: drawn from the seed, shared by every prompt)."""
  cfg = model.config
  if not cfg.is_sa3:
    raise SettingsError("{field} uses the inpainting conditioning of Stable Audio 3; this model has none (to change "
                        "one part of a recording with any model: musickv-edit --edit_region)", field="inpaint_range")
  settings = dataclasses.replace(settings.for_model(cfg), init_noise_level=1.0)
  settings.validate(cfg)
  n = len(settings.prompts)
  frames = common.latent_frames(settings, cfg)
  latent = reference_latents(model, audio, frames)
  mask = inpainting_mask(cfg, frames, regions)
  local = np.repeat(np.concatenate([mask, latent * mask], axis=1), n, axis=0)  # (n, C + 1, T)
  x_init = unit_noise(settings, cfg, n, frames) if noise is None else _check_noise(noise, n, cfg, frames)
  return _generate(model, settings, x_init, step_noise, local, on_step)


def _generate(model: LoadedModel, settings: GenerationSettings, x_init: np.ndarray, step_noise, local_cond,
              on_step) -> Generation:
  cfg = model.config
  plan = build_plan(model, settings, x_init, step_noise=step_noise, local_cond=local_cond)
  latents, _ = run_plan(model, plan, on_step=on_step)
  audio = common.decode_output(model, latents, *common.output_span(settings, cfg))
  return Generation(audio=audio, latents=latents, sample_rate=cfg.sample_rate, settings=settings,
                    latent_frames=int(latents.shape[-1]), audio_end_in_s=settings.resolved_end(cfg),
                    use_cfg=plan.use_cfg)
