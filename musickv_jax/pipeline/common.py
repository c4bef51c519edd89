"""What generation, editing and real-audio editing share: the latent window, the initial noise,
the step plan, progress reporting, and the decode -> trim tail."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.finite import require_finite
from musickv_jax.models import vae_ops
from musickv_jax.pipeline.settings import GenerationSettings
from musickv_jax.sampling import rf_schedules, sampler, schedules

FIT_BUCKET_FRAMES = 64  # `fit` rounds the latent length up to a multiple of this (few compiled shapes)

# A progress listener: listener(steps done, total steps) between chunks of sampling steps.
Listener = sampler.Listener


def latent_frames(settings: GenerationSettings, config: ModelConfig) -> int:
  """full: the model's window (what the references do); fit: just enough for audio_end_in_s,
  rounded up to a multiple of FIT_BUCKET_FRAMES. A model trained on variable lengths (Stable Audio
  3) always gets just enough for audio_end_in_s, ceil(seconds x rate / hop), as its pipeline does."""
  if config.variable_length:
    return math.ceil(settings.resolved_end(config) * config.sample_rate / config.vae.hop_length)
  if settings.latent_length == "full":
    return config.dit.sample_size
  needed = math.ceil(settings.resolved_end(config) * config.sample_rate / config.vae.hop_length)
  return min(config.dit.sample_size, FIT_BUCKET_FRAMES * math.ceil(needed / FIT_BUCKET_FRAMES))


def initial_latents(settings: GenerationSettings, config: ModelConfig, n: int, frames: int) -> jax.Array:
  """Unit Gaussian noise from the seed, one independent draw per prompt, scaled to the first noise
  level (sigma_max for the v objective; rectified flow starts from the noise itself, at t = 1)."""
  noise = jax.random.normal(jax.random.key(settings.seed), (n, config.dit.io_channels, frames), jnp.float32)
  if config.diffusion.is_rectified_flow:
    return noise
  return noise * schedules.init_noise_scale(settings.sigma_max, settings.noise_convention)


def shared_initial_latents(settings: GenerationSettings, config: ModelConfig, n: int, frames: int) -> jax.Array:
  """One noise draw tiled over every prompt (source and edits start from the same x_T), as the
  MusicKV reference does."""
  return jnp.tile(initial_latents(settings, config, 1, frames), (n, 1, 1))


def check_init_latents(latents: np.ndarray, n: int, settings: GenerationSettings, config: ModelConfig, *,
                       require_coverage: bool = True) -> np.ndarray:
  """Given initial latents x_T must be (n, C, T) (or (1, C, T): shared by every prompt), finite, fit
  the window and (unless the output length comes from elsewhere) cover audio_end_in_s; a model whose
  latent follows the duration (Stable Audio 3) needs exactly its frames. Returns (n, C, T) float32."""
  latents = np.asarray(latents)
  channels = config.dit.io_channels
  if latents.ndim != 3 or latents.shape[0] not in (1, n) or latents.shape[1] != channels:
    raise SettingsError(f"{{field}} has shape {latents.shape}; expected ({n}, {channels}, T) for {n} prompt(s), or "
                        f"(1, {channels}, T) shared by every prompt", field="init_latents")
  latents = np.repeat(latents, n, axis=0) if latents.shape[0] == 1 else latents
  frames = latents.shape[2]
  if not 0 < frames <= config.dit.sample_size:
    raise SettingsError(f"{{field}} has {frames} frames; the model takes 1 to {config.dit.sample_size}",
                        field="init_latents")
  if not np.issubdtype(latents.dtype, np.floating):
    raise SettingsError(f"{{field}} has dtype {latents.dtype}; expected floating point", field="init_latents")
  covered = frames * config.vae.hop_length / config.sample_rate
  if require_coverage and config.variable_length and frames != latent_frames(settings, config):
    raise SettingsError(f"{{field}} has {frames} frames, but {{audio_end_in_s}} {settings.resolved_end(config):g} s "
                        f"is {latent_frames(settings, config)} latent frames (this model's latent follows the "
                        "requested duration)", field="init_latents", mentions=("audio_end_in_s",))
  if require_coverage and settings.resolved_end(config) > covered + 1e-6:
    raise SettingsError(f"{{field}} covers {covered:.2f} s but {{audio_end_in_s}} is "
                        f"{settings.resolved_end(config):g} s", field="init_latents", mentions=("audio_end_in_s",))
  if not np.all(np.isfinite(latents)):
    raise SettingsError("{field} contains NaN or infinite values", field="init_latents")
  return latents.astype(np.float32)


def step_plan(settings: GenerationSettings, config: ModelConfig | None = None, frames: int | None = None
              ) -> sampler.StepPlan:
  """The per-step arrays of a run: the v objective's sigma schedule (the default config), or
  rectified flow's times for a latent of `frames` frames (its shift may depend on the length)."""
  if settings.init_noise_level == 0:  # starts at the reference itself: every level 0, nothing to sample
    config = ModelConfig() if config is None else config
    settings = settings.for_model(config)
    objective = config.diffusion.objective if config.diffusion.is_rectified_flow else "v"
    return sampler.make_plan(np.zeros((settings.num_inference_steps + 1,)), settings.sampler, objective)
  if config is not None and config.diffusion.is_rectified_flow:
    settings = settings.for_model(config)
    times = rf_schedules.rf_times(settings.num_inference_steps, config.diffusion.shift,
                                  config.dit.sample_size if frames is None else frames, start=settings.init_noise_level)
    return sampler.make_plan(times, settings.sampler, config.diffusion.objective)
  # without a config: the v objective's own defaults (Stable Audio Open 1.0, the default ModelConfig)
  settings = settings.for_model(ModelConfig() if config is None else config)
  sigmas = schedules.sigma_schedule(settings.sigma_schedule, settings.num_inference_steps, settings.sigma_min,
                                    start_sigma(settings))
  return sampler.make_plan(sigmas, settings.sampler)


