"""Ways to edit a recording (pipeline.recording's methods) and region edits, on the tiny models of
every family: Stable Audio Open 1.0 (`tiny`, the v objective), Stable Audio Open Small (a converted
stable-audio-tools file, rectified flow with ping-pong) and Stable Audio 3 (`sa3`).

  FlowEdit  an edit prompt equal to the source prompt returns the recording's latent exactly, with
            and without injection; with one noise draw and weight 0 it equals a NumPy loop over our
            DiT calls written here.
  SDEdit    at level 0 it returns the recording's latent; on Stable Audio 3 its edit row (weight
            0) is audio-to-audio (pipeline.variation, equal to diffusers' pipeline in test_sa3_tasks).
  regions   outside the regions and their crossfades the edit's latent is the source's bit for bit
            (a generated source's latent; a recording's latent, whatever the method), several
            regions at once, and across a window boundary of a recording longer than the window;
            inside, weight 1 moves it."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from musickv_jax import pipeline
from musickv_jax.pipeline import EditSettings, GenerationSettings, InversionSettings, WindowSettings, kv_schedules
from musickv_jax.pipeline import regions as regions_lib
from musickv_jax.pipeline import common, variation
from musickv_jax.pipeline import flowedit as flowedit_lib
from musickv_jax.pipeline.plan import build_plan
from musickv_jax.pipeline.results import source_guidance
from musickv_jax.sampling import guided
from musickv_jax.sampling.regions import keep_mask
from musickv_jax.sampling.rows import Role

PROMPTS = ("piano solo", "acoustic guitar, country")
FAMILIES = ("tiny", "small", "sa3")
STEPS = 4


def _model(request, family: str):
  return request.getfixturevalue("sao_small" if family == "small" else family).model


def _seconds(model) -> float:
  return min(3.2, 0.8 * model.config.max_audio_seconds)


def _recording(model, seconds: float | None = None, seed: int = 0) -> np.ndarray:
  """A tone with a little noise, (channels, samples) at the model's rate (default: most of one window)."""
  cfg = model.config
  seconds = seconds or _seconds(model)
  t = np.arange(int(seconds * cfg.sample_rate)) / cfg.sample_rate
  rng = np.random.default_rng(seed)
  tone = 0.3 * np.sin(2 * np.pi * 3.0 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
  channels = cfg.vae.audio_channels
  return (tone[None] + 0.05 * rng.normal(size=(channels, t.size))).astype(np.float32)


def _settings(prompts=PROMPTS, weight: float = 1.0, layers=(0, 1), **kwargs) -> EditSettings:
  generation = {key: kwargs.pop(key) for key in ("guidance_scale", "init_noise_level", "seed") if key in kwargs}
  return EditSettings(GenerationSettings(prompts=prompts, num_inference_steps=STEPS, **generation),
                      vital_layers=layers, schedule=kv_schedules.constant(STEPS, len(layers), weight), **kwargs)


def _edit_recording(model, audio, settings, windows=None):
  result, _ = pipeline.edit_audio(model, audio, settings, InversionSettings(prompt=settings.generation.prompts[0]),
                                  windows=windows)
  return result


def _latent(model, audio) -> np.ndarray:
  return np.asarray(pipeline.encode_audio(model, audio))[0]


# ----------------------------------------------------------------------------- FlowEdit


@pytest.mark.parametrize("family", FAMILIES)
def test_flowedit_with_the_source_prompt_returns_the_recording(request, family):
  """Every velocity difference is zero: the edit is the recording's latent, bit for bit, without
  injection (weight 0) and with it (the edit's K/V blended toward equal K/V stay theirs); another
  prompt moves it."""
  model = _model(request, family)
  audio = _recording(model)
  latent = _latent(model, audio)
  for weight in (0.0, 0.5, 1.0):
    same = _edit_recording(model, audio, _settings(("piano solo", "piano solo"), weight, method="flowedit",
                                                   flowedit_samples=2))
    np.testing.assert_array_equal(same.latents[0], latent)
    np.testing.assert_array_equal(same.latents[1], latent)
  moved = _edit_recording(model, audio, _settings(weight=0.0, method="flowedit", guidance_scale=3.0))
  np.testing.assert_array_equal(moved.latents[0], latent)
  assert np.abs(moved.latents[1] - latent).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_flowedit_equals_a_loop_over_the_dit(request, family):
  """One noise draw, weight 0: the scan equals a NumPy loop written from FlowEdit's definition over
  our guided DiT calls, step by step (z = a(s) x_src + s n, Z = z + X - x_src, d = (Z - D(Z)) / s,
  X += (s' - s)(d_edit - d_src))."""
  model = _model(request, family)
  cfg = model.config
  audio = _recording(model)
  settings = _settings(weight=0.0, method="flowedit", guidance_scale=3.0, flowedit_source_guidance=1.5,
                       flowedit_start=0.7).for_recording(cfg)
  result = _edit_recording(model, audio, settings)

  latent = _latent(model, audio)[None]
  plan = build_plan(model, settings, np.repeat(latent, 2, axis=0), source_guidance=source_guidance(settings),
                    check_coverage=False, reference=latent,
                    seconds=(0.0, common.recording_seconds(cfg, audio.shape[-1])))
  assert [row.guidance for row in plan.rows] == [1.5, 3.0]
  denoise = jax.jit(guided.guided_denoiser(model.params.dit, cfg.dit, plan.conditioning, use_cfg=plan.use_cfg))
  steps = plan.steps
  levels, following = np.asarray(steps.sigma), np.asarray(steps.sigma_next)
  assert levels[0] == pytest.approx(0.7 if cfg.diffusion.is_rectified_flow else np.tan(0.7 * np.arctan(
      settings.generation.sigma_max)), rel=1e-6)
  noise = np.asarray(flowedit_lib.noise(settings.generation.seed, STEPS, 1, latent.shape[1:]))
  x = np.repeat(latent, 2, axis=0).astype(np.float32)
  for i in range(STEPS):
    s = np.float32(levels[i])
    a = np.float32(1.0) - s if cfg.diffusion.is_rectified_flow else np.float32(1.0)
    z = a * latent + s * noise[i, 0]
    noised = z + (x - latent)
    step = jax.tree.map(lambda array: array[i], steps)
    denoised, _ = denoise(noised, step, {})
    direction = (noised - np.asarray(denoised)) / s
    x = x + (np.float32(following[i]) - s) * (direction - direction[:1])
  np.testing.assert_array_equal(result.latents[0], latent[0])
  scale = float(np.abs(x).max())
  np.testing.assert_allclose(result.latents, x, rtol=0, atol=2e-5 * scale)


# ----------------------------------------------------------------------------- SDEdit


@pytest.mark.parametrize("family", FAMILIES)
def test_sdedit_at_level_zero_returns_the_recording(request, family):
  model = _model(request, family)
  audio = _recording(model)
  result = _edit_recording(model, audio, _settings(method="sdedit", init_noise_level=0.0))
  latent = _latent(model, audio)
  for row in result.latents:
    np.testing.assert_array_equal(row, latent)


def test_sdedit_on_stable_audio_3_is_its_audio_to_audio(sa3):
  """Weight 0: the edit row is audio-to-audio of the edit prompt from the same noised latent (its
  own batch: equal up to float32 reassociation between batch sizes)."""
  model = sa3.model
  audio = _recording(model)
  seconds = audio.shape[-1] / model.config.sample_rate
  result = _edit_recording(model, audio, _settings(weight=0.0, method="sdedit", init_noise_level=0.5,
                                                   guidance_scale=2.0))
  variation_of_edit = variation.audio_to_audio(model, audio, GenerationSettings(
      prompts=PROMPTS[1:], num_inference_steps=STEPS, guidance_scale=2.0, audio_end_in_s=seconds, init_noise_level=0.5))
  scale = float(np.abs(variation_of_edit.latents).max())
  np.testing.assert_allclose(result.latents[1], variation_of_edit.latents[0], rtol=0, atol=1e-5 * scale)


# ----------------------------------------------------------------------------- regions


def _outside(model, settings, frames: int) -> np.ndarray:
  """(frames,) bool: beyond every region and its crossfade, computed here from the seconds."""
  rate = model.config.sample_rate / model.config.vae.hop_length
  fade = int(round(settings.region_crossfade_s * rate))
  outside = np.ones((frames,), bool)
  for start, end in settings.regions:
    outside[max(int(np.floor(start * rate)) - fade, 0):int(np.ceil(end * rate)) + fade] = False
  return outside


def _frame_s(model) -> float:
  return model.config.vae.hop_length / model.config.sample_rate


def _regions(model, frames: int, n: int = 1) -> tuple[tuple[float, float], ...]:
  """Regions on whole latent frames of a latent of `frames` (for a crossfade of one frame)."""
  spans = [(0.35, 0.6)] if n == 1 else [(0.1, 0.25), (0.6, 0.75)]
  return tuple((round(a * frames) * _frame_s(model), round(b * frames) * _frame_s(model)) for a, b in spans)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["inversion", "flowedit", "sdedit"])
