"""Prompts and seconds -> what the DiT is conditioned on, for the rows it sees.

Stable Audio Open: T5 tokens, projected, their padding zeroed, then one token per number
conditioner (seconds_start, seconds_total); the global vector from the numbers. The unconditional
branch (CFG) is all zeros (text and seconds tokens) with the real global vector, as the reference
pipelines do, or the negative prompt's tokens with the same seconds.

Stable Audio 3: T5Gemma hidden states with their padding mask, then the duration's embedding as one
more token (never masked); the same embedding is the global vector. The unconditional branch is the
encoding of the empty prompt (or the negative prompt) with the same duration, as diffusers'
StableAudio3Pipeline does; the DiT puts its learned padding embedding at the padded positions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ConditionerConfig, SA3DurationConfig, T5Config, T5GemmaConfig
from musickv_jax.models.conditioning import Conditioner, Conditioning
from musickv_jax.models.sa3_conditioning import SA3DurationEmbedder
from musickv_jax.models.t5 import T5Encoder
from musickv_jax.models.t5gemma import T5GemmaEncoder
from musickv_jax.sampling import guided
from musickv_jax.text import tokenize
from musickv_jax.text_gemma import tokenize_gemma


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_text(params, ids, mask, *, config: T5Config):
  return T5Encoder(config).apply({"params": params}, ids, mask)


@functools.partial(jax.jit, static_argnames=("config",))
def _condition(params, text_hidden, mask, seconds_start, seconds_total, *, config: ConditionerConfig):
  return Conditioner(config).apply({"params": params}, text_hidden, mask, seconds_start, seconds_total)


@functools.partial(jax.jit, static_argnames=("text_config", "duration_config"))
def _sa3_condition(text_params, duration_params, ids, mask, seconds_total, *, text_config: T5GemmaConfig,
                   duration_config: SA3DurationConfig) -> Conditioning:
  hidden = T5GemmaEncoder(text_config).apply({"params": text_params}, ids, mask)  # (n, L, D)
  duration = SA3DurationEmbedder(duration_config).apply({"params": duration_params}, seconds_total)  # (n, D)
  cross = jnp.concatenate([hidden, duration[:, None, :].astype(hidden.dtype)], axis=1)  # (n, L + 1, D)
  cross_mask = jnp.concatenate([mask.astype(bool), jnp.ones((mask.shape[0], 1), bool)], axis=1)
  return Conditioning(cross_tokens=cross, global_cond=duration, cross_mask=cross_mask)


def text_conditioning(model: LoadedModel, prompts: Sequence[str], seconds_start: float,
                      seconds_total: float) -> Conditioning:
  """Prompts + seconds -> Conditioning (n, ...) of the model's family (see the module).
  Stable Audio 3 conditions on the duration only (seconds_total); seconds_start is not used."""
  cfg = model.config
  n = len(prompts)
  if cfg.is_sa3:
    ids, mask = tokenize_gemma(model.tokenizer, list(prompts), cfg.t5.max_length)
    return _sa3_condition(model.params.t5, model.params.conditioner, jnp.asarray(ids), jnp.asarray(mask),
                          jnp.full((n,), seconds_total, jnp.float32), text_config=cfg.t5,
                          duration_config=cfg.conditioner)
  ids, mask = tokenize(model.tokenizer, list(prompts), cfg.t5.max_length)
  hidden = _encode_text(model.params.t5, jnp.asarray(ids), jnp.asarray(mask), config=cfg.t5)
  return _condition(model.params.conditioner, hidden, jnp.asarray(mask),
                    jnp.full((n,), seconds_start, jnp.float32), jnp.full((n,), seconds_total, jnp.float32),
                    config=cfg.conditioner)


def unconditional(model: LoadedModel, cond: Conditioning, n: int, *, negative_prompt: str | None,
                  seconds_start: float, seconds_total: float) -> Conditioning:
  """The unconditional branch's conditioning of n rows (see the module)."""
  if negative_prompt is not None:
    return text_conditioning(model, [negative_prompt] * n, seconds_start, seconds_total)
  if model.config.is_sa3:
    return text_conditioning(model, [""] * n, seconds_start, seconds_total)
  return Conditioning(jnp.zeros_like(cond.cross_tokens), cond.global_cond)


def guided_conditioning(model: LoadedModel, prompts: Sequence[str], *, negative_prompt: str | None,
                        seconds_start: float, seconds_total: float, guidance: np.ndarray,
                        use_cfg: bool) -> guided.GuidedConditioning:
  """Rows [uncond; cond] (or [cond] without CFG), with a guidance scale per prompt."""
  cond = text_conditioning(model, prompts, seconds_start, seconds_total)
  guidance = jnp.asarray(guidance, jnp.float32)
  if not use_cfg:
    return guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, guidance, cross_mask=cond.cross_mask)
  uncond = unconditional(model, cond, len(prompts), negative_prompt=negative_prompt, seconds_start=seconds_start,
                         seconds_total=seconds_total)
  mask = None if cond.cross_mask is None else jnp.concatenate([uncond.cross_mask, cond.cross_mask])
  return guided.GuidedConditioning(
      cross_tokens=jnp.concatenate([uncond.cross_tokens, cond.cross_tokens]),
      global_cond=jnp.concatenate([uncond.global_cond, cond.global_cond]), guidance=guidance, cross_mask=mask)
