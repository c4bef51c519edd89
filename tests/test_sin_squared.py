"""oobleck.sin_squared (the Snake's sin^2: range reduction modulo pi and a polynomial) against float64
sin over the whole float32 range: within 4e-7 absolute (about 7 float32 ulps of 1), as its docstring says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musickv_jax.models import oobleck
from musickv_jax.models.oobleck import sin_squared

pytestmark = pytest.mark.fast  # part of `make test-fast`

BOUND = 4e-7  # absolute; sin^2 is in [0, 1]
F32_MAX = np.finfo(np.float32).max

# For every binade from [2, 4) to [2**127, F32_MAX], the float32 nearest a multiple of pi: found by an
# exhaustive search over the 2**23 mantissas of each (a / pi mod 1 in 64-bit fixed point; the residues
# checked with mpmath at 600 bits). 0x6FF9BE45 (1.5458358e29 = 16367173 * 2**73), 3.2e-9 from a
# multiple of pi, is the nearest of all.
NEAR_MULTIPLES_OF_PI = np.array([
    0x40490FDB, 0x40C90FDB, 0x4116CBE4, 0x4196CBE4, 0x4216CBE4, 0x4296CBE4, 0x4316CBE4, 0x43FCE5F1, 0x447CE5F1,
    0x44FCE5F1, 0x457CE5F1, 0x458BE628, 0x460BE628, 0x468BE628, 0x470BE628, 0x47CD246F, 0x484D246F, 0x48CD246F,
    0x4902665E, 0x4982665E, 0x4A02665E, 0x4AA562AE, 0x4B2562AE, 0x4BA562AE, 0x4C73B47B, 0x4CA332E9, 0x4D2332E9,
    0x4DA332E9, 0x4E047661, 0x4E93D4A5, 0x4F13D4A5, 0x4F8FFD14, 0x505BD32F, 0x50FFD274, 0x5123E87F, 0x51A3E87F,
    0x5223E87F, 0x52A3E87F, 0x5323E87F, 0x53A3E87F, 0x543146A6, 0x54B146A6, 0x553146A6, 0x55B146A6, 0x563146A6,
    0x56F87577, 0x57787577, 0x57F87577, 0x58382989, 0x58B82989, 0x595C36C9, 0x59EE3D69, 0x5A7740B9, 0x5AFBC261,
    0x5B7E0335, 0x5BFF239F, 0x5C7FB3D4, 0x5C87BCD0, 0x5D07BCD0, 0x5D87BCD0, 0x5E07BCD0, 0x5E87BCD0, 0x5F07BCD0,
    0x5F87BCD0, 0x6064112C, 0x60E4112C, 0x612B0CE1, 0x61FC556B, 0x6253B126, 0x62D3B126, 0x636C1B4A, 0x63EC1B4A,
    0x646600C1, 0x64AE0733, 0x652E0733, 0x65AE0733, 0x66098498, 0x66898498, 0x67098498, 0x67898498, 0x68098498,
    0x68898498, 0x69098498, 0x69C6E3BB, 0x6A46E3BB, 0x6A9976F1, 0x6B1976F1, 0x6B9976F1, 0x6C1976F1, 0x6CD5DA58,
    0x6D55DA58, 0x6DA063C2, 0x6E05A877, 0x6E85A877, 0x6F05A877, 0x6FF9BE45, 0x7079BE45, 0x70F9BE45, 0x7179BE45,
    0x71F9BE45, 0x7279BE45, 0x72BFA09A, 0x733FA09A, 0x73BFA09A, 0x74661C18, 0x74D2DE59, 0x7552DE59, 0x75EFA1DC,
    0x76149471, 0x76D07CE8, 0x772426EB, 0x77D84625, 0x78584625, 0x78D84625, 0x7928B883, 0x79C07F54, 0x7A407F54,
    0x7A905F7F, 0x7B7CCBAB, 0x7B9675C0, 0x7C1675C0, 0x7CEC3305, 0x7D7F01BD, 0x7DFF01BD, 0x7E7F01BD, 0x7EFF01BD,
    0x7F3DCDA0,
], np.uint32).view(np.float32)


def _error(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  out = np.asarray(jax.jit(sin_squared)(jnp.asarray(z)))
  return out, np.abs(out.astype(np.float64) - np.sin(z.astype(np.float64)) ** 2)


def _whole_range() -> np.ndarray:
  """Thousands of |z| log-spaced from 1e-6 to 3e38 with both signs, the float32 values around the
  switch to the exact reduction (2**13), the float32 values nearest k pi and k pi + pi/2 and their
  neighbours, the search's nearest multiples of pi in every binade, and the extremes."""
  rng = np.random.default_rng(0)
  sweep = np.geomspace(1e-6, 3e38, 20_000) * rng.uniform(1, 1.001, 20_000)
  switch = np.float32(2.0 ** 13).view(np.uint32) + np.arange(-2000, 2000, dtype=np.int64)
  k = np.concatenate([np.arange(1, 2_000), np.geomspace(2_000, 1e7, 2_000).round()])
  near_pi = np.concatenate([k * np.pi, k * np.pi + np.pi / 2]).astype(np.float32)
  near_pi = np.concatenate([near_pi, np.nextafter(near_pi, np.float32(0)), np.nextafter(near_pi, np.float32(np.inf))])
  extremes = np.array([0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).tiny, 1.0, F32_MAX,
                       np.nextafter(F32_MAX, np.float32(0))], np.float32)
  z = np.concatenate([sweep.astype(np.float32), switch.astype(np.uint32).view(np.float32), near_pi,
                      NEAR_MULTIPLES_OF_PI, extremes])
  return np.concatenate([z, -z]).astype(np.float32)