def test_a_region_edit_of_a_recording_keeps_its_latent_outside(request, family, method):
  model = _model(request, family)
  audio = _recording(model)
  latent = _latent(model, audio)
  for n_regions in (1, 2):
    settings = _settings(weight=1.0, method=method, regions=_regions(model, latent.shape[-1], n_regions),
                         region_crossfade_s=_frame_s(model), guidance_scale=3.0)
    result = _edit_recording(model, audio, settings)
    outside = _outside(model, settings, latent.shape[-1])
    assert outside.any() and not outside.all()
    np.testing.assert_array_equal(result.latents[1][:, outside], latent[:, outside])
    inside = ~outside
    assert np.abs(result.latents[1][:, inside] - latent[:, inside]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_a_region_edit_of_a_generated_source_keeps_the_source_outside(request, family):
  model = _model(request, family)
  seconds = _seconds(model)
  frames = model.config.frames_for_samples(int(seconds * model.config.sample_rate))
  settings = dataclasses.replace(_settings(weight=1.0, regions=_regions(model, frames, 2),
                                           region_crossfade_s=_frame_s(model), guidance_scale=3.0),
                                 generation=GenerationSettings(prompts=PROMPTS, num_inference_steps=STEPS,
                                                               audio_end_in_s=seconds, guidance_scale=3.0))
  result = pipeline.edit(model, settings)
  plain = pipeline.edit(model, dataclasses.replace(settings, regions=()))
  np.testing.assert_array_equal(result.latents[0], plain.latents[0])  # the source is not pasted
  outside = _outside(model, settings, result.latents.shape[-1])
  np.testing.assert_array_equal(result.latents[1][:, outside], result.latents[0][:, outside])
  assert np.abs(result.latents[1][:, ~outside] - result.latents[0][:, ~outside]).max() > 1e-3


@pytest.mark.parametrize("method", ["inversion", "flowedit", "sdedit"])
def test_a_region_across_a_window_boundary_of_a_long_recording(tiny, method):
  """tiny: 4 s windows overlapping by 1 s over a 10 s recording (windows at 0, 3, 6 s); the region
  2.5-4.5 s crosses the first overlap."""
  model = tiny.model
  audio = _recording(model, seconds=10.0)
  latent = _latent(model, audio)
  settings = _settings(weight=1.0, method=method, regions=((2.5, 4.5),), region_crossfade_s=0.25, guidance_scale=3.0)
  result = _edit_recording(model, audio, settings, windows=WindowSettings(window_s=4.0, overlap_s=1.0))
  assert result.recording["windows"] is not None
  outside = _outside(model, settings, latent.shape[-1])
  np.testing.assert_array_equal(result.latents[1][:, outside], latent[:, outside])
  assert np.abs(result.latents[1][:, ~outside] - latent[:, ~outside]).max() > 1e-3


@pytest.mark.fast
def test_the_keep_mask_fades_just_outside_each_region():
  mask = keep_mask(20, [(5, 8), (14, 16)], 2)
  np.testing.assert_array_equal(mask[5:8], 1.0)
  np.testing.assert_array_equal(mask[14:16], 1.0)
  np.testing.assert_array_equal(mask[[0, 1, 2, 11, 19]], 0.0)
  np.testing.assert_allclose(mask[[3, 4, 8, 9]], [1 / 3, 2 / 3, 2 / 3, 1 / 3], rtol=1e-6)


def test_stable_audio_3_region_edits_hear_the_kept_recording(sa3):
  """Its native inpainting conditioning: an edit row knows the recording outside its regions, the
  source and plain rows know all of it."""
  model = sa3.model
  settings = _settings(regions=((0.5, 1.0),), region_crossfade_s=0.0).for_recording(model.config)
  clean = np.ones((1, model.config.dit.io_channels, 40), np.float32)
  local = regions_lib.inpainting_conditioning(model.config, settings, [Role.SOURCE, Role.EDIT], clean)
  frames = regions_lib.region_frames(model.config, settings, 40)[0]
  assert local.shape == (2, model.config.dit.io_channels + 1, 40)
  np.testing.assert_array_equal(local[0], 1.0)
  np.testing.assert_array_equal(local[1, :, frames[0]:frames[1]], 0.0)
  np.testing.assert_array_equal(local[1, :, :frames[0]], 1.0)


# ----------------------------------------------------------------------------- the command line


def test_the_command_line_edits_a_region_by_flowedit_and_sdedit(tiny, tmp_path, capsys):
  """musickv-edit --input_audio IN --edit_method=flowedit|sdedit --edit_region START,END (repeatable)
  --region_crossfade_s S --flowedit_samples N --init_noise_level L: the record says how, and the
  saved latents keep the recording's outside the regions."""
  import json

  import soundfile as sf

  from musickv_jax.cli import edit as edit_cli
  from tests.test_cli import cli

  model = tiny.model
  audio = _recording(model)
  sf.write(tmp_path / "in.wav", audio.T, model.config.sample_rate, subtype="FLOAT")
  latent = _latent(model, audio)
  frames = latent.shape[-1]
  regions = _regions(model, frames, 2)
  region_flags = [arg for start, end in regions for arg in ("--edit_region", f"{start!r},{end!r}")]
  for method, extra in (("flowedit", ["--flowedit_samples", "2", "--flowedit_start", "0.7"]),
                        ("sdedit", ["--init_noise_level", "0.5"])):
    out = tmp_path / method
    status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--input_audio", tmp_path / "in.wav", "--prompts",
                         *PROMPTS, "--num_inference_steps", STEPS, "--edit_method", method, *region_flags,
                         "--region_crossfade_s", _frame_s(model), *extra, "--output_path", out,
                         "--save_latents", out / "latents.npy")
    assert status == 0, err
    record = json.loads((out / "edit.json").read_text())
    assert record["editing"]["method"] == method and record["real_audio"]["method"] == method
    assert [tuple(region) for region in record["editing"]["regions"]] == [tuple(region) for region in regions]
    saved = np.load(out / "latents.npy")
    settings = _settings(regions=regions, region_crossfade_s=_frame_s(model))
    outside = _outside(model, settings, frames)
    # the file was read back from a float WAV: its latent is the recording's as the command heard it
    heard = _latent(model, sf.read(out / "input.wav", always_2d=True, dtype="float32")[0].T)
    np.testing.assert_array_equal(saved[1][:, outside], heard[:, outside])
    assert "inverting" not in err


