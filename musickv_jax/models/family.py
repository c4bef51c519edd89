"""The DiT of a model's family, applied the same way by the sampler whatever the family.

Both DiTs take the same controls (models.dit.KVControls: injection, bypass, recording) and return
(v, recorded K/V). Stable Audio 3's also takes the text's padding mask (its padded positions become
a learned embedding) and the inpainting conditioning; Stable Audio Open's has neither."""

from __future__ import annotations

import jax

from musickv_jax.config import DiTConfig, SA3DiTConfig
from musickv_jax.models.dit import KVCache, KVControls, StableAudioDiT
from musickv_jax.models.sa3_dit import SA3DiT

Array = jax.Array


def dit_module(config: DiTConfig | SA3DiTConfig):
  return SA3DiT(config) if isinstance(config, SA3DiTConfig) else StableAudioDiT(config)


def apply_dit(params, config: DiTConfig | SA3DiTConfig, x: Array, t: Array, cross_tokens: Array, global_cond: Array,
              controls: KVControls | None = None, *, cross_mask: Array | None = None,
              local_cond: Array | None = None) -> tuple[Array, KVCache | None]:
  """v (B, C, T) and the recorded K/V (or None) of the family's DiT. cross_mask (B, N) and
  local_cond (B, C_local, T) exist for Stable Audio 3 only."""
  if isinstance(config, SA3DiTConfig):
    return SA3DiT(config).apply({"params": params}, x, t, cross_tokens, global_cond, controls, cross_mask=cross_mask,
                                local_cond=local_cond)
  if cross_mask is not None or local_cond is not None:
    raise ValueError("Stable Audio Open's DiT takes no text padding mask and no inpainting conditioning")
  return StableAudioDiT(config).apply({"params": params}, x, t, cross_tokens, global_cond, controls)
