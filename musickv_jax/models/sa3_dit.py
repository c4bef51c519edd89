"""The Stable Audio 3 diffusion transformer (diffusers' StableAudio3DiTModel) with the MusicKV hook.

Shapes: latents x (B, C, T) channels-first; inside, tokens are (B, S, D) with
S = M + T / patch_size: `num_memory_tokens` (M) learned tokens are prepended to the audio frames
and dropped before the output. The `depth` identical blocks are one stacked parameter tree run
under `nn.scan` (one compiled block).

Conditioning (what the pipeline builds):
  * cross_tokens (B, N, cond_token_dim): text hidden states with the duration embedding appended
    as one more token. Padded positions (cross_mask False) are replaced by the learned
    `prompt_padding_embedding` in this raw space; after that the cross-attention is NOT masked.
  * global_cond (B, global_cond_dim): the duration embedding. Projected, added to the embedding of
    the timestep (sigma itself, expo Fourier features), then expanded to the 6 AdaLN chunks.
  * local_cond (B, local_add_cond_dim, T) or None: inpainting conditioning
    (`cat([mask, reference * mask])`), projected per block and added to the audio positions after
    the cross-attention, before the feed-forward.

Block: RMSNorm, AdaLN (scale, shift) -> self-attention (RMS q/k norm, rotary on the first half of
each head's channels, positions counting the memory tokens first; differential:
attn(q1, k1, v) - attn(q2, k2, v) with no lambda) gated by sigmoid(1 - gate) -> RMSNorm ->
cross-attention (differential too, not modulated) -> + local conditioning -> RMSNorm, AdaLN ->
SwiGLU feed-forward gated by sigmoid(1 - gate). The AdaLN chunks, in order scale, shift, gate
(attention), scale, shift, gate (feed-forward), are the shared modulation plus a learned per-block
vector.

The MusicKV hook takes `models.dit.KVControls` with the semantics of `models.dit.StableAudioDiT`
(inject_weight, source_index, injected, bypass, blend_layers, record_layers). What is blended and
recorded are the keys and values the attention actually sees: after the q/k RMSNorm and after the
rotary embedding (a blend does not commute with the norm). With differential attention the keys
are both branches side by side:
    k = concat([k1, k2], axis=-1)  (B, S, H, 2 * head_dim),   v (B, S, H, head_dim);
without it k is (B, S, H, head_dim). A recorded KVCache holds k (n, B, S, H, 2D or D) and
v (n, B, S, H, D). Blending is `models.attention.blend_kv` (exact at weight 0 and 1).

Every one of the S positions is blended, the memory tokens included: after the first layer their
states depend on the whole sequence (they attend to every audio frame), so they carry the source's
content like the frames do, and blending all of S makes weight 1 mean "attend exactly to the
source's keys and values" (Stable Audio Open's prepended global token is blended for the same
reason). Rotary positions are identical for source and edit, so blending after the rotation is the
same as rotating the blend.
"""

from __future__ import annotations


import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from musickv_jax.config import SA3DiTConfig, to_jnp_dtype
from musickv_jax.models import attention_kernels
from musickv_jax.models.attention import QKNorm, apply_rotary, rotary_tables
from musickv_jax.models import kv_hook
from musickv_jax.models.kv_hook import KVCache, KVControls, LayerInputs
from musickv_jax.models.layers import MLP2, Dense, dense_apply, dense_init, in_row_blocks, wide
from musickv_jax.models.sa3_conditioning import expo_features, expo_frequencies

Array = jax.Array

# The DiT's timestep features (diffusers builds StableAudio3ExpoFourierFeatures with its defaults).
TIME_MIN_FREQ = 0.5
TIME_MAX_FREQ = 10000.0





