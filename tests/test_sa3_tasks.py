"""Stable Audio 3's tasks equal diffusers' pipelines (tests/sa3_reference.py runs them, given the
same initial latents and per-step noise): text-to-music with ping-pong at guidance 1 (the distilled
models) and Euler with CFG (the -base ones), audio-to-audio, inpainting. Float32; a whole run
within 1e-4 of the reference's largest value, latents and decoded audio. Also the converter's
reading of a Stable Audio 3 diffusers folder."""

from __future__ import annotations

import numpy as np
import pytest

from musickv_jax import pipeline
from musickv_jax.pipeline import variation
from tests import sa3_reference as R

RUN_TOLERANCE = 1e-4  # a whole run, relative to max |reference| (DESIGN.md section 5)
PROMPTS = ("piano solo", "acoustic guitar, country")


def relative(ours, ref) -> float:
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def noise_for(ref, duration, steps, n=len(PROMPTS), seed=0):
  """Initial latents (n, C, L) and one step noise shared by every prompt (steps, 1, C, L)."""
  rng = np.random.default_rng(seed)
  shape = R.latent_shape(ref, n, duration)
  return (rng.standard_normal(shape).astype(np.float32),
          rng.standard_normal((steps, 1, *shape[1:])).astype(np.float32))


def test_the_converter_reads_every_option_of_the_folder(sa3, sa3_base):
  cfg = sa3.model.config
  assert cfg.family == "sa3" and cfg.diffusion.objective == "rf_denoiser" and cfg.diffusion.defaults.sampler == "pingpong"
  assert cfg.dit.differential and cfg.dit.num_memory_tokens == 4 and cfg.dit.io_channels == cfg.vae.latent_dim
  assert cfg.vae.hop_length == sa3.ref.hop and cfg.sample_rate == sa3.ref.sampling_rate
  assert cfg.t5.max_length == sa3.ref.tokenizer.model_max_length
  base = sa3_base.model.config
  assert base.diffusion.objective == "rectified_flow" and base.diffusion.defaults.sampler == "euler"
  assert not base.dit.differential and base.dit.num_memory_tokens == 0


@pytest.mark.parametrize("duration", [2.0, 1.3])
def test_text_to_music_with_ping_pong_equals_diffusers(sa3, duration):
  steps = 8
  latents, noise = noise_for(sa3.ref, duration, steps)
  ref = R.text_to_audio(sa3.ref, list(PROMPTS), duration, steps, latents=latents,
                        step_noise=np.repeat(noise, len(PROMPTS), axis=1))
  gen = pipeline.GenerationSettings(prompts=PROMPTS, audio_end_in_s=duration)  # the model's defaults: 8 ping-pong
  ours = pipeline.generate(sa3.model, gen, init_latents=latents, step_noise=noise)
  assert ours.settings.sampler == "pingpong" and ours.settings.num_inference_steps == steps
  np.testing.assert_allclose(np.asarray(pipeline.step_plan(ours.settings, sa3.model.config,
                                                           latents.shape[-1]).sigma), ref.sigmas[:-1], rtol=0,
                             atol=2 ** -23)
  errors = relative(ours.latents, ref.latents), relative(ours.audio, ref.audio)
  print(f"SA3 ping-pong {duration} s: latents {errors[0]:.1e}, audio {errors[1]:.1e}")
  assert max(errors) <= RUN_TOLERANCE


def test_text_to_music_with_euler_and_cfg_equals_diffusers(sa3_base):
  steps, duration, guidance = 6, 2.0, 3.0
  latents, _ = noise_for(sa3_base.ref, duration, steps)
  ref = R.text_to_audio(sa3_base.ref, list(PROMPTS), duration, steps, guidance, latents=latents)
  gen = pipeline.GenerationSettings(prompts=PROMPTS, audio_end_in_s=duration, num_inference_steps=steps,
                                    guidance_scale=guidance)
  ours = pipeline.generate(sa3_base.model, gen, init_latents=latents)
  assert ours.settings.sampler == "euler" and ours.use_cfg
  errors = relative(ours.latents, ref.latents), relative(ours.audio, ref.audio)
  print(f"SA3 Euler with CFG {guidance}: latents {errors[0]:.1e}, audio {errors[1]:.1e}")
  assert max(errors) <= RUN_TOLERANCE


def test_a_negative_prompt_is_the_unconditional_branch(sa3_base):
  steps, duration = 4, 1.0
  latents, _ = noise_for(sa3_base.ref, duration, steps)
  ref = R.text_to_audio(sa3_base.ref, list(PROMPTS), duration, steps, 2.0, negative_prompt="noise", latents=latents)
  gen = pipeline.GenerationSettings(prompts=PROMPTS, audio_end_in_s=duration, num_inference_steps=steps,
                                    guidance_scale=2.0, negative_prompt="noise")
  ours = pipeline.generate(sa3_base.model, gen, init_latents=latents)
  assert relative(ours.latents, ref.latents) <= RUN_TOLERANCE


def recording(ref, seconds=2.0, seed=3):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * ref.sampling_rate)) / ref.sampling_rate
  tone = 0.4 * np.sin(2 * np.pi * 3.0 * t) + 0.05 * rng.standard_normal(t.shape)
  return np.stack([tone, 0.7 * tone]).astype(np.float32)


@pytest.mark.parametrize("level", [0.5, 0.8])
def test_audio_to_audio_equals_diffusers(sa3, level):
  audio = recording(sa3.ref)
  steps, duration = 8, audio.shape[-1] / sa3.ref.sampling_rate
  noise, step_noise = noise_for(sa3.ref, duration, steps, seed=5)
  ref = R.audio_to_audio(sa3.ref, np.repeat(audio[None], len(PROMPTS), axis=0), list(PROMPTS), level, steps,
                         latents=noise, step_noise=np.repeat(step_noise, len(PROMPTS), axis=1))
  gen = pipeline.GenerationSettings(prompts=PROMPTS, audio_end_in_s=duration, init_noise_level=level)
  ours = variation.audio_to_audio(sa3.model, audio, gen, noise=noise, step_noise=step_noise)
  errors = relative(ours.latents, ref.latents), relative(ours.audio, ref.audio)
  print(f"SA3 audio-to-audio at {level}: latents {errors[0]:.1e}, audio {errors[1]:.1e}")
  assert max(errors) <= RUN_TOLERANCE


def test_inpainting_equals_diffusers(sa3):
  audio = recording(sa3.ref, seconds=3.0)
  steps, duration = 8, audio.shape[-1] / sa3.ref.sampling_rate
  noise, step_noise = noise_for(sa3.ref, duration, steps, seed=6)
  ref = R.inpaint(sa3.ref, np.repeat(audio[None], len(PROMPTS), axis=0), list(PROMPTS), 1.0, 2.0, steps,
                  latents=noise, step_noise=np.repeat(step_noise, len(PROMPTS), axis=1))
  gen = pipeline.GenerationSettings(prompts=PROMPTS, audio_end_in_s=duration)
  ours = variation.inpaint(sa3.model, audio, gen, [(1.0, 2.0)], noise=noise, step_noise=step_noise)
  errors = relative(ours.latents, ref.latents), relative(ours.audio, ref.audio)
  print(f"SA3 inpainting: latents {errors[0]:.1e}, audio {errors[1]:.1e}")
  assert max(errors) <= RUN_TOLERANCE
  assert np.array_equal(np.asarray(ref.local_add_cond[:, 0]), variation.inpainting_mask(
      sa3.model.config, noise.shape[-1], [(1.0, 2.0)])[0].repeat(len(PROMPTS), 0))
