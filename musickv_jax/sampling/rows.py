"""How the prompts of a sampler run become the rows the DiT sees. Every rule about rows lives here.

A run has n *prompt rows* (its prompts, or the prompts of several jobs or windows one after the
other). With classifier-free guidance the DiT sees each prompt row twice, unconditional first:

  DiT row  branch * n + r    for branch 0 (unconditional) and 1 (conditional), prompt row r

and the guided prediction of prompt row r is  v_uncond + g_r (v_cond - v_uncond). Without CFG the
DiT sees the n conditional rows only. An edit row takes its keys and values from a source row of
the same branch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


class Role(enum.Enum):
  """What a prompt row is for."""

  SOURCE = "source"  # generated (or reconstructed) as it is; edits take its K/V
  EDIT = "edit"  # takes a source row's K/V in the vital layers
  PLAIN = "plain"  # generated from its prompt alone, no injection
  PADDING = "padding"  # fills a batch to its shape; computed and dropped


def uses_cfg(guidance: Sequence[float] | np.ndarray, negative_prompt: str | None) -> bool:
  """Whether the unconditional branch runs: a guidance scale other than exactly 1 anywhere, or a
  negative prompt (which only the unconditional branch sees)."""
  return bool(np.any(np.asarray(guidance, np.float64) != 1.0)) or negative_prompt is not None


def branches(use_cfg: bool) -> int:
  """DiT rows per prompt row."""
  return 2 if use_cfg else 1


def to_dit_rows(values, use_cfg: bool, axis: int = 0):
  """Per-prompt-row values (n along `axis`) -> per-DiT-row values (branches * n along `axis`):
  every branch carries its prompt row's value."""
  if not use_cfg:
    return values
  concat = jnp.concatenate if not isinstance(values, np.ndarray) else np.concatenate
  return concat([values, values], axis=axis)


def source_dit_rows(source: np.ndarray, use_cfg: bool) -> np.ndarray:
  """(n,) the prompt row each prompt row takes K/V from (itself where none) -> (branches * n,) the
  DiT row each DiT row takes them from: the source's row in the same branch."""
  source = np.asarray(source, np.int32)
  n = source.shape[0]
  return np.concatenate([branch * n + source for branch in range(branches(use_cfg))]).astype(np.int32)
