"""MusicKV on Stable Audio 3 (tiny random model in the diffusers layout, converted): the injection's
exact properties in the differential attention with memory tokens, the two modes, the
time-varying schedule over 8 ping-pong steps, recordings by rectified-flow inversion, and the
command-line contract of musickv-generate and python -m convert on a converted folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import pipeline
from musickv_jax.checkpoint import load_converted
from musickv_jax.cli import convert as convert_cli
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import generate as generate_cli
from musickv_jax.pipeline import EditSettings, GenerationSettings, InversionSettings, kv_schedules, presets
from tests import sa3_reference as R
from tests import tolerances
from tests.test_cli import cli

PROMPTS = ("piano solo", "acoustic guitar, country")
DURATION = 2.0


def _edit(model, weight, **kwargs):
  steps = model.config.diffusion.defaults.steps
  layers = (0, 1)
  settings = EditSettings(GenerationSettings(prompts=PROMPTS, audio_end_in_s=DURATION, **kwargs), vital_layers=layers,
                          schedule=kv_schedules.constant(steps, len(layers), weight))
  return pipeline.edit(model, settings)


def test_the_default_preset_fits_the_model(sa3):
  preset = presets.default_for(sa3.model.config)
  assert preset.family == "sa3" and all(0 <= layer < sa3.model.config.dit.depth for layer in preset.vital_layers)
  for name in ("musickv-sa3-small", "musickv-sa3-medium"):
    shipped = presets.load(name)
    assert shipped.family == "sa3" and "GUESS" in shipped.description and shipped.depth in (20, 24)


def test_weight_zero_is_a_plain_generation_with_the_same_noise(sa3):
  """Source and edits share the initial noise and every ping-pong step's noise: weight 0 gives each
  prompt's plain generation (the same batch: bit for bit); the source row is never modified; weight
  1 moves the edit."""
  model = sa3.model
  edited = _edit(model, 0.0)
  frames = edited.latents.shape[-1]
  x_init = np.repeat(pipeline.shared_initial_latents(GenerationSettings(prompts=PROMPTS), model.config, 1, frames),
                     2, axis=0)
  plain = pipeline.generate(model, GenerationSettings(prompts=PROMPTS, audio_end_in_s=DURATION), init_latents=x_init)
  np.testing.assert_array_equal(edited.latents, plain.latents)
  moved = _edit(model, 1.0)
  np.testing.assert_array_equal(moved.latents[0], edited.latents[0])
  assert np.abs(moved.latents[1] - edited.latents[1]).max() > 1e-3


@pytest.mark.parametrize("fixture", ["sa3", "sa3_base"])
def test_joint_equals_cached(fixture, request):
  model = request.getfixturevalue(fixture).model
  joint = _edit(model, 0.6, guidance_scale=3.0)
  steps = model.config.diffusion.defaults.steps
  settings = EditSettings(GenerationSettings(prompts=PROMPTS, audio_end_in_s=DURATION, guidance_scale=3.0),
                          vital_layers=(0, 1), schedule=kv_schedules.constant(steps, 2, 0.6), injection_mode="cached")
  cached = pipeline.edit(model, settings)
  cfg = model.config
  bound = tolerances.run_to_run(cfg.dit, joint.latents.shape[-1] + cfg.dit.num_memory_tokens, cfg.cross_tokens, 3.0)
  np.testing.assert_allclose(cached.latents, joint.latents, rtol=0, atol=bound * np.abs(joint.latents).max())


def test_the_time_varying_schedule_over_eight_ping_pong_steps(sa3):
  """The reference ramp w_i = i / 8 in the default preset's vital layers: a weight per step, every
  step different, the first 0 (the edit starts free), and the edit moves away from both the plain
  edit (weight 0) and full injection (weight 1)."""
  model = sa3.model
  settings = EditSettings(GenerationSettings(prompts=PROMPTS, audio_end_in_s=DURATION))
  result = pipeline.edit(model, settings)
  schedule = np.asarray(result.schedule)
  assert schedule.shape == (8, len(presets.default_for(model.config).vital_layers))
  np.testing.assert_array_equal(schedule[:, 0], np.arange(8) / 8)
  preset_layers = presets.default_for(model.config).vital_layers
  zero = pipeline.edit(model, EditSettings(settings.generation, vital_layers=preset_layers,
                                           schedule=kv_schedules.constant(8, len(preset_layers), 0.0)))
  full = pipeline.edit(model, EditSettings(settings.generation, vital_layers=preset_layers,
                                           schedule=kv_schedules.constant(8, len(preset_layers), 1.0)))
  assert np.abs(result.latents[1] - zero.latents[1]).max() > 1e-4
  assert np.abs(result.latents[1] - full.latents[1]).max() > 1e-4


def _round_trip(model, steps):
  x0 = np.random.default_rng(0).standard_normal((1, model.config.dit.io_channels, 8)).astype(np.float32)
  inverted, _ = pipeline.invert_latents(model, x0, InversionSettings("piano solo", steps, seconds_total=DURATION))
  gen = GenerationSettings(prompts=("piano solo",), num_inference_steps=steps, guidance_scale=1.0, sampler="euler",
                           audio_end_in_s=DURATION)
  out = pipeline.generate(model, gen, init_latents=inverted)
  return float(np.linalg.norm(out.latents - x0) / np.linalg.norm(x0))


def test_the_inversion_round_trip_shrinks_with_steps(sa3):
  errors = {steps: _round_trip(sa3.model, steps) for steps in (8, 25, 50)}
  print("SA3 inversion round trip (relative L2 of the latent) at 8 / 25 / 50 steps: "
        + " / ".join(f"{e:.4f}" for e in errors.values()))
  assert errors[8] > errors[25] > errors[50]


def test_edit_a_recording_from_the_command_line(sa3, tmp_path, capsys):
  """musickv-edit --input_audio: inverted with the Euler ODE, edited, the recording's own length, its
  duration the conditioning."""
  rate = sa3.model.config.sample_rate
  t = np.arange(int(2.5 * rate)) / rate
  tone = (0.3 * np.sin(2 * np.pi * 5 * t)).astype(np.float32)
  sf.write(tmp_path / "in.wav", np.stack([tone, tone], axis=1), rate)
  status, _, err = cli(capsys, edit_cli, "--model", sa3.path, "--input_audio", tmp_path / "in.wav", "--prompts", *PROMPTS,
                       "--num_inference_steps", "6", "--output_path", tmp_path / "out")
  assert status == 0, err
  record = json.loads((tmp_path / "out" / "edit.json").read_text())
  assert record["settings"]["sampler"] == "euler"
  assert record["resolved"]["audio_end_in_s"] == pytest.approx(2.5)
  assert sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)[0].shape[0] == len(tone)


def test_the_command_line_contract(sa3, tmp_path, capsys):
  """musickv-generate --model DIR --prompts P --audio_end_in_s S --num_inference_steps N --guidance_scale G
  --sampler pingpong|euler --init_latents X --step_noise NOISE --save_latents OUT on a converted
  folder (and python -m convert on the diffusers folder): the latent length follows the duration,
  (1, C, T) initial latents are shared by every prompt, and the run equals diffusers'."""
  converted = tmp_path / "converted"
  status, _, err = cli(capsys, convert_cli, "--source", sa3.ref.diffusers_dir, "--output", converted)
  assert status == 0, err
  model = load_converted(converted)
  seconds, steps = 1.5, 8
  frames = R.latent_length(sa3.ref, seconds)
  assert frames == int(np.ceil(seconds * model.config.sample_rate / model.config.vae.hop_length))
  rng = np.random.default_rng(1)
  x_init = rng.standard_normal((1, model.config.dit.io_channels, frames)).astype(np.float32)
  noise = rng.standard_normal((steps, 1, model.config.dit.io_channels, frames)).astype(np.float32)
  np.save(tmp_path / "x.npy", x_init)
  np.save(tmp_path / "noise.npy", noise)
  status, _, err = cli(capsys, generate_cli, "--model", converted, "--prompts", *PROMPTS, "--audio_end_in_s",
                       str(seconds), "--num_inference_steps", str(steps), "--guidance_scale", "1", "--sampler",
                       "pingpong", "--init_latents", tmp_path / "x.npy", "--step_noise", tmp_path / "noise.npy",
                       "--save_latents", tmp_path / "out.npy", "--output_path", tmp_path / "out")
  assert status == 0, err
  ours = np.load(tmp_path / "out.npy")
  assert ours.shape == (2, model.config.dit.io_channels, frames)
  ref = R.text_to_audio(sa3.ref, list(PROMPTS), seconds, steps, latents=np.repeat(x_init, 2, axis=0),
                        step_noise=np.repeat(noise, 2, axis=1))
  assert np.max(np.abs(ours - ref.latents)) <= 1e-4 * np.max(np.abs(ref.latents))
  wav, rate = sf.read(sorted((tmp_path / "out").glob("0_*.wav"))[0], always_2d=True)
  assert wav.shape[0] == int(seconds * rate)
  # initial latents of another length are refused in one line, naming both
  status, _, err = cli(capsys, generate_cli, "--model", converted, "--prompts", "a", "--audio_end_in_s", "3",
                       "--init_latents", tmp_path / "x.npy", "--output_path", tmp_path / "bad")
  assert status == 1 and "--init_latents has 6 frames" in err and "--audio_end_in_s" in err and len(
      err.strip().splitlines()) == 1


