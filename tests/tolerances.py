"""Bounds for comparing two float32 runs of our own pipeline that are not bitwise the same program
(different batch sizes or groupings, cached against joint injection), derived from a count of the
float32 roundings involved instead of from an observed value, so that they hold on every processor.

One DiT call: L sequential contraction stages, each a dot product of length at most K, each
rounding to about sqrt(K) u relative (u = 2^-24, rounding errors accumulated like a random walk);
the call's relative error is about L sqrt(K) u. Classifier-free guidance combines two calls,
v_u + g (v_c - v_u): independent errors in the two grow by A(g) = sqrt(g^2 + (g - 1)^2) (9.2 at
g = 7, 1 at g = 1). The DPM-Solver++ result is a combination of the denoised estimates whose
weights sum to about 1, so the error does not grow with the number of steps. Two runs that round
in different orders differ by at most twice one run's error; SAFETY covers the random model's
Jacobian. A bug these comparisons guard against (a wrong row, a wrong step's K/V, a mis-ordered
window) moves the result by 1e-2 to 1 relative, tens of times above these bounds.
"""

from __future__ import annotations

import math

from musickv_jax.config import DiTConfig, OobleckConfig

UNIT_ROUNDOFF = 2.0 ** -24
SAFETY = 2.0
STAGES_PER_BLOCK = 10  # self-attention q/k/v, scores, values, out; cross-attention q, scores, values, out; FF in, out
STAGES_OUTSIDE = 5  # conditioning and timestep MLPs, input and output projections


def dit_call_error(dit: DiTConfig, frames: int, cross_tokens: int) -> float:
  """Relative float32 error of one DiT call of `frames` latent frames (with the global token)."""
  stages = dit.depth * STAGES_PER_BLOCK + STAGES_OUTSIDE
  longest = max(dit.ff_inner_dim, dit.embed_dim, frames + 1, cross_tokens, dit.head_dim)
  return stages * math.sqrt(longest) * UNIT_ROUNDOFF


def cfg_amplification(guidance: float) -> float:
  return math.sqrt(guidance ** 2 + (guidance - 1.0) ** 2)


def run_to_run(dit: DiTConfig, frames: int, cross_tokens: int, guidance: float) -> float:
  """Relative bound (of the largest value) on two float32 evaluation orders of one sampling run."""
  return 2.0 * SAFETY * cfg_amplification(guidance) * dit_call_error(dit, frames, cross_tokens)


def vae_decode_error(vae: OobleckConfig) -> float:
  """Relative float32 error of an Oobleck decode: per block a transposed convolution and three
  residual units of two convolutions, plus the first and last convolutions; the longest
  contraction is a 7-tap kernel over the widest channels."""
  stages = len(vae.strides) * 7 + 2
  longest = 7 * vae.decoder_channels * max(vae.channel_mults)
  return stages * math.sqrt(longest) * UNIT_ROUNDOFF


def decoded_run_to_run(dit: DiTConfig, vae: OobleckConfig, frames: int, cross_tokens: int, guidance: float) -> float:
  """run_to_run for decoded audio: the sampling run's bound plus the decode's own, twice (two runs)."""
  return run_to_run(dit, frames, cross_tokens, guidance) + 2.0 * SAFETY * vae_decode_error(vae)
