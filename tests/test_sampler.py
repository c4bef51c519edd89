"""The functional sampler: schedules, DPM-Solver++ steps, generation parity with diffusers,
the SDE variant, and that varying data never recompiles."""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musickv_jax import pipeline
from musickv_jax.models import vae_ops
from musickv_jax.pipeline import GenerationSettings
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import conditioning
from musickv_jax.pipeline.common import FIT_BUCKET_FRAMES
from musickv_jax.pipeline import kv_schedules
from musickv_jax.sampling import guided, sampler, schedules, solvers
from musickv_jax.sampling import kv as kv_lib
from musickv_jax.bench.scheduler import reference_scheduler
from tests.parity import max_error_ratio


def step_at(sigma: float, timestep: float | None = None, objective: str = "v"):
  """One step's inputs to a denoiser (sampler.StepPlan's fields) at a noise level; timestep
  overrides the level's own time input (the reference inversion's shifted timesteps)."""
  coefficients = {name: jnp.float32(value) for name, value in sampler.model_coefficients(sigma, objective).items()}
  if timestep is not None:
    coefficients["timestep"] = jnp.float32(timestep)
  return types.SimpleNamespace(sigma=jnp.float32(sigma), **coefficients)


def edm_scheduler(steps: int):
  """diffusers' deterministic DPM-Solver++(2M) with SAO's settings, fed atan timesteps."""
  return reference_scheduler(steps)


def test_exponential_schedule_matches_diffusers():
  sched = edm_scheduler(12)
  # exp of a float32 log: (2 |ln sigma_max| + 1) u = 7.9e-7; safety ~10
  np.testing.assert_allclose(schedules.exponential_sigmas(12), sched.sigmas.numpy(), rtol=1e-5)
  plan = sampler.make_plan(schedules.exponential_sigmas(12))
  np.testing.assert_allclose(plan.timestep, sched.timesteps.numpy(), rtol=1e-6)


@pytest.mark.fast
def test_karras_schedule_matches_diffusers():
  from diffusers import EDMDPMSolverMultistepScheduler
  sched = EDMDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_schedule="karras", rho=7.0)
  sched.set_timesteps(10)
  # torch's float32 base (2u) raised to rho = 7, plus the power's own rounding: 15u = 8.9e-7; safety ~10
  np.testing.assert_allclose(schedules.karras_sigmas(10), sched.sigmas.numpy(), rtol=1e-5)


@pytest.mark.fast
def test_solver_order_per_step():
  np.testing.assert_array_equal(solvers.second_order_steps("dpmpp-2m", 5), [False, True, True, True, False])
  np.testing.assert_array_equal(solvers.second_order_steps("dpmpp-1", 3), [False, False, False])
  np.testing.assert_array_equal(solvers.second_order_steps("dpmpp-2m", 1), [False])
  with pytest.raises(ValueError, match="unknown sampler 'heun'"):
    solvers.second_order_steps("heun", 3)


# ----------------------------------------------------------------------------- generation parity


def diffusers_generate(ref, prompts, noise, *, steps, guidance, negative, end, output_type, start=0.0):
  pipe = ref.pipeline
  original = pipe.scheduler
  pipe.scheduler = edm_scheduler(steps)
  try:
    with torch.no_grad():
      out = pipe(prompts, audio_start_in_s=start, audio_end_in_s=end, num_inference_steps=steps,
                 guidance_scale=guidance,
                 negative_prompt=negative, latents=torch.from_numpy(noise), output_type=output_type).audios
  finally:
    pipe.scheduler = original
  return np.asarray(out)


CASES = [  # (n prompts, negative prompt, guidance, audio_start_in_s)
    pytest.param(1, None, 7.0, 0.0, marks=pytest.mark.fast), (2, None, 7.0, 0.0), (1, "drums, noise", 7.0, 0.0), (2, "drums, noise", 7.0, 0.0),
    (1, None, 1.0, 0.0), (2, None, 1.0, 0.0), (2, "drums, noise", 1.0, 0.0),
    (2, None, 7.0, 0.75), (1, "drums, noise", 1.0, 1.5),  # a non-zero start conditions the model and trims
]


