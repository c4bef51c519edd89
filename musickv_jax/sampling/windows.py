"""One diffusion process over a latent longer than the model's window (MultiDiffusion).

A latent of L frames is covered by n windows of w <= L frames, evenly spaced, each overlapping
its neighbour by at least `overlap` frames. At every step the model predicts the clean latent D_i
of every window, and the predictions are fused into one prediction for the whole latent:

  D(t) = sum_i a_i(t) D_i(t),   a_i(t) = r_i(t) / sum_j r_j(t)   (sum over windows covering t)

r_i is 1 inside a window and rises / falls as a raised cosine over the `overlap` frames at its
edges that meet another window (not at the ends of the latent), so the fusion weights are
smooth and sum to one at every frame. This is MultiDiffusion's closed-form fusion (Bar-Tal et
al. 2023: the per-pixel least-squares combination of the windows' predictions), with tapered
per-frame weights in place of its uniform ones, applied to the denoised estimate D. The solver
then steps the whole latent. DPM-Solver++ is affine in D with the same coefficients for every
frame, so fusing D equals fusing each window's stepped latent (MultiDiffusion's own form),
and the multistep history holds the fused D.

Windows are rows: the windows of a group are evaluated as one batch of G x (prompt rows), the
groups one after another (`lax.map`), so memory is bounded by the group size whatever the
length. Padding windows (to whole groups) have weight 0. A latent that fits one window is one
window of L frames with weight 1: the fused prediction is the model's own, exactly.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class WindowLayout:
  """Where the windows sit on a latent of `frames` frames (host-side; see `arrays` for the device side)."""

  frames: int  # L, the whole latent
  width: int  # w, frames per window
  overlap: int  # the least overlap between neighbours asked for (the taper length)
  starts: tuple[int, ...]  # first frame of each window

  @property
  def n_windows(self) -> int:
    return len(self.starts)

  def taper(self, i: int) -> np.ndarray:
    """r_i (width,): 1, with raised-cosine ramps over `overlap` frames at edges that meet a neighbour."""
    r = np.ones(self.width, np.float64)
    if self.overlap > 0 and self.n_windows > 1:
      ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(self.overlap) + 0.5) / self.overlap)  # (0, 1), never 0
      if i > 0:
        r[:self.overlap] = ramp
      if i < self.n_windows - 1:
        r[-self.overlap:] = ramp[::-1]
    return r

  def weights(self) -> np.ndarray:
    """a_i (n_windows, width) float32: the normalised fusion weights (they sum to one at every frame)."""
    tapers = np.stack([self.taper(i) for i in range(self.n_windows)])
    total = np.zeros(self.frames, np.float64)
    for start, r in zip(self.starts, tapers):
      total[start:start + self.width] += r
    return np.stack([r / total[start:start + self.width] for start, r in zip(self.starts, tapers)]).astype(np.float32)

  def coverage(self) -> np.ndarray:
    """(frames,) the sum of the fusion weights at every frame (1 up to float32 rounding)."""
    total = np.zeros(self.frames, np.float64)
    for start, a in zip(self.starts, self.weights()):
      total[start:start + self.width] += a
    return total

  def arrays(self, windows_per_group: int, group_multiple: int = 1) -> "Windows":
    """The device-side arrays, windows grouped `windows_per_group` at a time; the number of groups
    is rounded up to a multiple of `group_multiple` (devices). Padding windows have weight 0."""
    g = max(1, min(int(windows_per_group), self.n_windows))
    groups = math.ceil(self.n_windows / g)
    groups = group_multiple * math.ceil(groups / group_multiple)
    padded = groups * g
    index = np.zeros((padded, self.width), np.int32)
    weight = np.zeros((padded, self.width), np.float32)
    index[:] = np.arange(self.width)  # padding windows read frames 0..w-1 and add nothing
    for i, (start, a) in enumerate(zip(self.starts, self.weights())):
      index[i] = start + np.arange(self.width)
      weight[i] = a
    return Windows(index=jnp.asarray(index.reshape(groups, g, self.width)),
                   weight=jnp.asarray(weight.reshape(groups, g, self.width)))

  def seconds_start(self, hop: int, sample_rate: int) -> list[float]:
    """Each window's start in seconds (its seconds_start conditioning)."""
    return [start * hop / sample_rate for start in self.starts]

  def describe(self) -> dict:
    return {"frames": self.frames, "window_frames": self.width, "overlap_frames": self.overlap,
            "starts": list(self.starts)}


