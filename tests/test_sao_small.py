"""MusicKV on Stable Audio Open Small (rectified flow, ping-pong sampling): the injection's exact
properties, the two modes, real-audio inversion and its round trip, and the command lines with the
model's own defaults. The tiny model is a converted stable-audio-tools file (tests/sat_reference.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools reference is not installed (Makefile .test)")

from musickv_jax import pipeline  # noqa: E402
from musickv_jax.checkpoint import load_converted  # noqa: E402
from musickv_jax.cli import edit as edit_cli  # noqa: E402
from musickv_jax.cli import edit_batch  # noqa: E402
from musickv_jax.cli import evaluate as evaluate_cli  # noqa: E402
from musickv_jax.cli import generate as generate_cli  # noqa: E402
from musickv_jax.cli import optimize_schedule as optimize_cli  # noqa: E402
from musickv_jax.convert.pipeline import convert_checkpoint  # noqa: E402
from musickv_jax.pipeline import EditSettings, GenerationSettings, InversionSettings, kv_schedules, presets  # noqa: E402
from musickv_jax.research import probing  # noqa: E402
from tests import sat_reference as S  # noqa: E402
from tests import tolerances  # noqa: E402
from tests.test_cli import cli  # noqa: E402

PROMPTS = ("piano solo", "acoustic guitar, country")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  """rf_denoiser (ARC) and rectified_flow (base) tiny models, converted; {objective: (path, model)}."""
  root = tmp_path_factory.mktemp("small")
  out = {}
  for seed, objective in enumerate(S.OBJECTIVES):
    ref = S.build_tiny(root / objective, objective, seed=seed + 5)
    convert_checkpoint(root / objective / "model.safetensors", root / f"{objective}-converted", t5_dir=ref.t5_dir,
                       log=lambda message: None)
    out[objective] = (root / f"{objective}-converted", load_converted(root / f"{objective}-converted"))
  return out


def _edit(model, weight: float, **kwargs):
  steps = model.config.diffusion.defaults.steps
  layers = (0, 1)
  settings = EditSettings(GenerationSettings(prompts=PROMPTS, **kwargs), vital_layers=layers,
                          schedule=kv_schedules.constant(steps, len(layers), weight))
  return pipeline.edit(model, settings)


def test_the_defaults_are_the_models(small):
  _, model = small["rf_denoiser"]
  result = _edit(model, 0.5)
  gen = result.settings.generation
  assert (gen.sampler, gen.num_inference_steps, gen.guidance_scale) == ("pingpong", 8, 1.0)
  assert result.audio.shape[-1] == int(model.config.max_audio_seconds * model.config.sample_rate)


def test_weight_zero_is_a_plain_generation_with_the_same_noise(small):
  """Source and edit share the initial noise and every step's noise: weight 0 gives each prompt's
  plain generation (the same batch, bit for bit), and the source row is the source's generation."""
  _, model = small["rf_denoiser"]
  edited = _edit(model, 0.0)
  x_init = np.repeat(pipeline.shared_initial_latents(GenerationSettings(prompts=PROMPTS), model.config, 1,
                                                     model.config.dit.sample_size), 2, axis=0)
  plain = pipeline.generate(model, GenerationSettings(prompts=PROMPTS), init_latents=x_init)
  np.testing.assert_array_equal(edited.latents, plain.latents)
  moved = _edit(model, 1.0)
  np.testing.assert_array_equal(moved.latents[0], edited.latents[0])  # the source is never modified
  assert np.abs(moved.latents[1] - edited.latents[1]).max() > 1e-3  # full injection changes the edit


@pytest.mark.parametrize("objective", S.OBJECTIVES)
def test_joint_equals_cached(small, objective):
  _, model = small[objective]
  joint = _edit(model, 0.6, guidance_scale=3.0)
  settings = EditSettings(GenerationSettings(prompts=PROMPTS, guidance_scale=3.0), vital_layers=(0, 1),
                          schedule=kv_schedules.constant(model.config.diffusion.defaults.steps, 2, 0.6),
                          injection_mode="cached")
  cached = pipeline.edit(model, settings)
  cfg = model.config
  bound = tolerances.run_to_run(cfg.dit, cfg.dit.sample_size, cfg.t5.max_length + 1, 3.0)
  np.testing.assert_allclose(cached.latents, joint.latents, rtol=0, atol=bound * np.abs(joint.latents).max())


