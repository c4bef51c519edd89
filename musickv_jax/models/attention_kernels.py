"""The ways to compute softmax(q k^T / sqrt(D)) v, chosen by a setting (DiTConfig.attention):

  xla      the reference path: two einsums and a float32 softmax over the materialised
           (B, H, Sq, Sk) logits (dot_product_attention below).
  blocked  the same arithmetic one pair of (batch, head) slices at a time (`lax.map`), so the
           (Sq, Sk) logits of a slice stay in cache instead of streaming a (B, H, Sq, Sk) tensor
           through memory several times. On a CPU this is 4x faster at SAO's full window.
           Self-attention only (Sq = Sk, one kv head per query head); cross-attention, whose keys
           are 130 conditioning tokens, keeps the xla path.
  cudnn    cuDNN's fused flash attention through jax.nn.dot_product_attention (NVIDIA GPUs,
           bfloat16 / float16, head_dim <= 128 and a multiple of 8); grouped kv heads natively.
  splash   the Pallas splash-attention kernel on TPU (self-attention; the 1025 tokens padded to
           the kernel's block size and masked by segment ids).
  auto     blocked on CPU; cudnn on GPU for bfloat16 / float16 (xla for float32, where cuDNN's
           flash kernel does not run); splash on TPU for bfloat16 (else xla).

Every implementation computes the same function; numerics differ only in rounding. xla and
blocked are tested against each other on CPU; splash's padding and segment ids are tested on CPU
with the Pallas kernel in interpret mode; cudnn, and splash's speed, need their hardware and are
tested only where it is present (docs/performance.md says what ran where).
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from musickv_jax.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS
from musickv_jax.models.layers import matmul_precision, wide

Array = jax.Array
BLOCKED_HEADS_PER_STEP = 2  # (batch, head) slices per lax.map iteration: measured best on 2 CPU cores


def resolve(implementation: str, dtype, *, self_attention: bool, backend: str | None = None) -> str:
  """The implementation `auto` (or a name that does not apply here) stands for."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; use one of {IMPLEMENTATIONS}")
  backend = backend or jax.default_backend()
  low_precision = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if implementation == "auto":
    if backend == "cpu":
      implementation = "blocked"
    elif backend == "gpu":
      implementation = "cudnn" if low_precision else "xla"
    elif backend == "tpu":
      implementation = "splash" if low_precision else "xla"
    else:
      implementation = "xla"
  if implementation in ("blocked", "splash") and not self_attention:
    return "xla"  # cross-attention over a few conditioning tokens: nothing to gain
  return implementation


def attention(q: Array, k: Array, v: Array, implementation: str = "xla", *, self_attention: bool) -> Array:
  """q (B, Sq, H, D); k, v (B, Sk, G, D), H a multiple of G -> (B, Sq, H, D)."""
  chosen = resolve(implementation, q.dtype, self_attention=self_attention)
  if chosen == "blocked":
    return blocked_attention(q, k, v)
  if chosen == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  if chosen == "splash":
    return splash_attention(q, k, v)
  return dot_product_attention(q, k, v)


def dot_product_attention(q: Array, k: Array, v: Array) -> Array:
  """The reference path: softmax(q k^T / sqrt(D)) v with grouped kv heads, materialised.

  q: (B, Sq, H, D); k, v: (B, Sk, G, D) with H a multiple of G. Query head h reads kv head
  h // (H // G), PyTorch's repeat_interleave convention, without materialising the repeat.
  """
  batch, q_len, heads, head_dim = q.shape
  groups = k.shape[2]
  precision = matmul_precision(q.dtype)
  q = q.reshape(batch, q_len, groups, heads // groups, head_dim)
  logits = jnp.einsum("bqgrd,bkgd->bgrqk", q, k, precision=precision, preferred_element_type=wide(q.dtype))
  logits = logits * (head_dim ** -0.5)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bgrqk,bkgd->bqgrd", probs, v, precision=precision)
  return out.reshape(batch, q_len, heads, head_dim)


def blocked_attention(q: Array, k: Array, v: Array) -> Array:
  """Self-attention, one pair of (batch, head) slices at a time. Softmax statistics in float32
  (or wider); the probabilities are normalised after the second product."""
  batch, length, heads, head_dim = q.shape
  if k.shape[2] != heads:
    raise ValueError("blocked attention needs one kv head per query head")
  precision = matmul_precision(q.dtype)
  stat = wide(q.dtype)
  to_slices = lambda x: x.transpose(0, 2, 1, 3).reshape(batch * heads, x.shape[1], head_dim)  # noqa: E731

  def one(qkv):
    qs, ks, vs = qkv  # (S, D) each
    logits = jnp.dot(qs, ks.T, precision=precision, preferred_element_type=stat) * (head_dim ** -0.5)
    weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    out = jnp.dot(weights.astype(vs.dtype), vs, precision=precision, preferred_element_type=stat)
    return (out / jnp.sum(weights, axis=-1, keepdims=True)).astype(q.dtype)

  out = jax.lax.map(one, (to_slices(q), to_slices(k), to_slices(v)), batch_size=BLOCKED_HEADS_PER_STEP)
  return out.reshape(batch, heads, length, head_dim).transpose(0, 2, 1, 3)


@functools.lru_cache(maxsize=8)
def _splash_kernel(heads: int, padded: int, block: int, interpret: bool = False):
  """The kernel, its mask tables concrete arrays. Built on a thread of its own: JAX's trace state
  is per thread, and when first asked for inside the DiT's nn.scan (whose partial evaluation traces
  even constant computations) the tables would be tracers, cached, and leak into every later
  program (found lowering for TPU, issue 17). The backward blocks are given too: the schedule
  optimiser differentiates through the attention."""
  def build():
    mask = splash.MultiHeadMask([splash.FullMask((padded, padded)) for _ in range(heads)])
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return splash.make_splash_mha(mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret)

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    return pool.submit(build).result()


def splash_attention(q: Array, k: Array, v: Array, block: int = 128, *, interpret: bool = False) -> Array:
  """TPU splash attention for self-attention: the sequence padded to a multiple of `block`, the
  padding kept apart by segment ids (real tokens segment 0, padding segment 1). interpret: run the
  Pallas kernel in interpret mode (any backend, slowly: the CPU test of the padding)."""

  batch, length, heads, head_dim = q.shape
  padded = -(-length // block) * block
  pad = [(0, 0), (0, padded - length), (0, 0), (0, 0)]
  to_heads_first = lambda x: jnp.pad(x, pad).transpose(0, 2, 1, 3)  # noqa: E731  (B, H, S, D)
  segments = jnp.where(jnp.arange(padded) < length, 0, 1).astype(jnp.int32)
  kernel = _splash_kernel(heads, padded, block, interpret)
  scaled = to_heads_first(q * (head_dim ** -0.5))
  run = jax.vmap(lambda qq, kk, vv: kernel(qq, kk, vv, segment_ids=splash.SegmentIds(segments, segments)))
  out = run(scaled, to_heads_first(k), to_heads_first(v))  # (B, H, S_padded, D)
  return out.transpose(0, 2, 1, 3)[:, :length]