@pytest.mark.parametrize("n,negative,guidance,start", CASES)
def test_generation_matches_diffusers(tiny, n, negative, guidance, start):
  prompts = ["piano solo, soft", "acoustic guitar, country"][:n]
  cfg = tiny.model.config
  steps, end = 8, 3.0
  noise = np.random.default_rng(n).normal(size=(n, cfg.dit.io_channels, cfg.dit.sample_size)).astype(np.float32)
  scale = schedules.init_noise_scale(500.0)
  settings = GenerationSettings(prompts=tuple(prompts), negative_prompt=negative, num_inference_steps=steps,
                                guidance_scale=guidance, audio_start_in_s=start, audio_end_in_s=end)
  ours = pipeline.generate(tiny.model, settings, init_latents=noise * np.float32(scale))
  negatives = None if negative is None else [negative] * n
  kwargs = dict(steps=steps, guidance=guidance, negative=negatives, start=start, end=end)
  ref_latents = diffusers_generate(tiny.ref, prompts, noise, output_type="latent", **kwargs)
  ref_audio = diffusers_generate(tiny.ref, prompts, noise, output_type="np", **kwargs)
  assert ours.audio.shape == ref_audio.shape == (n, 2, int(end * cfg.sample_rate) - int(start * cfg.sample_rate))
  latent_err, audio_err = max_error_ratio(ours.latents, ref_latents), max_error_ratio(ours.audio, ref_audio)
  print(f"generation n={n} negative={negative is not None} g={guidance} start={start}: latents {latent_err:.1e}, "
        f"audio {audio_err:.1e}")
  assert latent_err < 1e-4 and audio_err < 1e-4


@pytest.mark.fast
def test_first_order_sampler_matches_a_transcription(tiny):
  """dpmpp-1 is x' = (s'/s) x - expm1(-h) D at every step; checked with a linear denoiser."""
  plan = sampler.make_plan(schedules.exponential_sigmas(6), "dpmpp-1")
  denoise = lambda x, step, extra: (0.5 * x / (1 + step.sigma), None)  # noqa: E731
  x0 = np.random.default_rng(0).normal(size=(1, 2, 5)).astype(np.float32) * 500
  ours, _ = sampler.run(denoise, jnp.asarray(x0), plan, solver="dpmpp-1")
  x = x0.astype(np.float64)
  sigmas = schedules.exponential_sigmas(6).astype(np.float64)
  for s, s_next in zip(sigmas[:-1], sigmas[1:]):
    d = 0.5 * x / (1 + s)
    x = d if s_next == 0 else (s_next / s) * x - np.expm1(-np.log(s / s_next)) * d
  np.testing.assert_allclose(ours, x, rtol=1e-5)


# ----------------------------------------------------------------------------- SDE


def numpy_sde_2m(denoise, x, sigmas, noises):
  """SDE DPM-Solver++(2M), eta = 1, midpoint, transcribed from the formulas (float64):
  x' = (s'/s) e^-h x + (1 - e^-2h) D + (1 - e^-2h)/2 * (D - D_prev)/r + s' sqrt(1 - e^-2h) n,
  first order (no D1 term) at the first step and the last step, and x' = D when s' = 0."""
  prev_d, prev_h = None, None
  n = len(sigmas) - 1
  for i in range(n):
    s, s_next = sigmas[i], sigmas[i + 1]
    d = denoise(x, s)
    if s_next == 0:
      x = d
      break
    h = np.log(s) - np.log(s_next)
    x_new = (s_next / s) * np.exp(-h) * x + (1 - np.exp(-2 * h)) * d
    if 0 < i < n - 1:
      r = prev_h / h
      x_new += 0.5 * (1 - np.exp(-2 * h)) * (d - prev_d) / r
    x = x_new + s_next * np.sqrt(1 - np.exp(-2 * h)) * noises[i]
    prev_d, prev_h = d, h
  return x


