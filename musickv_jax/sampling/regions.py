"""Region edits: only parts of the latent follow the edit; everywhere else the result is the source.

After every sampler step, where a row's `keep` mask is below 1 its state is replaced by its
reference at the step's new noise level (RePaint-style paste-back), crossfading where 0 < keep < 1:

  x' <- keep x' + (1 - keep) reference'

The reference of an edit row is
  * a generated source's row (`source_row`): that row's own new state, the same noise path, or
  * a recording's clean latent noised to the new level with this step's noise:
        reference' = clean_scale' clean + noise_scale' noise'
    (rectified flow: (1 - t') clean + t' noise; the v objective: clean + sigma' noise), so at the
    last step (level 0) the reference is the clean latent itself and the row equals the recording
    there, bit for bit.
Rows that edit everywhere, sources and padding have keep = 1 everywhere. Every array is data: a
new region or crossfade never recompiles, and keep = 0 and keep = 1 are exact (selected, not mixed).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@flax.struct.dataclass
class Paste:
  """keep (n, 1, T) in [0, 1]; source_row (n,) int32: the row whose new state is the reference where
  no clean latent is given; clean (n, C, T) or None; noise (steps, n, C, T) or None; clean_scale and
  noise_scale (steps,): the new level's coefficients (see the module). The per-step arrays are sliced
  with the sampler's steps (sampler.take_steps)."""

  keep: Array
  source_row: Array
  clean: Array | None = None
  noise: Array | None = None
  clean_scale: Array | None = None
  noise_scale: Array | None = None

  def per_step(self) -> dict:
    return {} if self.clean is None else {"noise": self.noise, "clean_scale": self.clean_scale,
                                          "noise_scale": self.noise_scale}

  def fixed(self) -> "Paste":
    return self.replace(noise=None, clean_scale=None, noise_scale=None)


def apply(paste: Paste, x: Array, step: dict) -> Array:
  """x (n, C, T) after a step, pasted back (see the module); step: this step's per_step() entries."""
  if paste.clean is None:
    reference = jnp.take(x, paste.source_row, axis=0)
  else:
    reference = (step["clean_scale"].astype(x.dtype) * paste.clean.astype(x.dtype)
                 + step["noise_scale"].astype(x.dtype) * step["noise"].astype(x.dtype))
  keep = paste.keep.astype(x.dtype)
  mixed = keep * x + (1 - keep) * reference
  return jnp.where(keep == 1, x, jnp.where(keep == 0, reference, mixed))


def keep_mask(frames: int, regions: Sequence[tuple[int, int]], crossfade: int) -> np.ndarray:
  """(frames,) float32: 1 inside every region [first, last) of latent frames, 0 outside, rising and
  falling linearly over `crossfade` frames just outside each region's edges (so that outside a
  region and its crossfade the result is the source's exactly)."""
  mask = np.zeros((frames,), np.float64)
  frame = np.arange(frames)
  for first, last in regions:
    inside = ((frame >= first) & (frame < last)).astype(np.float64)
    if crossfade > 0:
      rise = np.clip((frame - (first - crossfade) + 1) / (crossfade + 1), 0.0, 1.0) * (frame < first)
      fall = np.clip(((last - 1 + crossfade) - frame + 1) / (crossfade + 1), 0.0, 1.0) * (frame >= last)
      inside = np.maximum(inside, np.maximum(rise, fall))
    mask = np.maximum(mask, inside)
  return mask.astype(np.float32)