def _round_trip(model, steps: int) -> float:
  """Invert clean latents with the rectified-flow ODE, regenerate with Euler at guidance 1 from the
  inverted latent: the relative L2 error of the latent."""
  x0 = np.random.default_rng(0).standard_normal((1, model.config.dit.io_channels, model.config.dit.sample_size))
  x0 = x0.astype(np.float32)
  inverted, _ = pipeline.invert_latents(model, x0, InversionSettings("piano solo", steps))
  gen = GenerationSettings(prompts=("piano solo",), num_inference_steps=steps, guidance_scale=1.0, sampler="euler")
  out = pipeline.generate(model, gen, init_latents=inverted)
  return float(np.linalg.norm(out.latents - x0) / np.linalg.norm(x0))


@pytest.mark.parametrize("objective", S.OBJECTIVES)
def test_the_inversion_round_trip_shrinks_with_steps(small, objective):
  """Invert, then regenerate with guidance 1: the error falls as the steps grow (the figures go to
  docs/performance.md; a random model's velocity field is far rougher than a trained one's, so
  only the direction is asserted)."""
  _, model = small[objective]
  errors = {steps: _round_trip(model, steps) for steps in (8, 25, 50)}
  print(f"{objective} inversion round trip (relative L2 of the latent) at 8 / 25 / 50 steps: "
        + " / ".join(f"{e:.4f}" for e in errors.values()))
  assert errors[8] > errors[25] > errors[50]


def test_edit_command_with_the_models_defaults(small, tmp_path, capsys):
  path, model = small["rf_denoiser"]
  status, out, err = cli(capsys, edit_cli, "--model", path, "--prompts", *PROMPTS, "--output_path", tmp_path / "out")
  assert status == 0, err
  record = json.loads((tmp_path / "out" / "edit.json").read_text())
  assert record["settings"]["sampler"] == "pingpong" and record["settings"]["num_inference_steps"] == 8
  assert record["settings"]["guidance_scale"] == 1.0
  assert record["editing"]["vital_layers"]  # the model's default preset: its layers fit its depth
  assert all(0 <= layer < model.config.dit.depth for layer in record["editing"]["vital_layers"])
  audio, rate = sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)
  assert audio.shape[0] == int(model.config.max_audio_seconds * rate)


def test_edit_a_recording_uses_the_ode(small, tmp_path, capsys):
  path, model = small["rectified_flow"]
  rate = model.config.sample_rate
  recording = (0.3 * np.sin(2 * np.pi * 440 * np.arange(60) / rate)).astype(np.float32)
  sf.write(tmp_path / "in.wav", np.stack([recording, recording], axis=1), rate)
  status, out, err = cli(capsys, edit_cli, "--model", path, "--input_audio", tmp_path / "in.wav", "--prompts", *PROMPTS,
                         "--num_inference_steps", "6", "--output_path", tmp_path / "out")
  assert status == 0, err
  record = json.loads((tmp_path / "out" / "edit.json").read_text())
  assert record["settings"]["sampler"] == "euler"
  assert sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)[0].shape[0] == 60


def test_generate_refuses_a_sampler_of_the_other_family(small, tmp_path, capsys):
  path, _ = small["rf_denoiser"]
  status, _, err = cli(capsys, generate_cli, "--model", path, "--prompts", "a", "--sampler", "dpmpp-2m",
                       "--output_path", tmp_path / "out")
  assert status == 1 and "'dpmpp-2m' does not sample this model (rf_denoiser objective); use one of pingpong, euler" \
      in err


