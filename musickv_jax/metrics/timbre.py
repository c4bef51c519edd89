"""How far a clip's timbre moved, independently of the notes played: the distance between the
distributions of the spectral envelope over the two clips.

Each clip's sounding frames (features.sounding) are described by MFCCs 1 .. n_mfcc - 1 (the
shape of the spectral envelope; coefficient 0, the level, is left out, so loudness does not
count). Each coefficient's distribution over the clip is summarised by its mean and standard
deviation, and the two clips' Gaussians are compared by the Bhattacharyya distance, averaged over
the coefficients. Pooling over the clip is what makes it blind to melody: another melody on the
same instrument spreads over the same envelopes; the same melody on another instrument moves
them. The distance is unit-free (each coefficient is measured against its own spread).

Also measured while choosing (docs/research.md): the spectral centroid, flatness and contrast
rank another melody on the same piano as far as the same melody on a guitar (they follow pitch
as much as timbre), so they are not part of it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
SPREAD_FLOOR = 0.1  # MFCC units: added in quadrature to every spread (a constant coefficient
#                     has none; the instrument renders of the tests spread by 6 to 36)
FRAME_FLOOR = 1e-6  # weight of every frame, so that a clip with no sounding frame still has a
#                     distribution (that of its silence)


def envelope_statistics(mfcc: Array, weights: Array) -> tuple[Array, Array]:
  """Weighted mean and standard deviation over frames of MFCCs 1 .. (mfcc (..., frames, n_mfcc),
  weights (..., frames)) -> two (..., n_mfcc - 1); the spread floored by SPREAD_FLOOR."""
  envelope = mfcc[..., 1:]
  w = (weights + FRAME_FLOOR)[..., None]
  total = jnp.sum(w, axis=-2)
  mean = jnp.sum(w * envelope, axis=-2) / total
  variance = jnp.sum(w * (envelope - mean[..., None, :]) ** 2, axis=-2) / total
  return mean, jnp.sqrt(variance + SPREAD_FLOOR ** 2)


def bhattacharyya(mean_a: Array, std_a: Array, mean_b: Array, std_b: Array) -> Array:
  """Bhattacharyya distance between 1-D Gaussians (...) elementwise:
  (mu_a - mu_b)^2 / (4 (s_a^2 + s_b^2)) + ln((s_a^2 + s_b^2) / (2 s_a s_b)) / 2.
  0 for equal Gaussians; exp(-distance) is the overlap of the two densities."""
  pooled = std_a * std_a + std_b * std_b
  return (mean_a - mean_b) ** 2 / (4.0 * pooled) + 0.5 * jnp.log(pooled / (2.0 * std_a * std_b))


def timbre_distance(mfcc_a: Array, mfcc_b: Array, sounding_a: Array, sounding_b: Array) -> Array:
  """Mean Bhattacharyya distance between the two clips' per-coefficient MFCC distributions -> (...)."""
  mean_a, std_a = envelope_statistics(mfcc_a, sounding_a)
  mean_b, std_b = envelope_statistics(mfcc_b, sounding_b)
  return jnp.mean(bhattacharyya(mean_a, std_a, mean_b, std_b), axis=-1)