# ----------------------------------------------------------------------------- pieces


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * scale over the last axis, computed in float32 (or wider)."""

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    dtype = wide(x.dtype)
    x32 = x.astype(dtype)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(dtype)).astype(x.dtype)


def modulate(x: Array, shift: Array, scale: Array) -> Array:
  """AdaLN: x (B, S, D) * (1 + scale) + shift, with scale, shift (B, D) broadcast over S."""
  dtype = wide(x.dtype)
  out = x.astype(dtype) * (1 + scale.astype(dtype)[:, None, :]) + shift.astype(dtype)[:, None, :]
  return out.astype(x.dtype)


def gated(x: Array, gate: Array) -> Array:
  """x (B, S, D) * sigmoid(1 - gate) with gate (B, D): the residual branches' AdaLN gate."""
  dtype = wide(x.dtype)
  return (x.astype(dtype) * jax.nn.sigmoid(1 - gate.astype(dtype))[:, None, :]).astype(x.dtype)


def _split_heads(x: Array, num_heads: int) -> Array:
  return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)  # (B, S, H*D) -> (B, S, H, D)


def _attend(q: Array, k: Array, v: Array, head_dim: int, implementation: str, self_attention: bool) -> Array:
  """softmax(q k^T / sqrt(D)) v, or its differential form when q, k hold two branches side by side:
  q, k (B, Sq|Sk, H, 2D), v (B, Sk, H, D) -> attn(q1, k1, v) - attn(q2, k2, v)."""
  run = lambda q, k: attention_kernels.attention(q, k, v, implementation, self_attention=self_attention)  # noqa: E731
  if q.shape[-1] == head_dim:
    return run(q, k)
  q1, q2 = jnp.split(q, 2, axis=-1)
  k1, k2 = jnp.split(k, 2, axis=-1)
  return run(q1, k1) - run(q2, k2)  # (B, Sq, H, D)


class SA3SelfAttention(nn.Module):
  """Self-attention in two halves around the hook (like models.attention.SelfAttention):
    * `qkv(x, rope)` returns q, k (B, S, H, 2D or D), v (B, S, H, D): normalised and rotated, the
      K/V a cache records and a blend replaces;
    * `attend(q, k, v)` finishes the layer from (possibly replaced) K/V.
  One fused projection gives [q1 | q2 | k1 | k2 | v] (differential) or [q | k | v]; one q norm and
  one k norm serve both branches."""

  config: SA3DiTConfig

  def setup(self):
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    parts = 5 if cfg.differential else 3
    self.qkv_proj = Dense(parts * cfg.embed_dim, use_bias=False, dtype=dtype)
    self.out = Dense(cfg.embed_dim, use_bias=False, dtype=dtype)
    self.q_norm = QKNorm("rms", cfg.norm_eps)
    self.k_norm = QKNorm("rms", cfg.norm_eps)

  def qkv(self, x: Array, rope: tuple[Array, Array]) -> tuple[Array, Array, Array]:
    cfg = self.config
    cos, sin = rope
    parts = jnp.split(self.qkv_proj(x), 5 if cfg.differential else 3, axis=-1)  # each (B, S, D_model)
    parts = [_split_heads(p, cfg.num_heads) for p in parts]  # each (B, S, H, D)
    branches = 2 if cfg.differential else 1
    qs, ks, v = parts[:branches], parts[branches:2 * branches], parts[-1]
    qs = [apply_rotary(self.q_norm(q), cos, sin) for q in qs]
    ks = [apply_rotary(self.k_norm(k), cos, sin) for k in ks]
    return jnp.concatenate(qs, axis=-1), jnp.concatenate(ks, axis=-1), v

  def attend(self, q: Array, k: Array, v: Array) -> Array:
    cfg = self.config
    out = _attend(q, k, v, cfg.head_dim, cfg.attention, self_attention=True)  # (B, S, H, D)
    return self.out(out.reshape(*out.shape[:2], -1))


