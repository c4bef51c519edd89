"""Every command of musickv-jax on Stable Audio 3 (configs/tiny-sa3: 44.1 kHz, the 4096x SAME, random
weights): a recording longer than the window edited over windows and evaluated, a batch job equal
to its standalone edit, the probe found once (--preset=probe), a learned schedule, and the studio's
edit equal to musickv-edit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import edit_batch
from musickv_jax.cli import evaluate as evaluate_cli
from musickv_jax.cli import optimize_schedule as optimize_cli
from musickv_jax.pipeline import presets
from musickv_jax.research import probing
from tests import tolerances
from tests.test_cli import cli

PROMPTS = ("piano solo", "acoustic guitar, country")
RATE = 44100


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sa3-songs")
  t = np.arange(int(7.0 * RATE)) / RATE
  song = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.7 * t)) / 2
  sf.write(root / "song.wav", song, RATE)
  sf.write(root / "tone.wav", song[:int(2.5 * RATE)], RATE)
  return root


def test_a_recording_longer_than_the_window_is_edited_over_windows(sa3_44k, songs, tmp_path, capsys):
  """Stable Audio 3 conditions on a duration only: each window on its own length."""
  status, _, err = cli(capsys, edit_cli, "--model", sa3_44k.path, "--input_audio", songs / "song.wav", "--prompts",
                       *PROMPTS, "--window_s", "3", "--overlap_s", "1", "--output_path", tmp_path / "out")
  assert status == 0, err
  record = json.loads((tmp_path / "out" / "edit.json").read_text())
  assert record["settings"]["sampler"] == "euler" and record["real_audio"]["windows"]["window_s"] == 3
  edit, rate = sf.read(tmp_path / "out" / "edit_1.wav", always_2d=True)
  assert edit.shape[0] == int(7.0 * rate) and np.all(np.isfinite(edit)) and np.abs(edit).max() <= 1.0
  status, _, err = cli(capsys, evaluate_cli, "--source", tmp_path / "out" / "source_reconstruction.wav", "--edits",
                       tmp_path / "out" / "edit_1.wav", "--output_path", tmp_path / "eval")
  assert status == 0, err
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["edits"][0]["metrics"]
  assert metrics and all(np.isfinite(v) for v in metrics.values())


def test_a_batch_job_equals_its_standalone_edit(sa3_44k, songs, tmp_path, capsys):
  manifest = tmp_path / "jobs.jsonl"
  jobs = [{"id": "text", "prompts": list(PROMPTS), "seed": 3, "audio_end_in_s": 3.0},
          {"id": "recording", "prompts": ["a tone", "a piano"], "input_audio": str(songs / "tone.wav")}]
  manifest.write_text("".join(json.dumps(job) + "\n" for job in jobs))
  status, _, err = cli(capsys, edit_batch, "--model", sa3_44k.path, "--manifest", manifest, "--output_path",
                       tmp_path / "batch")
  assert status == 0, err
  cfg = sa3_44k.model.config
  for job, extra in ((jobs[0], ["--seed", "3", "--audio_end_in_s", "3"]), (jobs[1], ["--input_audio", songs / "tone.wav"])):
    status, _, err = cli(capsys, edit_cli, "--model", sa3_44k.path, "--prompts", *job["prompts"], *extra,
                         "--save_latents", tmp_path / f"{job['id']}.npy", "--output_path", tmp_path / job["id"])
    assert status == 0, err
    alone, batched = np.load(tmp_path / f"{job['id']}.npy"), np.load(tmp_path / "batch" / job["id"] / "latents.npy")
    bound = tolerances.run_to_run(cfg.dit, alone.shape[-1] + cfg.dit.num_memory_tokens, cfg.cross_tokens, 1.0)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=bound * np.abs(alone).max(), err_msg=job["id"])


def test_preset_probe_is_found_once_and_kept_beside_the_checkpoint(sa3_44k, tmp_path, capsys, monkeypatch):
  path, model = sa3_44k.path, sa3_44k.model
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("piano solo\njazz trio\n")
  monkeypatch.setattr(probing, "default_prompts_file", lambda: prompts)
  kept = path / probing.PRESET_FILE
  try:
    status, _, err = cli(capsys, edit_cli, "--model", path, "--prompts", *PROMPTS, "--preset", "probe",
                         "--audio_end_in_s", "2", "--output_path", tmp_path / "first")
    assert status == 0, err
    preset = json.loads(kept.read_text())
    assert preset["vital_layers"] and all(0 <= v < model.config.dit.depth for v in preset["vital_layers"])
    assert json.loads((tmp_path / "first" / "edit.json").read_text())["editing"]["vital_layers"] == \
        preset["vital_layers"]
  finally:
    kept.unlink(missing_ok=True)  # the other tests use the model's shipped preset


def test_schedule_optimisation_on_stable_audio_3(sa3_44k, tmp_path, capsys):
  status, _, err = cli(capsys, optimize_cli, "--model", sa3_44k.path, "--prompts", *PROMPTS, "--iterations", "2",
                       "--audio_end_in_s", "1", "--output_path", tmp_path / "opt")
  assert status == 0, err
  history = json.loads((tmp_path / "opt" / "history.json").read_text())
  assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
  layers = presets.default_for(sa3_44k.model.config).vital_layers
  assert np.load(tmp_path / "opt" / "schedule.npy").shape == (8, len(layers))


def test_the_studio_edits_stable_audio_3_as_musickv_edit_does(sa3_44k, songs, tmp_path, capsys):
  from musickv_jax.studio.request import StudioRequest
  from musickv_jax.studio.service import Studio

  studio = Studio({"sa3": (str(sa3_44k.path), sa3_44k.model)}, tmp_path / "studio", gather_s=0.0)
  try:
    outcome = studio.edit(StudioRequest("a tone", ("a piano",), audio=str(songs / "tone.wav"), num_inference_steps=4))
  finally:
    studio.close()
  status, _, err = cli(capsys, edit_cli, "--model", sa3_44k.path, "--prompts", "a tone", "a piano", "--input_audio",
                       songs / "tone.wav", "--num_inference_steps", "4", "--output_path", tmp_path / "cli")
  assert status == 0, err
  ours, _ = sf.read(outcome.edit_wavs[0], always_2d=True)
  theirs, _ = sf.read(tmp_path / "cli" / "edit_1.wav", always_2d=True)
  np.testing.assert_array_equal(ours, theirs)  # an edit alone: the same program, bit for bit
  assert outcome.metrics.rows and all(np.isfinite(v) for _, values in outcome.metrics.rows for v in values)