def test_audio_to_audio_and_inpainting_from_the_command_line(sa3, tmp_path, capsys):
  rate = sa3.model.config.sample_rate
  t = np.arange(int(2.0 * rate)) / rate
  sf.write(tmp_path / "in.wav", np.stack([np.sin(2 * np.pi * 3 * t)] * 2, axis=1) * 0.3, rate)
  status, _, err = cli(capsys, generate_cli, "--model", sa3.path, "--prompts", "jazz", "--input_audio",
                       tmp_path / "in.wav", "--init_noise_level", "0.5", "--output_path", tmp_path / "a2a")
  assert status == 0, err
  record = json.loads(sorted((tmp_path / "a2a").glob("*.json"))[0].read_text())
  assert record["settings"]["init_noise_level"] == 0.5 and record["resolved"]["audio_end_in_s"] == pytest.approx(2.0)
  status, _, err = cli(capsys, generate_cli, "--model", sa3.path, "--prompts", "jazz", "--input_audio",
                       tmp_path / "in.wav", "--inpaint_range", "0.5,1.5", "--output_path", tmp_path / "inpaint")
  assert status == 0, err
  status, _, err = cli(capsys, generate_cli, "--model", sa3.path, "--prompts", "jazz", "--inpaint_range", "1,2",
                       "--output_path", tmp_path / "bad")
  assert status == 2 and "--inpaint_range applies to a run from a recording" in err