def layout(frames: int, window: int, overlap: int) -> WindowLayout:
  """Evenly spaced windows of min(window, frames) frames covering `frames`, neighbours overlapping
  by at least `overlap` frames (0 <= overlap < window)."""
  if not 0 <= overlap < window:
    raise ValueError(f"need 0 <= overlap < window, got overlap {overlap} and window {window}")
  if frames <= window:
    return WindowLayout(frames, frames, 0, (0,))
  n = math.ceil((frames - overlap) / (window - overlap))
  stride = (frames - window) / (n - 1)  # <= window - overlap
  starts = tuple(int(math.floor(i * stride)) for i in range(n - 1)) + (frames - window,)
  return WindowLayout(frames, window, overlap, starts)


@flax.struct.dataclass
class Windows:
  """Device-side windows, grouped: index (groups, G, w) int32 frame of every window position,
  weight (groups, G, w) its fusion weight (0 for padding windows)."""

  index: Array
  weight: Array

  @property
  def groups(self) -> int:
    return self.index.shape[0]

  @property
  def per_group(self) -> int:
    return self.index.shape[1]


def gather(x: Array, windows: Windows) -> Array:
  """x (B, C, L) -> (groups, G * B, C, w): row g * B + b of a group is window g of sample b."""
  b, c, _ = x.shape
  groups, g, w = windows.index.shape
  taken = x[:, :, windows.index]  # (B, C, groups, G, w)
  return jnp.transpose(taken, (2, 3, 0, 1, 4)).reshape(groups, g * b, c, w)


def fuse(denoised: Array, windows: Windows, frames: int) -> Array:
  """(groups, G * B, C, w) window predictions -> (B, C, L): the weighted sum at every frame."""
  groups, g, w = windows.index.shape
  rows, c = denoised.shape[1], denoised.shape[2]
  b = rows // g
  per_window = denoised.reshape(groups, g, b, c, w) * windows.weight[:, :, None, None, :].astype(denoised.dtype)
  per_window = jnp.transpose(per_window, (2, 3, 0, 1, 4))  # (B, C, groups, G, w)
  return jnp.zeros((b, c, frames), denoised.dtype).at[:, :, windows.index].add(per_window)


# ----------------------------------------------------------------------------- rows of a group


def group_rows(array: Array, axis: int, windows_per_group: int, batch: int) -> Array:
  """Per-row values of B prompts laid out [branch][prompt] along `axis` (branches * B entries) ->
  the group's rows [branch][window][prompt] (branches * G * B entries): every window of the group
  carries its prompts' values."""
  array = jnp.asarray(array)
  shape = array.shape
  branches = shape[axis] // batch
  split = array.reshape(shape[:axis] + (branches, 1, batch) + shape[axis + 1:])
  tiled = jnp.repeat(split, windows_per_group, axis=axis + 1)
  return tiled.reshape(shape[:axis] + (branches * windows_per_group * batch,) + shape[axis + 1:])


def group_source_index(source_index: Array, windows_per_group: int, batch: int) -> Array:
  """(branches * B,) the row each row blends K/V from -> the same within every window of a group:
  window g's rows blend from window g's source rows."""
  source_index = np.asarray(source_index)
  branches = source_index.shape[0] // batch
  out = np.zeros((branches, windows_per_group, batch), np.int32)
  for row, src in enumerate(source_index):
    branch, prompt = divmod(row, batch)
    src_branch, src_prompt = divmod(int(src), batch)
    for g in range(windows_per_group):
      out[branch, g, prompt] = src_branch * windows_per_group * batch + g * batch + src_prompt
  return jnp.asarray(out.reshape(-1))