def test_within_the_bound_for_every_finite_float32():
  z = _whole_range()
  out, error = _error(z)
  assert np.isfinite(out).all(), z[~np.isfinite(out)][:5]
  assert ((out >= 0) & (out <= 1)).all(), z[(out < 0) | (out > 1)][:5]
  worst = int(np.argmax(error))
  print(f"sin_squared: {z.size} points, worst error {error[worst]:.2e} at z = {z[worst]!r}")
  assert error.max() <= BOUND, (error.max(), z[worst])


def test_within_the_bound_densely_in_the_usual_range():
  """|z| < 1e4, where the decoder's Snakes are: the fast loop."""
  z = np.concatenate([np.linspace(-10, 10, 200_001), np.linspace(-1e4, 1e4, 400_001)]).astype(np.float32)
  out, error = _error(z)
  assert error.max() <= BOUND, error.max()
  assert ((out >= 0) & (out <= 1)).all()


def test_the_exact_loop_agrees_with_the_fast_loop_where_both_apply():
  """Below 2**13 the exact loop takes the fast reduction too: one large element in an array does not
  change the others."""
  z = np.linspace(-8191.5, 8191.5, 100_001).astype(np.float32)
  fast = np.asarray(jax.jit(oobleck._sin_squared_fast)(jnp.asarray(z)))
  exact = np.asarray(jax.jit(oobleck._sin_squared_exact)(jnp.asarray(z)))
  np.testing.assert_array_equal(fast, exact)
  mixed = np.asarray(jax.jit(sin_squared)(jnp.asarray(np.append(z, np.float32(1e30)))))
  np.testing.assert_array_equal(mixed[:-1], fast)


def test_non_finite_inputs_give_nan():
  z = jnp.asarray(np.array([np.inf, -np.inf, np.nan, 1.0], np.float32))
  out = np.asarray(jax.jit(sin_squared)(z))
  assert np.isnan(out[:3]).all()
  assert abs(out[3] - np.sin(1.0) ** 2) <= BOUND


def test_the_derivative_is_sin_2z():
  """d sin(z)^2 / dz = sin(2 z), in both loops (the research optimiser differentiates through the
  decoder); and under vmap, where the switch between loops becomes a select."""
  rng = np.random.default_rng(1)
  peaks = (np.arange(-1_000, 1_000) * np.pi + np.pi / 2).astype(np.float32)  # where sin^2 rounds to 1
  small = np.concatenate([rng.uniform(-8000, 8000, 2_000), peaks, np.nextafter(peaks, np.float32(0))])
  small = small.astype(np.float32)
  large = (np.geomspace(1e4, 1e38, 2_000) * rng.choice([-1, 1], 2_000)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda z: jnp.sum(sin_squared(z))))
  for z in (small, np.concatenate([small, large])):
    error = np.abs(np.asarray(grad(jnp.asarray(z)), np.float64) - np.sin(2 * z.astype(np.float64)))
    assert error.max() <= 2 * BOUND, error.max()
  rows = jnp.asarray(np.stack([small[:2000], large]))
  per_row = np.asarray(jax.jit(jax.vmap(sin_squared))(rows), np.float64)
  assert np.abs(per_row - np.sin(np.asarray(rows, np.float64)) ** 2).max() <= BOUND


def test_float64_and_bfloat16():
  z = np.array([0.5, 3e5, 1e300], np.float64)
  with jax.enable_x64(True):
    out = np.asarray(sin_squared(jnp.asarray(z)))
  np.testing.assert_allclose(out, np.sin(z) ** 2, rtol=0, atol=1e-15)
  z = jnp.asarray([0.5, 3e5], jnp.bfloat16)  # computed in float32, rounded to bfloat16
  half = sin_squared(z)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float64), np.sin(np.asarray(z, np.float64)) ** 2, atol=2 ** -8)


def test_the_bits_of_one_over_pi():
  """oobleck._INV_PI_HEX is floor(2**192 / pi), with pi from Machin's formula in integers."""
  bits = 192 + 32
  one = 1 << bits

  def arctan_inverse(x):  # arctan(1 / x) * 2**bits
    total, term, n = 0, one // x, 1
    while term:
      total += (term // n) if n % 4 == 1 else -(term // n)
      term //= x * x
      n += 2
    return total

  pi = 16 * arctan_inverse(5) - 4 * arctan_inverse(239)  # pi * 2**bits, to a few units
  assert int(oobleck._INV_PI_HEX, 16) == (1 << (192 + bits)) // pi
