"""Defaults never fail: a user who sets nothing never gets an error about a flag they did not set.
Defaults adapt to the model and to the other flags (each said in one info line); an explicit flag
that does not fit is still refused. The tiny models have windows far shorter than the reference's
15 s, and few steps are asked for, so every default that assumed SAO 1.0 would show here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import optimize_schedule as optimize_cli
from musickv_jax.cli import probe_layers as probe_cli
from musickv_jax.research import probing
from tests.test_cli import assert_one_line_error, cli

PROMPTS = ["--prompts", "piano solo", "acoustic guitar"]


def test_edit_without_a_length_fits_a_short_window(tiny, tmp_path, capsys):
  """Nothing set: the model's own preset (layers that fit its depth) and its whole window."""
  cfg = tiny.model.config
  status, out, err = cli(capsys, edit_cli, "--model", tiny.path, *PROMPTS, "--num_inference_steps", "2",
                         "--output_path", tmp_path / "out")
  assert status == 0, err
  audio, rate = sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)
  assert audio.shape[0] == int(cfg.max_audio_seconds * rate)
  record = json.loads((tmp_path / "out" / "edit.json").read_text())
  assert record["resolved"]["audio_end_in_s"] == pytest.approx(cfg.max_audio_seconds)
  assert all(0 <= layer < cfg.dit.depth for layer in record["editing"]["vital_layers"])


def test_a_named_presets_length_is_cut_to_a_short_window(tiny, tmp_path, capsys):
  cfg = tiny.model.config
  assert cfg.max_audio_seconds < 15.0  # the musickv preset's 15 s does not fit this model
  status, out, err = cli(capsys, edit_cli, "--model", tiny.path, *PROMPTS, "--preset", "musickv", "--vital_layers=1",
                         "--num_inference_steps", "2", "--output_path", tmp_path / "out")
  assert status == 0, err
  assert "info: the preset's 15 s is longer than this model's" in err
  audio, rate = sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)
  assert audio.shape[0] == int(cfg.max_audio_seconds * rate)


def test_an_explicit_length_that_does_not_fit_is_still_refused(tiny, tmp_path, capsys):
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, *PROMPTS, "--vital_layers=1", "--num_inference_steps", "2",
                       "--audio_end_in_s", "15", "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "--audio_end_in_s 15 s is longer than the model's maximum")


def test_optimize_with_few_steps_and_no_time_bins(tiny44k, tmp_path, capsys):
  """The default time bins (8) exceed 3 steps: they follow the steps instead of failing."""
  status, out, err = cli(capsys, optimize_cli, "--model", tiny44k.path, *PROMPTS, "--vital_layers=20,3",
                         "--num_inference_steps", "3", "--iterations", "1", "--latent_length", "fit", "--audio_end_in_s", "0.5",
                         "--output_path", tmp_path / "learned")
  assert status == 0, err
  assert np.load(tmp_path / "learned" / "schedule.npy").shape == (3, 2)
  # an explicit --time_bins that cannot fit is still refused
  status, _, err = cli(capsys, optimize_cli, "--model", tiny44k.path, *PROMPTS, "--num_inference_steps", "3",
                       "--time_bins", "8", "--output_path", tmp_path / "other")
  assert_one_line_error(status, err, "--time_bins (8) cannot exceed --num_inference_steps (3)")


def test_the_probe_length_follows_the_window(tiny, tiny44k, tmp_path, capsys):
  settings = probing.ProbeSettings(prompts=("piano solo",))
  assert settings.resolved_seconds(tiny.model.config) == tiny.model.config.max_audio_seconds < probing.PROBE_SECONDS
  assert settings.resolved_seconds(tiny44k.model.config) == probing.PROBE_SECONDS
  status, out, err = cli(capsys, probe_cli, "--model", tiny44k.path, "--prompts", "piano solo", "--layers=0,1",
                         "--num_inference_steps", "2", "--top_k", "1", "--output_path", tmp_path / "probe")
  assert status == 0, err
  assert json.loads((tmp_path / "probe" / "probe.json").read_text())["ranking"]


def test_the_probe_refuses_audio_its_metrics_cannot_analyse(tiny, tmp_path, capsys):
  status, _, err = cli(capsys, probe_cli, "--model", tiny.path, "--prompts", "piano solo", "--layers=0,1",
                       "--num_inference_steps", "2", "--top_k", "1", "--output_path", tmp_path / "probe")
  assert_one_line_error(status, err, "the music metrics need audio at 16000 Hz or more")
