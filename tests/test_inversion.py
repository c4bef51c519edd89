"""Inversion: the reference's quirks, step parity with a NumPy transcription of the inverse
DPM-Solver++(2M), the round trip, and editing from an inverted latent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musickv_jax import pipeline
from musickv_jax.config import DistributionShift
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import kv_schedules as kv
from musickv_jax.pipeline import EditSettings, GenerationSettings, InversionSettings
from musickv_jax.sampling import guided, inversion, rf_schedules, sampler, schedules
from tests.test_sampler import step_at
from tests.parity import max_error_ratio


@pytest.mark.fast
def test_reference_plan_has_the_reference_quirks():
  plan = inversion.make_inversion_plan(5)
  asc = schedules.exponential_sigmas(5)[:-1][::-1]  # sigma_min ... sigma_max
  # the sigma list is [0, 0.3, ..., 500]; the model input at step i is scaled with sig[i] ...
  np.testing.assert_allclose(plan.model_sigma, np.concatenate([[0.0], asc[:-1]]), rtol=1e-6)
  # ... while its timestep is one entry ahead, atan(sig[i + 1])
  np.testing.assert_allclose(plan.timestep, np.arctan(asc) * 2 / np.pi, rtol=1e-6)
  # step 0 is an identity step (sigma_s := sigma_min = sigma_t); the last step ends at sigma_max
  assert float(plan.sigma[0]) == float(plan.sigma_next[0]) == pytest.approx(0.3)
  assert float(plan.sigma_next[-1]) == pytest.approx(500.0)
  np.testing.assert_array_equal(plan.second_order, [False, False, True, True, False])
  consistent = inversion.make_inversion_plan(5, variant="consistent")
  np.testing.assert_allclose(consistent.timestep, np.arctan(consistent.model_sigma) * 2 / np.pi, rtol=1e-6)
  assert not np.any(inversion.make_inversion_plan(5, order=1).second_order)


def numpy_inverse_2m(denoise, x, sig, timesteps):
  """The inverse DPM-Solver++(2M) from the formulas, float64. sig = [0, s_1, ..., s_N] ascending.
  Step i: D_i = denoise(x, sig[i], t_i); x' = (s_t / s_s) x - (e^-h - 1) D0 - 0.5 (e^-h - 1) D1,
  h = lambda_t - lambda_s (lambda = -log sigma), D1 = (D_i - D_{i-1}) / r, r = h_{i-1} / h_i;
  first order (no D1) at step 1 and at the last step; step 0 keeps x (sigma_s taken as sigma_min)."""
  n = len(sig) - 1
  prev_d = prev_h = None
  for i in range(n):
    d = denoise(x, sig[i], timesteps[i])
    s_s = sig[1] if i == 0 else sig[i]
    s_t = sig[i + 1]
    h = (-np.log(s_t)) - (-np.log(s_s))
    x_new = (s_t / s_s) * x - (np.exp(-h) - 1.0) * d
    if 2 <= i < n - 1:
      x_new += -0.5 * (np.exp(-h) - 1.0) * (d - prev_d) / (prev_h / h)
    x, prev_d, prev_h = x_new, d, h
  return x


def _cond(model, prompt="piano solo", total=None):
  cfg = model.config
  cond = pipeline.text_conditioning(model, [prompt], 0.0, total or cfg.max_audio_seconds)
  return guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, jnp.ones((1,), jnp.float32))


@pytest.mark.parametrize("variant", ["reference", "consistent"])
def test_inversion_matches_numpy_transcription(tiny, variant):
  model, cfg = tiny.model, tiny.model.config
  cond = _cond(model)
  denoise = guided.guided_denoiser(model.params.dit, cfg.dit, cond, use_cfg=False)
  x0 = np.random.default_rng(0).normal(size=(1, cfg.dit.io_channels, 16)).astype(np.float32)
  steps = 7
  plan = inversion.make_inversion_plan(steps, variant=variant)
  ours, _ = inversion.invert(model.params.dit, cond, jnp.asarray(x0), plan, dit_config=cfg.dit)

  def np_denoise(x, sigma, t):
    d, _ = denoise(jnp.asarray(x, jnp.float32), step_at(sigma, t), None)
    return np.asarray(d, np.float64)

  sig = np.concatenate([[0.0], schedules.exponential_sigmas(steps)[:-1][::-1].astype(np.float64)])
  ref = numpy_inverse_2m(np_denoise, x0.astype(np.float64), sig, np.asarray(plan.timestep, np.float64))
  error = max_error_ratio(ours, ref)
  print(f"inversion ({variant}) vs NumPy transcription: {error:.1e}")
  assert error < 1e-5


@pytest.mark.parametrize("steps", [2, 7])
def test_inversion_matches_a_reference_that_computes_its_own_schedule(tiny, steps):
  """Sigmas, the shifted timesteps, the identity first step, the update and the conditioning, all
  from the PyTorch reference's own computation (tests.reference.torch_invert), not from our plan."""
  from tests.reference import torch_invert

  model, cfg = tiny.model, tiny.model.config
  x0 = np.random.default_rng(4).normal(size=(1, cfg.dit.io_channels, 16)).astype(np.float32)
  ours, _ = pipeline.invert_latents(model, x0, InversionSettings("piano solo", steps))
  ref = torch_invert(tiny.ref.pipeline, "piano solo", x0, steps, cfg.max_audio_seconds)
  error = max_error_ratio(ours, ref)
  print(f"inversion ({steps} steps) vs the PyTorch reference: {error:.1e}")
  assert error < 1e-4