class SA3CrossAttention(nn.Module):
  """Cross-attention to the projected context: to_q [q1 | q2], to_kv [k1 | k2 | v] (differential) or
  q and [k | v]; RMS q/k norm; no rotary, no mask."""

  config: SA3DiTConfig

  @nn.compact
  def __call__(self, x: Array, context: Array) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    branches = 2 if cfg.differential else 1
    qs = jnp.split(Dense(branches * cfg.embed_dim, use_bias=False, dtype=dtype, name="q")(x), branches, axis=-1)
    kvs = jnp.split(Dense((branches + 1) * cfg.embed_dim, use_bias=False, dtype=dtype, name="kv")(context),
                    branches + 1, axis=-1)
    q_norm, k_norm = QKNorm("rms", cfg.norm_eps, name="q_norm"), QKNorm("rms", cfg.norm_eps, name="k_norm")
    q = jnp.concatenate([q_norm(_split_heads(p, cfg.num_heads)) for p in qs], axis=-1)  # (B, S, H, bD)
    k = jnp.concatenate([k_norm(_split_heads(p, cfg.num_heads)) for p in kvs[:-1]], axis=-1)  # (B, N, H, bD)
    v = _split_heads(kvs[-1], cfg.num_heads)  # (B, N, H, D)
    out = _attend(q, k, v, cfg.head_dim, cfg.attention, self_attention=False)  # (B, S, H, D)
    return Dense(cfg.embed_dim, use_bias=False, dtype=dtype, name="out")(out.reshape(*out.shape[:2], -1))


@flax.struct.dataclass
class SA3SharedInputs:
  """What every block gets alike (broadcast over the scan).

  context: (B, N, D) projected cross-attention tokens.
  modulation: (B, 6 D) the shared AdaLN signal (each block adds its own vector).
  rope: cos, sin tables (S, rotary_dim).
  local: (B, T, local_add_cond_dim) inpainting conditioning, or None.
  source_index: (B,) int32, the row of the reference each row blends in, or None.
  injected_k: (n, R, S, H, 2D or D), injected_v: (n, R, S, H, D), an external cache, or None.
  """

  context: Array
  modulation: Array
  rope: tuple[Array, Array]
  local: Array | None = None
  source_index: Array | None = None
  injected_k: Array | None = None
  injected_v: Array | None = None

  @property
  def has_reference(self) -> bool:
    return self.source_index is not None or self.injected_k is not None


class SA3DiTBlock(nn.Module):
  """One block (see the module docstring); scanned over layers. carry: (h (B, S, D), record_k,
  record_v) with the record buffers (n, B, S, H, 2D or D) / (n, B, S, H, D) or None."""

  config: SA3DiTConfig

  @nn.compact
  def __call__(self, carry, layer: LayerInputs, shared: SA3SharedInputs):
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    h, record_k, record_v = carry
    memory = cfg.num_memory_tokens

    bias = self.param("modulation_bias", nn.initializers.normal(cfg.embed_dim ** -0.5), (6 * cfg.embed_dim,))
    modulation = bias.astype(jnp.float32) + shared.modulation.astype(jnp.float32)  # (B, 6D)
    scale_attn, shift_attn, gate_attn, scale_ff, shift_ff, gate_ff = jnp.split(modulation, 6, axis=-1)

    attn = SA3SelfAttention(cfg, name="self_attn")
    x = modulate(RMSNorm(cfg.norm_eps, name="self_norm")(h), shift_attn, scale_attn)
    q, k, v = attn.qkv(x, shared.rope)  # the keys and values attention sees (after norm and rotary)
    own_k, own_v = k, v

    if shared.has_reference:  # blend toward the reference; weight 0 (no reference here) is exact
      k, v = kv_hook.blend_toward_reference(k, v, layer, source_index=shared.source_index,
                                            injected_k=shared.injected_k, injected_v=shared.injected_v)
    if record_k is not None:
      record_k, record_v = kv_hook.record(record_k, record_v, own_k, own_v, layer)

    attn_out = gated(attn.attend(q, k, v), gate_attn)  # (B, S, D)
    # bypass: the residual only, no attention term at all
    h = jnp.where(jnp.reshape(layer.bypass, (-1, 1, 1)), h, h + attn_out)

    h = h + SA3CrossAttention(cfg, name="cross_attn")(RMSNorm(cfg.norm_eps, name="cross_norm")(h), shared.context)

    # inpainting conditioning, added to the audio positions only (declared always: the checkpoint has it)
    local_in = self.param("local_in", dense_init(cfg.local_add_cond_dim, cfg.embed_dim))
    local_out = self.param("local_out", dense_init(cfg.embed_dim, cfg.embed_dim))
    if shared.local is not None:
      local = dense_apply(local_out, nn.silu(dense_apply(local_in, shared.local, dtype)), dtype)  # (B, T, D)
      h = jnp.concatenate([h[:, :memory], h[:, memory:] + local.astype(h.dtype)], axis=1)

    ff_in = self.param("ff_in", dense_init(cfg.embed_dim, 2 * cfg.ff_inner_dim))
    ff_out = self.param("ff_out", dense_init(cfg.ff_inner_dim, cfg.embed_dim))

    def feed_forward(x):  # SwiGLU: (..., D) -> (..., D)
      x, gate = jnp.split(dense_apply(ff_in, x, dtype), 2, axis=-1)
      return dense_apply(ff_out, x * nn.silu(gate), dtype)

    x = modulate(RMSNorm(cfg.norm_eps, name="ff_norm")(h), shift_ff, scale_ff)
    h = h + gated(in_row_blocks(feed_forward, x), gate_ff)
    return (h, record_k, record_v), None