def test_sde_with_given_noise_matches_numpy_transcription(tiny64):
  cfg = tiny64.model.config
  cond = pipeline.guided_conditioning(tiny64.model, ["piano"], negative_prompt=None, seconds_start=0.0,
                                      seconds_total=2.0, guidance=np.array([3.0]), use_cfg=True)
  denoise = guided.guided_denoiser(tiny64.model.params.dit, cfg.dit, cond, use_cfg=True)
  steps = 6
  sigmas = schedules.exponential_sigmas(steps)
  rng = np.random.default_rng(0)
  x_init = (rng.normal(size=(1, cfg.dit.io_channels, 16)) * 500).astype(np.float32)
  noises = rng.normal(size=(steps, 1, cfg.dit.io_channels, 16)).astype(np.float32)
  plan = sampler.make_plan(sigmas, "dpmpp-2m-sde")
  ours = jax.jit(lambda x, nz: sampler.run(denoise, x, plan, solver="dpmpp-2m-sde", step_noise=nz)[0])(
      jnp.asarray(x_init), jnp.asarray(noises))

  def np_denoise(x, sigma):
    d, _ = denoise(jnp.asarray(x, jnp.float32), step_at(sigma), None)
    return np.asarray(d, np.float64)

  ref = numpy_sde_2m(np_denoise, x_init.astype(np.float64), sigmas.astype(np.float64), noises.astype(np.float64))
  assert max_error_ratio(ours, ref) < 1e-5


