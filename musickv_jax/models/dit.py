"""The Stable Audio Open diffusion transformer (DiT) with the MusicKV self-attention hook.

Shapes: latents x (B, C, T) channels-first like the PyTorch models; inside, tokens are
(B, S, D) with S = T + 1 (a global token is prepended). The `depth` identical blocks are one
stacked parameter tree run under `nn.scan`, so the model compiles one block, not 24.

The hook is steered by `KVControls` (data, not module state):
  * inject: blend each sample's self-attention K/V with a reference K/V, per layer and sample,
    the reference coming either from another row of the batch (`source_index`, the "joint"
    mode) or from an external `KVCache` (the "cached" mode);
  * bypass: skip a layer's self-attention (residual only);
  * record: return the own K/V of chosen layers as a `KVCache`.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import DiTConfig, to_jnp_dtype
from musickv_jax.models import kv_hook
from musickv_jax.models.attention import CrossAttention, SelfAttention, rotary_tables
from musickv_jax.models.kv_hook import KVCache, KVControls, LayerInputs  # noqa: F401 (the hook's types, re-exported)
from musickv_jax.models.layers import MLP2, Dense, LayerNorm, dense_apply, dense_init, in_row_blocks, wide

Array = jax.Array


@flax.struct.dataclass
class SharedInputs:
  """What every block gets alike (broadcast over the scan).

  context: (B, N, cond_token_dim) cross-attention tokens.
  rope: cos, sin tables (S, rotary_dim).
  source_index: (B,) int32, the row of the reference each row blends in, or None.
  injected_k, injected_v: (n, R, S, H, D) an external cache (cached mode), or None.
  """

  context: Array
  rope: tuple[Array, Array]
  source_index: Array | None = None
  injected_k: Array | None = None
  injected_v: Array | None = None

  @property
  def has_reference(self) -> bool:
    return self.source_index is not None or self.injected_k is not None


class DiTBlock(nn.Module):
  """LayerNorm -> self-attention (rotary, hook) -> LayerNorm -> GQA cross-attention ->
  LayerNorm -> GLU feed-forward, each with a residual. Scanned over layers."""

  config: DiTConfig

  @nn.compact
  def __call__(self, carry, layer: LayerInputs, shared: SharedInputs):
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    h, record_k, record_v = carry

    attn = SelfAttention(cfg.embed_dim, cfg.num_heads, dtype=dtype, implementation=cfg.attention, qk_norm=cfg.qk_norm,
                         qk_norm_eps=cfg.qk_norm_eps, name="self_attn")
    q, k, v = attn.qkv(LayerNorm(cfg.norm_eps, name="self_norm")(h))
    own_k, own_v = k, v

    if shared.has_reference:  # blend toward the reference; weight 0 (no reference here) is exact
      k, v = kv_hook.blend_toward_reference(k, v, layer, source_index=shared.source_index,
                                            injected_k=shared.injected_k, injected_v=shared.injected_v)
    if record_k is not None:
      record_k, record_v = kv_hook.record(record_k, record_v, own_k, own_v, layer)

    attn_out = attn.attend(q, k, v, shared.rope)
    h = jnp.where(jnp.reshape(layer.bypass, (-1, 1, 1)), h, h + attn_out)

    cross = CrossAttention(cfg.embed_dim, cfg.num_heads, cfg.cross_kv_heads, dtype=dtype,
                           implementation=cfg.attention, qk_norm=cfg.qk_norm, qk_norm_eps=cfg.qk_norm_eps,
                           name="cross_attn")
    h = h + cross(LayerNorm(cfg.norm_eps, name="cross_norm")(h), shared.context)

    # the GLU feed-forward as a function of its parameters (Dense-shaped dicts), so that it can run
    # a block of batch rows at a time where that is faster (layers.in_row_blocks)
    ff_in = self.param("ff_in", dense_init(cfg.embed_dim, 2 * cfg.ff_inner_dim))
    ff_out = self.param("ff_out", dense_init(cfg.ff_inner_dim, cfg.embed_dim))

    def feed_forward(x):
      x, gate = jnp.split(dense_apply(ff_in, x, dtype), 2, axis=-1)
      return dense_apply(ff_out, x * nn.silu(gate), dtype)

    h = h + in_row_blocks(feed_forward, LayerNorm(cfg.norm_eps, name="ff_norm")(h))
    return (h, record_k, record_v), None


class TimestepFeatures(nn.Module):
  """[cos, sin](2 pi t W) with a fixed random W (stored in the checkpoint)."""

  dim: int

  @nn.compact
  def __call__(self, t: Array) -> Array:
    w = self.param("W", nn.initializers.normal(16.0), (self.dim // 2,))
    angles = 2 * np.pi * t.astype(jnp.float32)[:, None] * w.astype(jnp.float32)[None, :]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class StableAudioDiT(nn.Module):
  """Stable Audio Open's DiT. Predicts v for latents x at timestep t in [0, 1].

  Args to __call__:
    x: (B, C, T) model input (already scaled by c_in).
    t: (B,) or () timestep, atan(sigma) * 2 / pi.
    cross_tokens: (B, N, cond_input_dim) conditioning tokens (text + seconds).
    global_cond: (B, global_cond_dim) the global (seconds) vector.
    controls: optional KVControls for injection / bypass / recording.
  Returns (v, recorded) with v (B, C, T) and recorded a KVCache (or None).
  """

  config: DiTConfig

  @nn.compact
  def __call__(self, x: Array, t: Array, cross_tokens: Array, global_cond: Array,
               controls: KVControls | None = None) -> tuple[Array, KVCache | None]:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    batch, channels, length = x.shape
    chex.assert_shape(x, (batch, cfg.io_channels, length))
    chex.assert_shape(cross_tokens, (batch, None, cfg.cond_input_dim))
    chex.assert_shape(global_cond, (batch, cfg.global_cond_dim))
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    controls = controls or KVControls()
    kv_hook.validate_controls(controls, cfg.depth, batch)

    context = MLP2(cfg.cond_token_dim, cfg.cond_token_dim, use_bias=False, dtype=dtype,
                   name="cond_mlp")(cross_tokens)
    global_embed = MLP2(cfg.embed_dim, cfg.embed_dim, use_bias=False, dtype=dtype,
                        name="global_mlp")(global_cond)
    time_embed = MLP2(cfg.embed_dim, cfg.embed_dim, use_bias=True, dtype=dtype,
                      name="timestep_mlp")(TimestepFeatures(cfg.time_features_dim, name="timestep_features")(t))
    global_embed = global_embed + time_embed  # (B, D)

    tokens = x.transpose(0, 2, 1)  # (B, T, C)
    tokens = tokens + Dense(channels, use_bias=False, dtype=dtype, name="preprocess_conv")(tokens)
    tokens = Dense(cfg.embed_dim, use_bias=False, dtype=dtype, name="proj_in")(tokens)
    h = jnp.concatenate([global_embed[:, None, :].astype(tokens.dtype), tokens], axis=1)  # (B, S, D)
    seq = length + 1

    layer_inputs, records = self._layer_inputs(controls, batch, seq, dtype)
    shared = SharedInputs(context=context, rope=rotary_tables(seq, cfg.rotary_dim, cfg.rotary_base),
                          source_index=controls.source_index,
                          injected_k=controls.injected.k if controls.injected is not None else None,
                          injected_v=controls.injected.v if controls.injected is not None else None)

    blocks = nn.scan(DiTBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast), length=cfg.depth)(cfg, name="blocks")
    (h, record_k, record_v), _ = blocks((h, *records), layer_inputs, shared)

    out = Dense(channels, use_bias=False, dtype=dtype, name="proj_out")(h)[:, 1:]  # drop the global token
    out = out + Dense(channels, use_bias=False, dtype=dtype, name="postprocess_conv")(out)
    out = out.transpose(0, 2, 1).astype(wide(out.dtype))
    recorded = None
    if controls.record_layers:
      recorded = KVCache(record_k, record_v, tuple(controls.record_layers))
    return out, recorded

  def _layer_inputs(self, controls: KVControls, batch: int, seq: int, dtype) -> tuple[LayerInputs, tuple]:
    """Per-layer scan inputs and the (zeroed) record buffers (models/kv_hook.py)."""
    cfg = self.config
    return kv_hook.layer_inputs(controls, depth=cfg.depth, batch=batch, seq=seq, heads=cfg.num_heads,
                                key_dim=cfg.head_dim, value_dim=cfg.head_dim, dtype=dtype)