def test_a_batch_flag_no_job_can_run_with_is_refused_once_before_the_batch(small, tmp_path, capsys):
  """musickv-edit-batch --sampler=dpmpp-2m on SAO Small (issue 29): one line, exit 1, before the
  batch starts; no summary.json, no index.html, no output folder (it used to print the error per job
  and leave an all-failed summary). A flag that a line overrides (--vital_layers) is not the
  batch's: the batch runs and only the lines that inherit it fail, each in the summary."""
  path, _ = small["rf_denoiser"]
  manifest = tmp_path / "jobs.jsonl"
  lines = [{"id": f"job-{i}", "prompts": ["piano solo", "acoustic guitar"], "seed": i} for i in range(3)]
  manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
  out = tmp_path / "batch"
  args = ["--model", path, "--manifest", manifest, "--num_inference_steps", "2", "--vital_layers=1",
          "--sampler=dpmpp-2m"]
  status, _, err = cli(capsys, edit_batch, *args, "--output_path", out)
  assert status == 1, err
  assert err.strip() == ("error: --sampler: 'dpmpp-2m' does not sample this model (rf_denoiser objective); use one "
                         "of pingpong, euler (no job of the batch can run with it; nothing was run or written)"), err
  assert not out.exists()

  args = [*args[:-2], "--vital_layers=99"]  # every job inherits it: refused once too
  status, _, err = cli(capsys, edit_batch, *args, "--output_path", out)
  assert status == 1 and err.count("\n") == 1 and "--vital_layers: layer 99 is out of range" in err, err
  assert not out.exists()
  lines[1]["vital_layers"] = [1]  # one job can run: the batch runs, the others fail in its summary
  manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
  status, _, err = cli(capsys, edit_batch, *args, "--output_path", out)
  assert status == edit_batch.EXIT_SOME_FAILED, err
  summary = {job["id"]: job["status"] for job in json.loads((out / "summary.json").read_text())["jobs"]}
  assert summary == {"job-0": "failed", "job-1": "ok", "job-2": "failed"}
  assert err.count("layer 99 is out of range") == 2


# ----------------------------------------------------------------------------- the other commands on SAO Small
# A tiny SAO-Small-shaped model with SAO's VAE strides (hop 2048) and a 1.49 s window: long enough for
# the music metrics, so batch jobs, windowed recordings, the probe, evaluation and schedule
# optimisation run on the rectified-flow family as they do on SAO 1.0.

SONG_RATE = 22050


def _sao_strides_config() -> dict:
  config = S.tiny_config("rf_denoiser", latent_frames=32)
  vae = config["model"]["pretransform"]["config"]
  for part in ("encoder", "decoder"):
    vae[part]["config"].update(c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8])
  vae["downsampling_ratio"] = 2048
  config["sample_size"] = 32 * 2048
  return config


@pytest.fixture(scope="module")
def small_window(tmp_path_factory):
  root = tmp_path_factory.mktemp("small-window")
  ref = S.build_tiny(root / "sat", seed=11, config=_sao_strides_config())
  convert_checkpoint(root / "sat" / "model.safetensors", root / "converted", t5_dir=ref.t5_dir, log=lambda message: None)
  t = np.arange(int(3.2 * SONG_RATE)) / SONG_RATE
  song = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) / 2
  sf.write(root / "song.wav", song, SONG_RATE)
  sf.write(root / "tone.wav", song[:SONG_RATE], SONG_RATE)
  return root, root / "converted", load_converted(root / "converted")


def test_a_recording_longer_than_the_window_is_edited_over_windows(small_window, tmp_path, capsys):
  """SAO Small has no seconds_start conditioning: windows are told only the recording's length."""
  root, path, model = small_window
  assert "seconds_start" not in model.config.conditioner.numbers
  status, out, err = cli(capsys, edit_cli, "--model", path, "--input_audio", root / "song.wav", "--prompts", *PROMPTS,
                         "--output_path", tmp_path / "out")
  assert status == 0, err
  record = json.loads((tmp_path / "out" / "edit.json").read_text())
  assert record["settings"]["sampler"] == "euler" and record["settings"]["num_inference_steps"] == 8
  assert record["resolved"]["audio_end_in_s"] == pytest.approx(3.2, abs=1e-3)
  assert record["real_audio"]["windows"]["window_s"] in (None, pytest.approx(model.config.max_audio_seconds))
  edit, rate = sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)
  assert edit.shape[0] == int(3.2 * rate) and np.all(np.isfinite(edit))

  # the edit's own evaluation: the metrics read any WAV, here the rectified-flow model's
  status, out, err = cli(capsys, evaluate_cli, "--source", tmp_path / "out" / "source_reconstruction.wav", "--edits",
                         tmp_path / "out" / "edit_1.wav", "--output_path", tmp_path / "eval")
  assert status == 0, err
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["edits"][0]["metrics"]
  assert metrics and all(np.isfinite(v) for v in metrics.values())