def test_sde_sampler_draws_noise_from_the_key():
  plan = sampler.make_plan(schedules.exponential_sigmas(5), "dpmpp-2m-sde")
  denoise = lambda x, step, extra: (x / (1 + step.sigma**2), None)  # noqa: E731
  x = jnp.ones((2, 3, 4)) * 500
  a, _ = sampler.run(denoise, x, plan, solver="dpmpp-2m-sde", key=jax.random.key(0))
  b, _ = sampler.run(denoise, x, plan, solver="dpmpp-2m-sde", key=jax.random.key(0))
  c, _ = sampler.run(denoise, x, plan, solver="dpmpp-2m-sde", key=jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  with pytest.raises(ValueError, match="needs a PRNG key"):
    sampler.run(denoise, x, plan, solver="dpmpp-2m-sde")


@pytest.mark.parametrize("solver", ["dpmpp-2m", "dpmpp-2m-sde"])
def test_samplers_reach_the_gaussian_data_distribution(solver):
  """Distribution test. Theory: when the denoiser is the exact posterior mean E[x0 | x_sigma] of a
  data distribution, the probability-flow ODE (dpmpp-2m) and the SDE (dpmpp-2m-sde) have the same
  marginals: both carry x_T ~ N(0, sigma_max^2 + 1) to x ~ p_data convolved with N(0, sigma^2) at every
  sigma. For Gaussian data N(mu, s^2) per element, E[x0 | x] = (s^2 x + sigma^2 mu) / (s^2 + sigma^2)
  exactly, so the target is known: at sigma_min the sample is N(mu, s^2 + sigma_min^2), and the last
  step (to sigma = 0) returns the posterior mean, whose variance is s^4 / (s^2 + sigma_min^2). We check
  the mean and variance over 4096 draws against these, within 4 standard errors plus a small
  allowance for the discretisation error of 40 steps. (A random-weight DiT is not the posterior mean
  of any distribution, so this claim cannot be tested on it.)"""
  mu, s = 0.7, 0.4
  denoise = lambda x, step, extra: ((s**2 * x + step.sigma**2 * mu) / (s**2 + step.sigma**2), None)  # noqa: E731
  plan = sampler.make_plan(schedules.exponential_sigmas(40), solver)
  x_init = jax.random.normal(jax.random.key(0), (4096, 1, 1)) * schedules.init_noise_scale(500.0)
  x0, _ = jax.jit(lambda x, k: sampler.run(denoise, x, plan, solver=solver, key=k))(x_init, jax.random.key(1))
  x0 = np.asarray(x0).ravel()
  stderr_mean = s / math.sqrt(x0.size)
  assert abs(x0.mean() - mu) < 4 * stderr_mean + 0.01
  expected_var = s**4 / (s**2 + schedules.SIGMA_MIN**2)
  assert abs(x0.var() / expected_var - 1) < 4 * math.sqrt(2 / x0.size) + 0.03


def test_sde_and_ode_agree_on_moments_for_a_tiny_dit(tiny64):
  """On the tiny DiT the two samplers differ per sample (noise is injected), but stay on the same
  scale: over 64 seeds, per-sample standard deviations of SDE and ODE outputs are within 2x."""
  cfg = tiny64.model.config
  cond = pipeline.guided_conditioning(tiny64.model, ["piano"] * 64, negative_prompt=None, seconds_start=0.0,
                                      seconds_total=2.0, guidance=np.ones(64), use_cfg=False)
  x_init = jax.random.normal(jax.random.key(3), (64, cfg.dit.io_channels, 16)) * schedules.init_noise_scale(500.0)
  outs = {}
  for solver in ("dpmpp-2m", "dpmpp-2m-sde"):
    plan = sampler.make_plan(schedules.exponential_sigmas(10), solver)
    outs[solver], _ = guided.sample(tiny64.model.params.dit, cond, x_init, plan, jax.random.key(4),
                                    dit_config=cfg.dit, solver=solver, use_cfg=False)
  ode, sde = np.asarray(outs["dpmpp-2m"]), np.asarray(outs["dpmpp-2m-sde"])
  assert np.all(np.isfinite(sde)) and not np.allclose(ode, sde)
  ratio = sde.std() / ode.std()
  assert 0.5 < ratio < 2.0, ratio


# ----------------------------------------------------------------------------- compilation


def test_new_prompts_seeds_guidance_and_schedules_do_not_recompile(tiny):
  jitted = [guided.sample_chunk, conditioning._encode_text, conditioning._condition, vae_ops._decode]
  run = lambda **kw: pipeline.generate(tiny.model, GenerationSettings(  # noqa: E731
      num_inference_steps=4, audio_end_in_s=2.0, **kw))
  run(prompts=("piano solo", "drums"), seed=0, guidance_scale=7.0)
  sizes = [f._cache_size() for f in jitted]
  run(prompts=("acoustic guitar, country", "soft jazz"), seed=1, guidance_scale=3.0)
  run(prompts=("a", "b"), seed=2, guidance_scale=5.5, negative_prompt="noise", sigma_max=200.0,
      sigma_schedule="karras")
  assert [f._cache_size() for f in jitted] == sizes


def test_progress_is_reported_after_every_chunk_of_steps(tiny):
  seen = []
  pipeline.generate(tiny.model, GenerationSettings(prompts=("piano",), num_inference_steps=12, audio_end_in_s=1.0),
                    on_step=lambda step, total: seen.append((step, total)))
  assert seen == [(6, 12), (12, 12)]  # equal chunks: the largest divisor of 12 up to 10
  assert [sampler.chunk_length(n) for n in (100, 50, 7, 13, 1)] == [10, 10, 7, 1, 1]


@pytest.mark.parametrize("solver", ["dpmpp-2m", "dpmpp-2m-sde"])
def test_chunks_compute_exactly_what_one_scan_computes(tiny, solver):
  """The host-driven chunks (progress, cacheable programs) against the single scan, bitwise, with
  injection and with recording."""
  cfg = tiny.model.config
  cond = pipeline.guided_conditioning(tiny.model, ["piano", "guitar"], negative_prompt=None, seconds_start=0.0,
                                      seconds_total=2.0, guidance=np.full(2, 7.0), use_cfg=True)
  plan = sampler.make_plan(schedules.exponential_sigmas(12), solver)
  x = jax.random.normal(jax.random.key(0), (2, cfg.dit.io_channels, 16)) * 500
  weights = kv_lib.injection_weights(kv_lib.per_edit(kv_schedules.linear_ramp(12, 1), 1), (1,), [-1, 0], cfg.dit.depth)
  kv = kv_lib.joint_controls(weights, np.zeros(2, np.int32), True, (1,), cfg.dit.depth)
  args = (tiny.model.params.dit, cond, x, plan, jax.random.key(3), kv)
  kwargs = dict(dit_config=cfg.dit, solver=solver, record_layers=(0,))
  whole, whole_kv = guided.sample(*args, **kwargs)
  chunked, chunked_kv = guided.sample_in_chunks(*args, **kwargs)
  np.testing.assert_array_equal(np.asarray(chunked), np.asarray(whole))
  np.testing.assert_array_equal(np.asarray(chunked_kv.k), np.asarray(whole_kv.k))


def test_fit_latent_length_is_shorter_and_trims_right(tiny):
  cfg = tiny.model.config
  full = GenerationSettings(prompts=("piano",), num_inference_steps=3, audio_end_in_s=1.0)
  fit = GenerationSettings(prompts=("piano",), num_inference_steps=3, audio_end_in_s=1.0, latent_length="fit")
  assert pipeline.latent_frames(full, cfg) == cfg.dit.sample_size
  assert pipeline.latent_frames(fit, cfg) == min(cfg.dit.sample_size, FIT_BUCKET_FRAMES)
  out = pipeline.generate(tiny.model, fit)
  assert out.audio.shape == (1, 2, cfg.sample_rate)


@pytest.mark.fast
def test_bad_requests_are_refused(tiny):
  cfg = tiny.model.config
  with pytest.raises(SettingsError, match=r"longer than the model's maximum of 4.00 s"):
    GenerationSettings(prompts=("a",), audio_end_in_s=10.0).validate(cfg)
  with pytest.raises(SettingsError, match="at least 1"):
    GenerationSettings(prompts=("a",), num_inference_steps=0).validate(cfg)
  with pytest.raises(SettingsError, match="unknown sampler"):
    GenerationSettings(prompts=("a",), sampler="ddpm").validate(cfg)
  with pytest.raises(SettingsError, match="prompt 2 is empty"):
    GenerationSettings(prompts=("a", " ")).validate(cfg)
  with pytest.raises(SettingsError, match=r"expected \(1, 4, T\)"):
    pipeline.check_init_latents(np.zeros((2, 4, 16), np.float32), 1, GenerationSettings(prompts=("a",)), cfg)


# ----------------------------------------------------------------------------- long-audio decoding


def test_windowed_decode_matches_diffusers(tiny):
  """The windowed decode (several windows, context = receptive field) against diffusers' one-shot decode."""
  cfg = tiny.model.config.vae
  latents = np.random.default_rng(5).normal(size=(2, cfg.latent_dim, 150)).astype(np.float32)
  with torch.no_grad():
    ref = tiny.ref.vae.decode(torch.from_numpy(latents)).sample.numpy()
  ours = vae_ops.decode(tiny.model.params.vae, latents, cfg, chunk_frames=20)
  assert max_error_ratio(ours, ref) < 1e-5


def test_decode_windows_need_their_context(tiny, monkeypatch):
  """With too little context the windowed decode is wrong: the receptive field is what makes it exact."""
  cfg = tiny.model.config.vae
  latents = np.random.default_rng(5).normal(size=(1, cfg.latent_dim, 150)).astype(np.float32)
  full = vae_ops.decode(tiny.model.params.vae, latents, cfg, chunk_frames=None)
  monkeypatch.setattr(vae_ops, "decoder_receptive_radius", lambda c: 2)
  short = vae_ops.decode(tiny.model.params.vae, latents, cfg, chunk_frames=20)
  assert max_error_ratio(short, full) > 1e-3


@pytest.mark.parametrize("chunk", [None, 20, 200])
@pytest.mark.parametrize("frames", [(0, 150), (37, 61), (100, 150), (0, 9), (140, 150)])
def test_decoding_a_part_equals_that_part_of_the_whole(tiny, chunk, frames):
  """Decode only the frames that are kept (plus their context): the same audio as decoding all of
  them and cutting, up to float32 rounding where the windows fall differently."""
  cfg = tiny.model.config.vae
  latents = np.random.default_rng(7).normal(size=(1, cfg.latent_dim, 150)).astype(np.float32)
  whole = vae_ops.decode(tiny.model.params.vae, latents, cfg, chunk_frames=None)
  part = vae_ops.decode(tiny.model.params.vae, latents, cfg, chunk_frames=chunk, frames=frames)
  hop = cfg.hop_length
  assert part.shape[-1] == (frames[1] - frames[0]) * hop
  assert max_error_ratio(part, whole[..., frames[0] * hop:frames[1] * hop]) < 1e-5


def test_windowed_encode_matches_one_shot(tiny):
  cfg = tiny.model.config.vae
  audio = np.random.default_rng(6).uniform(-1, 1, size=(1, 2, cfg.hop_length * 300)).astype(np.float32)
  full = vae_ops.encode(tiny.model.params.vae, audio, cfg, chunk_frames=None)
  windowed = vae_ops.encode(tiny.model.params.vae, audio, cfg, chunk_frames=64)
  assert max_error_ratio(windowed.mean, full.mean) < 1e-5