def samples_nothing(steps: sampler.StepPlan) -> bool:
  """Whether a step plan starts at level 0 (init_noise_level 0): its result is its start."""
  return float(steps.sigma[0]) == 0.0


def start_sigma(settings: GenerationSettings) -> float:
  """The v objective's first noise level: sigma_max, or for a run started part-way the level whose
  time (atan(sigma) 2 / pi, what the DiT sees) is init_noise_level of sigma_max's."""
  if settings.init_noise_level >= 1.0:
    return float(settings.sigma_max)
  return float(np.tan(settings.init_noise_level * np.arctan(settings.sigma_max)))


def recording_seconds(config: ModelConfig, n_samples: int, asked: float | None = None) -> float:
  """The seconds conditioning of a recording edited in one window: as asked, else Stable Audio
  Open's window (the reference conditions a recording on the model's maximum) or Stable Audio 3's
  duration, the recording's own length (its latent is exactly that long)."""
  if asked is not None:
    return float(asked)
  return n_samples / config.sample_rate if config.variable_length else config.max_audio_seconds


def step_noise(seed: int, steps: int, shape: tuple[int, ...]) -> jax.Array:
  """(steps, *shape) the noise a stochastic sampler adds at each step, drawn from the seed (its own
  stream: independent of the initial noise of the same seed). Every prompt of a run shares it."""
  key = sde_key(seed)
  return jax.vmap(lambda step: jax.random.normal(jax.random.fold_in(key, step), shape, jnp.float32))(
      jnp.arange(steps))


def check_step_noise(noise: np.ndarray, steps: int, frames: int, config: ModelConfig) -> np.ndarray:
  """Given step noise must be (steps, 1, C, T) for the run's steps and latent length, finite."""
  noise = np.asarray(noise)
  expected = (steps, 1, config.dit.io_channels, frames)
  if noise.shape != expected:
    raise SettingsError(f"{{field}} has shape {noise.shape}; this run needs {expected} (steps, 1, channels, latent "
                        "frames), shared by every prompt", field="step_noise")
  if not np.issubdtype(noise.dtype, np.floating) or not np.all(np.isfinite(noise)):
    raise SettingsError("{field} must hold finite floating-point values", field="step_noise")
  return noise.astype(np.float32)


def sde_key(seed: int) -> jax.Array:
  """The SDE sampler's noise key: independent of the initial-noise draw of the same seed."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def offset_listener(on_step: Listener | None, offset: int, total: int) -> Listener | None:
  """A listener of one part of a longer run: its steps reported as on_step(offset + step, total)."""
  if on_step is None:
    return None
  return lambda step, steps: on_step(offset + step, total)


def to_host(array: jax.Array) -> np.ndarray:
  """The finished result of a (long) device computation, as NumPy. Waits in short sleeps rather
  than one blocking call, so that Ctrl-C is handled at once instead of after the last step."""
  while not array.is_ready():
    time.sleep(0.02)
  return np.asarray(array)


def decode(model: LoadedModel, latents: np.ndarray, begin: int, end: int | None,
           chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES) -> np.ndarray:
  """latents (n, C, T) -> audio (n, channels, samples)[..., begin:end]. Only the latent frames that
  hold those samples are decoded (with their context): a 15 s request in the full 47.55 s window
  decodes about 15 s, not 47.55 s."""
  hop = model.config.vae.hop_length
  frames = latents.shape[-1]
  end = frames * hop if end is None else min(end, frames * hop)
  first, last = begin // hop, -(-end // hop)
  audio = vae_ops.decode(model.params.vae, latents, model.config.vae, chunk_frames, frames=(first, last))
  audio = audio[..., begin - first * hop:end - first * hop]
  # Stable Audio 3's pipelines clamp what they decode to [-1, 1] (its decoder is not bounded)
  return np.clip(audio, -1.0, 1.0) if model.config.is_sa3 else audio


# what a person can change when sampling or decoding ran away (a huge guidance scale, extreme initial latents)
RUNAWAY_ADVICE = "a lower {guidance_scale} keeps the latents in range"


def decode_output(model: LoadedModel, latents: np.ndarray, begin: int, end: int | None,
                  chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES) -> np.ndarray:
  """`decode` of a run's final latents into the audio it returns: the latents must be finite
  (else sampling ran away) and so must the audio (else decoding did), checked here, before anything
  is written (NonFiniteError, naming the stage)."""
  require_finite(latents, stage="sampling", what="latents", advice=RUNAWAY_ADVICE,
                 mentions=("guidance_scale",))
  audio = decode(model, latents, begin, end, chunk_frames)
  require_finite(audio, stage="decoding", what="audio", advice="the latents are outside what the decoder can take; "
                 + RUNAWAY_ADVICE, mentions=("guidance_scale",))
  return audio


def output_span(settings: GenerationSettings, config: ModelConfig) -> tuple[int, int]:
  """[start, end] in samples, by int() of the positions like diffusers."""
  return int(settings.audio_start_in_s * config.sample_rate), int(settings.resolved_end(config) * config.sample_rate)