def _round_trip(model, x0, steps, variant, full=True):
  """Invert x0, then sample forward deterministically with guidance 1 and the same prompt.
  full=False stops the forward pass at sigma_min (the ODE part only, without the final
  denoising step that maps the sample at sigma_min to the model's x0 estimate)."""
  cfg = model.config
  cond = _cond(model)
  inverted, _ = pipeline.invert_latents(model, x0, InversionSettings("piano solo", steps, variant=variant))
  sigmas = schedules.exponential_sigmas(steps)
  plan = sampler.make_plan(sigmas if full else sigmas[:-1], "dpmpp-2m")
  out, _ = guided.sample(model.params.dit, cond, jnp.asarray(inverted), plan, jax.random.key(0),
                         dit_config=cfg.dit, use_cfg=False)
  return float(np.linalg.norm(np.asarray(out) - x0) / np.linalg.norm(x0))


@pytest.mark.parametrize("variant", ["reference", "consistent"])
def test_round_trip_error_shrinks_with_steps(tiny, variant):
  """Measured on the tiny random model (relative L2 error of the latent):
    invert + regenerate:                 reference 5.5 / 0.89 / 0.77, consistent 4.1 / 0.86 / 0.79
    ODE part only (sigma_min <-> max):   reference 3.6 / 0.44 / 0.060, consistent 2.8 / 0.37 / 0.0075
  for 10 / 25 / 100 steps. The full round trip keeps a floor set by its two ends (the clean
  latent is taken as the sample at sigma_min, and the last sampling step returns the model's
  denoised estimate), large for random weights; the ODE part converges, at second order for
  the consistent variant and first order for the reference's shifted timesteps."""
  x0 = np.random.default_rng(0).normal(size=(1, tiny.model.config.dit.io_channels, 16)).astype(np.float32)
  full = [_round_trip(tiny.model, x0, steps, variant) for steps in (10, 25, 100)]
  ode = [_round_trip(tiny.model, x0, steps, variant, full=False) for steps in (10, 25, 100)]
  print(f"round trip ({variant}) 10/25/100 steps: full {full}, ODE only {ode}")
  assert full[0] > full[1] > full[2]
  assert ode[0] > ode[1] > ode[2]
  # the order of convergence, not an observed error: from 25 to 100 steps (4x) a p-th order method's
  # error falls by 4^p; at least half of that is asked (p = 2 consistent, p = 1 reference)
  order = 2 if variant == "consistent" else 1
  assert ode[1] / ode[2] >= 4 ** order / 2


@pytest.mark.fast
@pytest.mark.parametrize("shift", [DistributionShift(), DistributionShift(kind="none")], ids=["logsnr", "uniform"])
def test_rectified_flow_inversion_undoes_euler_sampling_for_a_velocity_of_t_alone(shift):
  """With v = f(t) (no x), Euler's inversion and sampling are exact inverses if and only if each
  inversion step evaluates the model where the sampling step that undoes it does (at the step's
  noisier end): invert then sample returns x0 to float32 rounding, and the inversion's model times
  are the sampling times reversed. The round-trip test on a real model only sees the error fall.
  Schedules: SAO Small's logsnr (SA3's is the same curve) and a uniform one."""
  steps, shape = 25, (2, 4, 16)
  rng = np.random.default_rng(0)
  a, b, c = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(3))
  x0 = jnp.asarray(rng.normal(size=shape), jnp.float32)

  def v_fn(x, time, extra):  # the velocity depends on t alone; the time it was asked at is kept
    return a * jnp.sin(7.0 * time) + b * time ** 2 + c, time

  denoise = sampler.v_denoiser(v_fn)
  times = rf_schedules.rf_times(steps, shift, shape[-1])
  inverted, inversion_times = inversion.run_inversion(denoise, x0, inversion.make_rf_inversion_plan(times))
  out, sampling_times = sampler.run(denoise, inverted, sampler.make_plan(times, "euler", "rectified_flow"),
                                    solver="euler")
  error = float(jnp.max(jnp.abs(out - x0)) / jnp.max(jnp.abs(inverted)))
  print(f"{shift.kind}: max |sample(invert(x0)) - x0| = {error:.2e} x max |x_1|")
  assert error <= 1e-5
  assert float(jnp.max(jnp.abs(inverted - x0))) > 0.5  # the velocity moved x: the round trip is not trivial
  np.testing.assert_array_equal(np.asarray(inversion_times), np.asarray(sampling_times)[::-1])