def test_the_command_line_refuses_a_method_without_a_recording(tiny, tmp_path, capsys):
  from musickv_jax.cli import edit as edit_cli
  from tests.test_cli import assert_one_line_error, cli

  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", *PROMPTS, "--edit_method", "flowedit",
                       "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "--edit_method flowedit edits a recording without inverting it")
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", *PROMPTS, "--init_noise_level", "0.5",
                       "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "--init_noise_level is where SDEdit starts: it needs --edit_method=sdedit")
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", *PROMPTS, "--edit_region", "1,x",
                       "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "--edit_region takes START,END seconds", expected_status=2)
  assert not (tmp_path / "out").exists()


def test_a_batch_of_flowedit_and_region_jobs_equals_each_job_alone(tiny, tmp_path, capsys):
  """musickv-edit-batch on a data mesh: two FlowEdit jobs with regions share a padded batch (their
  FlowEdit data and pastes joined row by row), an SDEdit job with a region runs in its own bucket;
  each equals musickv-edit alone (the derived bound of two float32 batch sizes), and outside its
  regions keeps the recording's latent bit for bit."""
  import json

  import soundfile as sf

  from musickv_jax.cli import edit as edit_cli
  from musickv_jax.cli import edit_batch
  from tests import tolerances
  from tests.test_cli import cli

  model = tiny.model
  cfg = model.config
  audio = _recording(model)
  sf.write(tmp_path / "in.wav", audio.T, cfg.sample_rate, subtype="FLOAT")
  frames = cfg.frames_for_samples(audio.shape[-1])
  region = [list(span) for span in _regions(model, frames, 1)]
  jobs = [{"id": "fe-a", "prompts": list(PROMPTS), "edit_method": "flowedit", "edit_region": region},
          {"id": "fe-b", "prompts": ["piano solo", "string quartet"], "edit_method": "flowedit", "seed": 3,
           "edit_region": region},
          {"id": "sd", "prompts": list(PROMPTS), "edit_method": "sdedit", "init_noise_level": 0.5,
           "edit_region": region}]
  manifest = tmp_path / "jobs.jsonl"
  manifest.write_text("\n".join(json.dumps(job | {"input_audio": str(tmp_path / "in.wav")}) for job in jobs) + "\n")
  common = ["--num_inference_steps", STEPS, "--guidance_scale", "3", "--region_crossfade_s", _frame_s(model)]
  status, _, err = cli(capsys, edit_batch, "--model", tiny.path, "--manifest", manifest, "--output_path",
                       tmp_path / "batch", "--rows_per_device", "6", *common)
  assert status == 0, err
  heard = _latent(model, sf.read(tmp_path / "batch" / "fe-a" / "input.wav", always_2d=True, dtype="float32")[0].T)
  settings = _settings(regions=tuple(map(tuple, region)), region_crossfade_s=_frame_s(model))
  outside = _outside(model, settings, frames)
  for job in jobs:
    args = ["--model", tiny.path, "--input_audio", tmp_path / "in.wav", "--prompts", *job["prompts"], *common,
            "--edit_method", job["edit_method"], "--edit_region", ",".join(f"{v!r}" for v in region[0]),
            "--output_path", tmp_path / f"alone-{job['id']}", "--save_latents", tmp_path / f"{job['id']}.npy"]
    args += ["--seed", str(job["seed"])] if "seed" in job else []
    args += ["--init_noise_level", str(job["init_noise_level"])] if "init_noise_level" in job else []
    status, _, err = cli(capsys, edit_cli, *args)
    assert status == 0, err
    alone, batched = np.load(tmp_path / f"{job['id']}.npy"), np.load(tmp_path / "batch" / job["id"] / "latents.npy")
    error = np.abs(alone - batched).max() / np.abs(alone).max()
    bound = 4 * tolerances.run_to_run(cfg.dit, frames, cfg.t5.max_length + 2, 3.0)
    assert error <= bound, f"{job['id']}: batch vs alone {error:.2e} > {bound:.2e}"
    np.testing.assert_array_equal(batched[1][:, outside], heard[:, outside])


@pytest.mark.parametrize(("kwargs", "named"), [
    (dict(method="flowedit", flowedit_source_guidance=-2.0), "flowedit_source_guidance must be a finite number, 0 or"),
    (dict(method="flowedit", flowedit_samples=17), "flowedit_samples must be a whole number from 1 to 16"),
    (dict(regions=tuple((i, i + 0.5) for i in range(257))), "regions 257 is more than 256 regions"),
])
def test_method_settings_over_their_bounds_are_refused_in_one_line(tiny, kwargs, named):
  """Negative source guidance is refused as the guidance scale is (issue 29, item 4); the noise
  draws and the number of regions have caps (item 2)."""
  from musickv_jax.errors import SettingsError

  with pytest.raises(SettingsError) as caught:
    _settings(**kwargs).validate(tiny.model.config)
  message = str(caught.value)
  assert message.startswith(named) and "\n" not in message, message