def test_a_batch_job_equals_its_standalone_edit(small_window, tmp_path, capsys):
  root, path, _ = small_window
  manifest = tmp_path / "jobs.jsonl"
  jobs = [{"id": "text", "prompts": list(PROMPTS), "seed": 3},
          {"id": "recording", "prompts": ["a tone", "a piano"], "input_audio": str(root / "tone.wav")}]
  manifest.write_text("".join(json.dumps(job) + "\n" for job in jobs))
  status, _, err = cli(capsys, edit_batch, "--model", path, "--manifest", manifest, "--output_path", tmp_path / "batch")
  assert status == 0, err
  for job, extra in ((jobs[0], ["--seed", "3"]), (jobs[1], ["--input_audio", root / "tone.wav"])):
    status, _, err = cli(capsys, edit_cli, "--model", path, "--prompts", *job["prompts"], *extra,
                         "--save_latents", tmp_path / f"{job['id']}.npy", "--output_path", tmp_path / job["id"])
    assert status == 0, err
    alone, batched = np.load(tmp_path / f"{job['id']}.npy"), np.load(tmp_path / "batch" / job["id"] / "latents.npy")
    record = json.loads((tmp_path / "batch" / job["id"] / "edit.json").read_text())
    assert record["settings"]["num_inference_steps"] == 8  # the model's defaults, as standalone
    cfg = small_window[2].config
    bound = tolerances.run_to_run(cfg.dit, alone.shape[-1], cfg.t5.max_length + 1, 1.0)
    # ping-pong adds fresh noise every step: the batch must draw the standalone edit's, row for row
    np.testing.assert_allclose(batched, alone, rtol=0, atol=bound * np.abs(alone).max(), err_msg=job["id"])


def test_preset_probe_is_found_once_and_kept_beside_the_checkpoint(small_window, tmp_path, capsys, monkeypatch):
  root, path, model = small_window
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("piano solo\njazz trio\n")
  monkeypatch.setattr(probing, "default_prompts_file", lambda: prompts)
  kept = path / probing.PRESET_FILE
  assert not kept.exists()
  try:
    status, out, err = cli(capsys, edit_cli, "--model", path, "--prompts", *PROMPTS, "--preset", "probe",
                           "--output_path", tmp_path / "first")
    assert status == 0, err
    preset = json.loads(kept.read_text())
    assert len(preset["vital_layers"]) >= 1 and all(0 <= v < model.config.dit.depth for v in preset["vital_layers"])
    first = json.loads((tmp_path / "first" / "edit.json").read_text())
    assert first["editing"]["vital_layers"] == preset["vital_layers"]

    def probe_again(*args, **kwargs):
      raise AssertionError("the probe ran again although its preset was kept")

    monkeypatch.setattr(probing, "run_probe", probe_again)
    status, out, err = cli(capsys, edit_cli, "--model", path, "--prompts", *PROMPTS, "--preset", "probe",
                           "--output_path", tmp_path / "second")
    assert status == 0, err
    assert json.loads((tmp_path / "second" / "edit.json").read_text())["editing"] == first["editing"]
  finally:
    kept.unlink(missing_ok=True)  # the other tests use the model's shipped preset


def test_schedule_optimisation_on_the_rectified_flow_sampler(small_window, tmp_path, capsys):
  _, path, model = small_window
  # half a second of audio (--latent_length fit, the optimiser's default) keeps the gradient cheap
  status, _, err = cli(capsys, optimize_cli, "--model", path, "--prompts", *PROMPTS, "--iterations", "2",
                       "--audio_end_in_s", "0.5", "--output_path", tmp_path / "opt")
  assert status == 0, err
  history = json.loads((tmp_path / "opt" / "history.json").read_text())
  assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
  schedule = np.load(tmp_path / "opt" / "schedule.npy")
  layers = presets.default_for(model.config).vital_layers  # neither command was given layers: the model's preset's
  assert schedule.shape == (8, len(layers))  # ping-pong's 8 steps, the model's default
  status, _, err = cli(capsys, edit_cli, "--model", path, "--prompts", *PROMPTS, "--schedule",
                       tmp_path / "opt" / "schedule.npy", "--output_path", tmp_path / "edit")
  assert status == 0, err
  assert json.loads((tmp_path / "edit" / "edit.json").read_text())["editing"]["vital_layers"] == list(layers)
