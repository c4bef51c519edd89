"""scripts/generate.py end to end on a tiny checkpoint, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent


def run_script(script, *args, env_extra=None, timeout=600):
  # Programs compiled by one command are reused by the next (the test run's persistent compilation
  # cache, conftest.py), so the many short command-line runs of the suite do not each compile
  # everything again.
  env = {**os.environ, **(env_extra or {})}
  return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_generate_writes_wavs_and_sidecars(tiny, tmp_path):
  out = tmp_path / "out"
  res = run_script("generate.py", "--model", tiny.path, "--prompts", "piano solo", "acoustic guitar, country",
                   "--audio_start_in_s", "0.5", "--audio_end_in_s", "2.5", "--num_inference_steps", "3",
                   "--seed", "7", "--output_path", out, "--save_latents", out / "latents.npy")
  assert res.returncode == 0, res.stderr
  wavs = sorted(out.glob("*.wav"))
  assert [w.name for w in wavs] == ["0_piano-solo.wav", "1_acoustic-guitar-country.wav"]
  for i, wav in enumerate(wavs):
    audio, sr = sf.read(wav, always_2d=True)
    assert sr == tiny.model.config.sample_rate == 16
    assert audio.shape == (int(2.5 * sr) - int(0.5 * sr), 2)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
    sidecar = json.loads(wav.with_suffix(".json").read_text())
    assert sidecar["prompt_index"] == i
    assert sidecar["settings"]["seed"] == 7 and sidecar["settings"]["num_inference_steps"] == 3
    assert sidecar["settings"]["prompts"] == ["piano solo", "acoustic guitar, country"]
    assert sidecar["resolved"]["latent_frames"] == tiny.model.config.dit.sample_size
  latents = np.load(out / "latents.npy")
  assert latents.shape == (2, tiny.model.config.dit.io_channels, tiny.model.config.dit.sample_size)
  assert not list(out.glob(".*partial*"))

  # --init_latents reproduces the run exactly from its saved initial state: the same noise again.
  from musickv_jax.pipeline import GenerationSettings, initial_latents
  x_init = np.asarray(initial_latents(GenerationSettings(prompts=("a", "b"), seed=7), tiny.model.config, 2,
                                      tiny.model.config.dit.sample_size))
  np.save(tmp_path / "x_init.npy", x_init)
  again = run_script("generate.py", "--model", tiny.path, "--prompts", "piano solo", "acoustic guitar, country",
                     "--audio_start_in_s", "0.5", "--audio_end_in_s", "2.5", "--num_inference_steps", "3",
                     "--init_latents", tmp_path / "x_init.npy", "--output_path", tmp_path / "again",
                     "--save_latents", tmp_path / "again" / "latents.npy")
  assert again.returncode == 0, again.stderr
  np.testing.assert_array_equal(np.load(tmp_path / "again" / "latents.npy"), latents)


def test_generate_converts_an_unconverted_model_once(tiny, tmp_path):
  env = {"MUSICKV_CACHE": str(tmp_path / "cache")}
  args = ["--model", tiny.ref.diffusers_dir, "--prompts=piano", "--audio_end_in_s", "1", "--num_inference_steps",
          "2", "--output_path", tmp_path / "out"]
  first = run_script("generate.py", *args, env_extra=env)
  assert first.returncode == 0, first.stderr
  assert "converting it once" in first.stdout
  second = run_script("generate.py", *args, env_extra=env)
  assert second.returncode == 0 and "converting" not in second.stdout
  assert len(list((tmp_path / "cache" / "converted").iterdir())) == 1


@pytest.mark.parametrize("flags,message", [
    (["--sampler", "euler"], "--sampler: 'euler' does not sample this model (v objective); use one of dpmpp-2m"),
    (["--sampler", "heun"], "unknown sampler 'heun'"),
    (["--audio_end_in_s", "100"], "longer than the model's maximum of 4.00 s"),
    (["--num_inference_steps", "0"], "--num_inference_steps must be an integer of at least 1"),
    (["--model", "/does/not/exist"], "--model /does/not/exist: no such file or directory"),
    (["--num_inference_steps", "many"], "error: flag --num_inference_steps"),
])
def test_generate_bad_flags_fail_in_one_line_without_output(tiny, tmp_path, flags, message):
  out = tmp_path / "out"
  base = {"--model": str(tiny.path), "--prompts": "piano", "--output_path": str(out), "--num_inference_steps": "2"}
  for flag, value in zip(flags[::2], flags[1::2]):
    base[flag] = value
  args = [x for kv in base.items() for x in kv]
  res = run_script("generate.py", *args)
  assert res.returncode != 0
  assert message in res.stderr, res.stderr
  assert res.stderr.strip().count("\n") == 0, res.stderr
  assert "Traceback" not in res.stderr
  assert not out.exists() or not any(out.iterdir())


def test_generate_requires_a_model(tmp_path):
  res = run_script("generate.py", "--prompts", "piano", "--output_path", tmp_path / "out")
  assert res.returncode == 2 and "--model is required" in res.stderr


def test_a_second_run_compiles_nothing(tiny, tmp_path):
  """The sampler runs in host-driven chunks without host callbacks, so JAX's persistent
  compilation cache keeps its program: a second run with the same shapes adds nothing to it."""
  env = {"MUSICKV_COMPILATION_CACHE": str(tmp_path / "xla"), "MUSICKV_COMPILATION_CACHE_MIN_S": "0"}
  args = ["--model", tiny.path, "--prompts", "piano", "--audio_end_in_s", "2", "--num_inference_steps", "4",
          "--output_path", tmp_path / "out"]
  first = run_script("generate.py", *args, env_extra=env)
  assert first.returncode == 0, first.stderr
  cached = sorted(p.name for p in (tmp_path / "xla").iterdir())
  assert any(name.startswith("jit_sample_chunk") for name in cached), cached
  second = run_script("generate.py", *args, env_extra=env)
  assert second.returncode == 0, second.stderr
  assert sorted(p.name for p in (tmp_path / "xla").iterdir()) == cached