# ----------------------------------------------------------------------------- the model


class SA3DiT(nn.Module):
  """Stable Audio 3's DiT: predicts the flow velocity v for latents x at flow time sigma.

  Args to __call__:
    x: (B, io_channels, T) noisy latent, T <= sample_size and a multiple of patch_size.
    t: (B,) or () the flow time sigma in [0, 1] (the DiT gets sigma itself).
    cross_tokens: (B, N, cond_token_dim) raw context tokens (text hidden states + duration token).
    global_cond: (B, global_cond_dim) the duration embedding.
    controls: optional models.dit.KVControls (see the module docstring for the K/V shapes).
    cross_mask: (B, N) bool, True = valid, or None: padded tokens become prompt_padding_embedding.
    local_cond: (B, local_add_cond_dim, T) inpainting conditioning or None (patch_size 1 only).
  Returns (v, recorded): v (B, io_channels, T) float32 and a KVCache of the recorded layers (or None).
  """

  config: SA3DiTConfig

  @nn.compact
  def __call__(self, x: Array, t: Array, cross_tokens: Array, global_cond: Array,
               controls: KVControls | None = None, *, cross_mask: Array | None = None,
               local_cond: Array | None = None) -> tuple[Array, KVCache | None]:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    batch, channels, length = x.shape
    chex.assert_shape(x, (batch, cfg.io_channels, length))
    chex.assert_shape(cross_tokens, (batch, None, cfg.cond_token_dim))
    chex.assert_shape(global_cond, (batch, cfg.global_cond_dim))
    if length > cfg.sample_size or length % cfg.patch_size:
      raise ValueError(f"SA3DiT: latent length {length} must be at most sample_size {cfg.sample_size} and a "
                       f"multiple of patch_size {cfg.patch_size}")
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    controls = controls or KVControls()
    kv_hook.validate_controls(controls, cfg.depth, batch)
    memory = cfg.num_memory_tokens
    frames = length // cfg.patch_size
    seq = memory + frames

    # padded text positions -> the learned padding embedding, in the raw space; then no mask
    padding = self.param("prompt_padding_embedding", nn.initializers.normal(0.02), (cfg.cond_token_dim,))
    if cross_mask is not None:
      chex.assert_shape(cross_mask, cross_tokens.shape[:2])
      cross_tokens = jnp.where(jnp.asarray(cross_mask, bool)[..., None], cross_tokens,
                               padding.astype(cross_tokens.dtype)[None, None, :])
    context = MLP2(cfg.embed_dim, cfg.embed_dim, use_bias=False, dtype=dtype, name="cond_mlp")(cross_tokens)

    time_freqs = jnp.asarray(expo_frequencies(cfg.time_features_dim, TIME_MIN_FREQ, TIME_MAX_FREQ))
    time_embed = MLP2(cfg.embed_dim, cfg.embed_dim, use_bias=True, dtype=dtype,
                      name="timestep_mlp")(expo_features(t, time_freqs))  # (B, D)
    global_embed = MLP2(cfg.embed_dim, cfg.embed_dim, use_bias=False, dtype=dtype,
                        name="global_mlp")(global_cond) + time_embed  # (B, D)
    modulation = MLP2(cfg.embed_dim, 6 * cfg.embed_dim, use_bias=True, dtype=dtype,
                      name="modulation_mlp")(global_embed)  # (B, 6D)

    tokens = x.transpose(0, 2, 1)  # (B, T, C)
    tokens = tokens + Dense(channels, use_bias=False, dtype=dtype, name="preprocess_conv")(tokens)
    tokens = tokens.reshape(batch, frames, cfg.patch_size * channels)  # (B, T/p, p*C): frame-major patches
    h = Dense(cfg.embed_dim, use_bias=False, dtype=dtype, name="proj_in")(tokens)  # (B, T/p, D)
    if memory:
      memory_tokens = self.param("memory_tokens", nn.initializers.normal(0.02), (memory, cfg.embed_dim))
      h = jnp.concatenate([jnp.broadcast_to(memory_tokens.astype(h.dtype)[None], (batch, memory, cfg.embed_dim)),
                           h], axis=1)  # (B, S, D)

    local = None
    if local_cond is not None:
      if cfg.patch_size > 1:
        raise ValueError(f"SA3DiT: local_cond needs patch_size 1, the model has {cfg.patch_size}")
      chex.assert_shape(local_cond, (batch, cfg.local_add_cond_dim, length))
      local = local_cond.transpose(0, 2, 1)  # (B, T, local_add_cond_dim)

    layer_inputs, records = self._layer_inputs(controls, batch, seq, dtype)
    shared = SA3SharedInputs(context=context, modulation=modulation,
                             rope=rotary_tables(seq, cfg.rotary_dim, cfg.rotary_base), local=local,
                             source_index=controls.source_index,
                             injected_k=controls.injected.k if controls.injected is not None else None,
                             injected_v=controls.injected.v if controls.injected is not None else None)

    blocks = nn.scan(SA3DiTBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast), length=cfg.depth)(cfg, name="blocks")
    (h, record_k, record_v), _ = blocks((h, *records), layer_inputs, shared)

    out = Dense(cfg.patch_size * channels, use_bias=False, dtype=dtype, name="proj_out")(h[:, memory:])
    out = out.reshape(batch, length, channels)  # unpatch: (B, T/p, p*C) -> (B, T, C)
    out = out + Dense(channels, use_bias=False, dtype=dtype, name="postprocess_conv")(out)
    out = out.transpose(0, 2, 1).astype(wide(out.dtype))  # (B, C, T)
    recorded = None
    if controls.record_layers:
      recorded = KVCache(record_k, record_v, tuple(controls.record_layers))
    return out, recorded

  def _layer_inputs(self, controls: KVControls, batch: int, seq: int, dtype) -> tuple[LayerInputs, tuple]:
    """Per-layer scan inputs and the (zeroed) record buffers (models/kv_hook.py)."""
    cfg = self.config
    return kv_hook.layer_inputs(controls, depth=cfg.depth, batch=batch, seq=seq, heads=cfg.num_heads,
                                key_dim=cfg.key_dim, value_dim=cfg.head_dim, dtype=dtype)
