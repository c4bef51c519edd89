"""Region edits from the settings: which latent frames each row edits, and where the rest comes from
(sampling.regions pastes it back at every step).

A region [start, end) seconds covers the latent frames [floor(start r), ceil(end r)), r the latent
frame rate; the crossfade (region_crossfade_s, rounded to frames) lies just outside it. Only edit
rows are masked: the source and plain rows are generated whole.

The reference outside a region:
  * a generated source: the source row's own state at every step (the same noise path), so the
    result there is the source, bit for bit;
  * a recording: its clean latent noised to each step's new level with noise drawn from the seed
    (its own stream), so the last step pastes the clean latent itself: outside a region (beyond the
    crossfade) the edit's latent is the recording's, bit for bit, whatever the method.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline.settings import EditSettings
from musickv_jax.sampling import regions as regions_lib
from musickv_jax.sampling.rows import Role
from musickv_jax.sampling.sampler import StepPlan

PASTE_NOISE_STREAM = 2  # fold_in of the seed's key: independent of the initial noise (0) and the step noise (1)


def region_frames(config: ModelConfig, settings: EditSettings, frames: int) -> list[tuple[int, int]]:
  """The latent frames [first, last) of every region, checked against the latent's `frames`."""
  rate = config.sample_rate / config.vae.hop_length
  out = []
  for start, end in settings.regions:
    first, last = int(math.floor(start * rate)), min(int(math.ceil(end * rate)), frames)
    if first >= frames:
      raise SettingsError(f"{{field}} {start:g},{end:g} starts after the audio's end ({frames / rate:.2f} s); give a "
                          "region inside it", field="regions")
    out.append((first, last))
  return out


def crossfade_frames(config: ModelConfig, settings: EditSettings) -> int:
  return int(round(settings.region_crossfade_s * config.sample_rate / config.vae.hop_length))


def keep_masks(config: ModelConfig, settings: EditSettings, roles: list[Role], frames: int) -> np.ndarray:
  """(n, 1, frames) float32: each row's mask (1 everywhere for the rows that are not edits)."""
  edit_mask = regions_lib.keep_mask(frames, region_frames(config, settings, frames),
                                    crossfade_frames(config, settings))
  return np.stack([(edit_mask if role is Role.EDIT else np.ones((frames,), np.float32))[None] for role in roles])


def level_scales(config: ModelConfig, steps: StepPlan) -> tuple[np.ndarray, np.ndarray]:
  """(clean_scale, noise_scale) of every step's new level: rectified flow's (1 - t', t'), the v
  objective's (1, sigma')."""
  following = np.asarray(steps.sigma_next, np.float32)
  if config.diffusion.is_rectified_flow:
    return (np.float32(1.0) - following).astype(np.float32), following
  return np.ones_like(following), following


def paste_noise(seed: int, steps: int, shape: tuple[int, ...]) -> jax.Array:
  """(steps, *shape) the noise a recording's latent is noised with at every step (from the seed)."""
  key = jax.random.fold_in(jax.random.key(seed), PASTE_NOISE_STREAM)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32))(jnp.arange(steps))


def region_paste(config: ModelConfig, settings: EditSettings, roles: list[Role], source_index: np.ndarray,
                 steps: StepPlan, frames: int, *, clean=None, seed: int = 0,
                 step_noise=None) -> regions_lib.Paste | None:
  """The rows' Paste for the settings' regions (None without regions). clean (1, C, T): a recording's
  latent, the reference outside the regions, noised with a stochastic sampler's own step_noise
  (steps, n, C, T) when it has one (the rows' noise, so the seam is alike on both sides), else with
  noise from the seed; None: the source row's state is the reference (a generated source; FlowEdit,
  whose source row stays the recording's latent)."""
  if not settings.regions:
    return None
  n = len(roles)
  keep = jnp.asarray(keep_masks(config, settings, roles, frames))
  paste = regions_lib.Paste(keep=keep, source_row=jnp.asarray(source_index, jnp.int32))
  if clean is None:
    return paste
  clean = jnp.asarray(np.repeat(np.asarray(clean, np.float32), n, axis=0))
  noise = step_noise if step_noise is not None else jnp.repeat(
      paste_noise(seed, steps.steps, (1, *clean.shape[1:])), n, axis=1)
  clean_scale, noise_scale = level_scales(config, steps)
  return paste.replace(from_clean=jnp.ones((n,), bool), clean=clean, noise=jnp.asarray(noise, jnp.float32),
                       clean_scale=jnp.asarray(clean_scale), noise_scale=jnp.asarray(noise_scale))


def inpainting_conditioning(config: ModelConfig, settings: EditSettings, roles: list[Role],
                            clean: np.ndarray) -> np.ndarray | None:
  """Stable Audio 3's native inpainting conditioning of a recording's region edit, (n, C + 1, T):
  [known, clean * known] with known = 1 where a row keeps the recording (an edit row outside its
  regions and their crossfades; every frame of the rows that edit nothing: the source and plain
  rows hear the whole recording). None for other models and without regions."""
  if not config.is_sa3 or not settings.regions:
    return None
  clean = np.asarray(clean, np.float32)
  keep = keep_masks(config, settings, roles, int(clean.shape[-1]))  # (n, 1, T)
  known = np.where(np.asarray([role is Role.EDIT for role in roles])[:, None, None], keep == 0, True)
  known = known.astype(np.float32)
  return np.concatenate([known, clean * known], axis=1)
