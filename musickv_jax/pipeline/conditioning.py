"""Prompts and seconds -> what the DiT is conditioned on, for the rows it sees.

The unconditional branch (CFG) is all zeros (text and seconds tokens) with the real global
vector, as the reference pipelines do, or the negative prompt's tokens with the same seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ConditionerConfig, T5Config
from musickv_jax.models.conditioning import Conditioner, Conditioning
from musickv_jax.models.t5 import T5Encoder
from musickv_jax.sampling import guided
from musickv_jax.text import tokenize


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_text(params, ids, mask, *, config: T5Config):
  return T5Encoder(config).apply({"params": params}, ids, mask)


@functools.partial(jax.jit, static_argnames=("config",))
def _condition(params, text_hidden, mask, seconds_start, seconds_total, *, config: ConditionerConfig):
  return Conditioner(config).apply({"params": params}, text_hidden, mask, seconds_start, seconds_total)


def text_conditioning(model: LoadedModel, prompts: Sequence[str], seconds_start: float,
                      seconds_total: float) -> Conditioning:
  """Prompts + seconds -> Conditioning (n, ...): T5, projection, padding zeroed, seconds tokens."""
  cfg = model.config
  ids, mask = tokenize(model.tokenizer, list(prompts), cfg.t5.max_length)
  hidden = _encode_text(model.params.t5, jnp.asarray(ids), jnp.asarray(mask), config=cfg.t5)
  n = len(prompts)
  return _condition(model.params.conditioner, hidden, jnp.asarray(mask),
                    jnp.full((n,), seconds_start, jnp.float32), jnp.full((n,), seconds_total, jnp.float32),
                    config=cfg.conditioner)


def guided_conditioning(model: LoadedModel, prompts: Sequence[str], *, negative_prompt: str | None,
                        seconds_start: float, seconds_total: float, guidance: np.ndarray,
                        use_cfg: bool) -> guided.GuidedConditioning:
  """Rows [uncond; cond] (or [cond] without CFG), with a guidance scale per prompt."""
  cond = text_conditioning(model, prompts, seconds_start, seconds_total)
  guidance = jnp.asarray(guidance, jnp.float32)
  if not use_cfg:
    return guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, guidance)
  if negative_prompt is None:
    uncond = Conditioning(jnp.zeros_like(cond.cross_tokens), cond.global_cond)
  else:
    uncond = text_conditioning(model, [negative_prompt] * len(prompts), seconds_start, seconds_total)
  return guided.GuidedConditioning(
      cross_tokens=jnp.concatenate([uncond.cross_tokens, cond.cross_tokens]),
      global_cond=jnp.concatenate([uncond.global_cond, cond.global_cond]), guidance=guidance)
