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
  """keep (n, 1, T) in [0, 1]; source_row (n,) int32: the row whose new state is the reference of a
  row without a clean latent; from_clean (n,) bool: the rows whose reference is their clean latent
  clean (n, C, T) noised with noise (steps, n, C, T); clean_scale and noise_scale (steps,): the new
  level's coefficients (see the module). Without clean latents (None) every reference is a row. The
  per-step arrays have the sampler's steps (a chunk's steps when run in chunks)."""

  keep: Array
  source_row: Array
  from_clean: Array | None = None
  clean: Array | None = None
  noise: Array | None = None
  clean_scale: Array | None = None
  noise_scale: Array | None = None

  @property
  def n(self) -> int:
    return int(self.keep.shape[0])

  def per_step(self) -> dict:
    return {} if self.clean is None else {"noise": self.noise, "clean_scale": self.clean_scale,
                                          "noise_scale": self.noise_scale}

  def fixed(self) -> "Paste":
    return self.replace(noise=None, clean_scale=None, noise_scale=None)


def kind(paste: Paste | None) -> str:
  """What a program's pytree depends on: none, rows (references are rows) or clean."""
  return "none" if paste is None else ("rows" if paste.clean is None else "clean")


def select(paste: Paste, indices: Sequence[int]) -> Paste:
  """The paste of some rows, in that order; a row whose reference row is left out becomes its own
  reference (it is pasted from its clean latent, or not at all)."""
  indices = list(indices)
  position = {old: new for new, old in enumerate(indices)}
  old_source = np.asarray(paste.source_row)
  source = np.asarray([position.get(int(old_source[i]), new) for new, i in enumerate(indices)], np.int32)
  take = jnp.asarray(indices, jnp.int32)
  return paste.replace(keep=jnp.take(paste.keep, take, axis=0), source_row=jnp.asarray(source),
                       from_clean=None if paste.from_clean is None else jnp.take(paste.from_clean, take, axis=0),
                       clean=None if paste.clean is None else jnp.take(paste.clean, take, axis=0),
                       noise=None if paste.noise is None else jnp.take(paste.noise, take, axis=1))


def join(pastes: Sequence[Paste], padding: int = 0) -> Paste:
  """Pastes of consecutive rows as one (each one's reference rows offset to its place), then
  `padding` rows that are never pasted. They must be of one kind (see `kind`) and, with clean
  latents, of one step plan."""
  if len({kind(paste) for paste in pastes}) != 1:
    raise ValueError("the rows of one batch must agree on how their regions are pasted")
  offsets = np.cumsum([0] + [paste.n for paste in pastes])
  total = int(offsets[-1])
  first = pastes[0]
  frames = first.keep.shape[-1]
  keep = jnp.concatenate([paste.keep for paste in pastes] + [jnp.ones((padding, 1, frames), first.keep.dtype)])
  source = jnp.concatenate([paste.source_row + offset for paste, offset in zip(pastes, offsets)]
                           + [jnp.arange(total, total + padding, dtype=jnp.int32)])
  joined = Paste(keep=keep, source_row=source.astype(jnp.int32))
  if first.clean is None:
    return joined
  clean, noise = first.clean, first.noise
  return joined.replace(
      from_clean=jnp.concatenate([paste.from_clean for paste in pastes] + [jnp.zeros((padding,), bool)]),
      clean=jnp.concatenate([paste.clean for paste in pastes] + [jnp.zeros((padding, *clean.shape[1:]), clean.dtype)]),
      noise=jnp.concatenate([paste.noise for paste in pastes]
                            + [jnp.zeros((noise.shape[0], padding, *noise.shape[2:]), noise.dtype)], axis=1),
      clean_scale=first.clean_scale, noise_scale=first.noise_scale)


def apply(paste: Paste, x: Array, step: dict) -> Array:
  """x (n, C, T) after a step, pasted back (see the module); step: this step's per_step() entries."""
  reference = jnp.take(x, paste.source_row, axis=0)
  if paste.clean is not None:
    noised = (step["clean_scale"].astype(x.dtype) * paste.clean.astype(x.dtype)
              + step["noise_scale"].astype(x.dtype) * step["noise"].astype(x.dtype))
    reference = jnp.where(paste.from_clean[:, None, None], noised, reference)
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


def side_by_side(pastes: Sequence[Paste]) -> Paste:
  """Blocks' pastes as the rows of one call whose devices each run one block (reference rows stay
  local to their block)."""
  def cat(name: str, axis: int = 0):
    values = [getattr(paste, name) for paste in pastes]
    return None if values[0] is None else jnp.concatenate(values, axis=axis)

  first = pastes[0]
  return first.replace(keep=cat("keep"), source_row=cat("source_row"), from_clean=cat("from_clean"),
                       clean=cat("clean"), noise=cat("noise", axis=1))