def test_edit_from_inverted_latent_regenerates_the_source_with_guidance_one(tiny):
  model, cfg = tiny.model, tiny.model.config
  x0 = np.random.default_rng(1).normal(size=(1, cfg.dit.io_channels, 12)).astype(np.float32)
  steps = 6
  inv_settings = InversionSettings("piano solo", steps)
  inverted, _ = pipeline.invert_latents(model, x0, inv_settings)
  rec = pipeline.Inversion(inverted=inverted, encoded=x0, n_samples=12 * cfg.vae.hop_length - 3,
                           settings=inv_settings)
  settings = EditSettings(GenerationSettings(prompts=("piano solo", "acoustic guitar"), num_inference_steps=steps),
                          vital_layers=(1,), schedule=kv.linear_ramp(steps, 1))
  result = pipeline.edit_recording(model, rec, settings)
  assert result.audio.shape == (2, 2, rec.n_samples)  # the recording's own length
  cond = _cond(model)
  plan = pipeline.step_plan(GenerationSettings(prompts=("a",), num_inference_steps=steps))
  alone, _ = guided.sample(model.params.dit, cond, jnp.asarray(inverted), plan, jax.random.key(0),
                           dit_config=cfg.dit, use_cfg=False)
  # the source row runs with guidance 1 inside a CFG batch: v_u + 1 * (v_c - v_u) = v_c up to rounding
  np.testing.assert_allclose(result.latents[0], np.asarray(alone)[0], atol=1e-4 * np.abs(alone).max())
  assert not np.allclose(result.latents[1], result.latents[0])


def test_kv_recorded_during_inversion_drives_the_edit(tiny):
  """The cached mode fed by the inversion's K/V (no source branch): runs, differs from the
  joint-mode edit by a measured amount (the fidelity cost: the inversion's K/V come from the
  inversion path, at shifted timesteps, conditional branch only)."""
  model, cfg = tiny.model, tiny.model.config
  x0 = np.random.default_rng(2).normal(size=(1, cfg.dit.io_channels, 12)).astype(np.float32)
  steps, layers = 6, (0, 1)
  inv_settings = InversionSettings("piano solo", steps)
  inverted, cache = pipeline.invert_latents(model, x0, inv_settings, record_layers=layers)
  assert cache.k.shape[:3] == (steps, 2, 1)
  rec = pipeline.Inversion(inverted=inverted, encoded=x0, n_samples=12 * cfg.vae.hop_length, settings=inv_settings,
                           kv=cache)
  settings = EditSettings(GenerationSettings(prompts=("piano solo", "acoustic guitar"), num_inference_steps=steps),
                          vital_layers=layers, schedule=kv.linear_ramp(steps, 2))
  joint = pipeline.edit_recording(model, rec, settings)
  from_inversion = pipeline.edit_recording(model, rec, settings, kv_from_inversion=True)
  assert from_inversion.roles == ["edit"] and from_inversion.latents.shape[0] == 1
  cost = max_error_ratio(from_inversion.latents[0], joint.latents[1])
  print(f"edit from the inversion's K/V vs joint-mode edit: {cost:.3f} (max abs / max)")
  assert np.all(np.isfinite(from_inversion.latents)) and cost > 0
  with pytest.raises(SettingsError, match="use the same num_inference_steps"):
    pipeline.edit_recording(model, rec, EditSettings(GenerationSettings(prompts=("a", "b"), num_inference_steps=5),
                                                     vital_layers=layers), kv_from_inversion=True)


def test_encoding_uses_the_mean_or_a_seeded_sample(tiny):
  cfg = tiny.model.config
  audio = np.random.default_rng(3).uniform(-0.5, 0.5, size=(2, 10 * cfg.vae.hop_length - 1)).astype(np.float32)
  mean = np.asarray(pipeline.encode_audio(tiny.model, audio))
  assert mean.shape == (1, cfg.vae.latent_dim, 10)  # zero-padded to whole hops
  np.testing.assert_array_equal(mean, np.asarray(pipeline.encode_audio(tiny.model, audio)))
  a = np.asarray(pipeline.encode_audio(tiny.model, audio, sample=True, seed=1))
  b = np.asarray(pipeline.encode_audio(tiny.model, audio, sample=True, seed=1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, mean)
