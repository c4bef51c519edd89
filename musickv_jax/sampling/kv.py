"""MusicKV's KV injection as data for the sampler: per step, per layer and per row, how strongly a
row takes another row's self-attention keys and values.

At step i an edit row's K/V in vital layer j become  w[i, j] * source + (1 - w[i, j]) * edit;
an edit's unconditional row takes the source's unconditional K/V and its conditional row the
source's conditional K/V (sampling.rows); the source itself is never modified.

Two modes give the same result:
  joint   source and edits in one batch per step; the source K/V are rows of that batch (no cache
          memory; the reference's way).
  cached  a source pass records the vital layers' K/V at every step into a KVCache
          (steps, n_vital, source rows, S, H, D); edit passes, now or later and in any number, read
          it. Memory: steps x n_vital x 2 (k, v) x 2 (CFG branches) x S x width x bytes, e.g.
          100 x 3 x 2 x 2 x 1025 x 1536 x 4 B = 7.6 GB in float32 for SAO's full window
          (2.8 GB at 15 s with latent_length=fit; half of each in bfloat16).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.models.dit import KVCache
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling.guided import KVSteps

Array = jax.Array
MODES = ("joint", "cached")  # see the module docstring


def per_edit(schedule, n_edits: int) -> Array:
  """A schedule (steps, n_layers) shared by every edit, or (steps, n_layers, n_edits) -> the latter.
  Float32 (float64 stays float64, for gradient checks); differentiable."""
  schedule = jnp.asarray(schedule)
  schedule = schedule.astype(jnp.promote_types(schedule.dtype, jnp.float32))
  if schedule.ndim == 2:
    schedule = jnp.repeat(schedule[:, :, None], n_edits, axis=2)
  return schedule


def injection_weights(schedule, layers: Sequence[int], columns: Sequence[int], depth: int) -> Array:
  """(steps, depth, n) blend weights of n prompt rows: row r follows column columns[r] of the
  schedule (steps, n_layers, n_columns) in `layers`, and takes nothing (weight 0) where its
  column is -1 or outside `layers`. Differentiable in the schedule."""
  schedule = jnp.asarray(schedule)
  weights = jnp.zeros((schedule.shape[0], depth, len(columns)), schedule.dtype)
  if not layers:
    return weights
  layer_index = jnp.asarray(tuple(layers), jnp.int32)
  for row, column in enumerate(columns):
    if column >= 0:
      weights = weights.at[:, layer_index, row].set(schedule[:, :, column])
  return weights


def layer_mask(layers: Sequence[int], depth: int) -> np.ndarray:
  """(depth,) bool: True at `layers`."""
  mask = np.zeros((depth,), bool)
  mask[list(layers)] = True
  return mask


def bypass_rows(skips: Sequence[Sequence[int]], depth: int) -> np.ndarray:
  """(depth, n) bool: row r skips the self-attention of the layers skips[r]."""
  mask = np.zeros((depth, len(skips)), bool)
  for row, layers in enumerate(skips):
    mask[list(layers), row] = True
  return mask


def joint_controls(weights, source: np.ndarray, use_cfg: bool, blend_layers: Sequence[int], depth: int) -> KVSteps:
  """The joint mode's controls of n prompt rows as the DiT sees them: weights (steps, depth, n), the
  row each row takes K/V from (n,) (itself where none), and the layers that blend at all."""
  return KVSteps(inject_weight=rows_lib.to_dit_rows(jnp.asarray(weights), use_cfg, axis=2),
                 source_index=jnp.asarray(rows_lib.source_dit_rows(source, use_cfg)),
                 blend_layers=jnp.asarray(layer_mask(blend_layers, depth)))


def cache_source_index(n_rows: int, use_cfg: bool, cache_rows: int) -> np.ndarray:
  """(DiT rows,) the cache row every DiT row of an edit pass reads: its own branch's row when the
  cache holds both CFG branches, the one row when it holds one (e.g. recorded during a
  conditional-only inversion)."""
  branches = rows_lib.branches(use_cfg)
  if cache_rows not in (1, branches):
    raise ValueError(f"the cache holds {cache_rows} source rows but the edit pass has {branches} CFG branch(es); "
                     "record and edit with the same guidance setting")
  if cache_rows == 1:
    return np.zeros((branches * n_rows,), np.int32)
  return np.repeat(np.arange(branches, dtype=np.int32), n_rows)


def cache_from_inversion(kv: KVCache) -> KVCache:
  """K/V recorded while inverting, reordered as sampling steps: inversion step i ran at the noise
  level of sampling step (steps - 1 - i)."""
  return KVCache(kv.k[::-1], kv.v[::-1], tuple(kv.layers))
