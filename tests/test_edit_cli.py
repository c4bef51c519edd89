"""scripts/edit.py end to end on a tiny checkpoint, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tests.test_generate_cli import run_script

BASE = ["--num_inference_steps", "3", "--audio_end_in_s", "2", "--vital_layers=1"]


def test_edit_writes_source_edits_sidecar_and_spectrogram(tiny, tmp_path):
  out = tmp_path / "out"
  res = run_script("edit.py", "--model", tiny.path, "--prompts", "piano solo", "acoustic guitar, country, soft",
                   "drums", *BASE, "--output_path", out, "--save_latents", out / "latents.npy")
  assert res.returncode == 0, res.stderr
  assert sorted(p.name for p in out.iterdir()) == ["edit.json", "edit_1.wav", "index.html", "latents.npy",
                                                   "prompt_3.wav", "source.wav", "spectrograms.png"]
  for name in ("source", "edit_1", "prompt_3"):
    audio, sr = sf.read(out / f"{name}.wav", always_2d=True)
    assert sr == 16 and audio.shape == (32, 2)
  assert (out / "spectrograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  record = json.loads((out / "edit.json").read_text())
  assert record["editing"]["vital_layers"] == [1]
  assert record["editing"]["schedule"] == "linear_ramp"
  np.testing.assert_allclose(np.asarray(record["editing"]["schedule_values"])[:, 0], [0, 1 / 3, 2 / 3], rtol=1e-6)
  assert [o["role"] for o in record["outputs"]] == ["source", "edit", "plain"]
  assert record["settings"]["guidance_scale"] == 7.0  # from the musickv preset
  latents = np.load(out / "latents.npy")
  assert latents.shape[0] == 3


def test_edit_all_cached_and_schedule_file(tiny, tmp_path):
  schedule = np.full((3, 2), 0.5, np.float32)
  np.save(tmp_path / "w.npy", schedule)
  out = tmp_path / "out"
  res = run_script("edit.py", "--model", tiny.path, "--prompts", "piano", "guitar", "drums", "--edit_all",
                   "--injection_mode", "cached", "--vital_layers=1,0", "--schedule", tmp_path / "w.npy",
                   "--num_inference_steps", "3", "--audio_end_in_s", "2", "--output_path", out)
  assert res.returncode == 0, res.stderr
  assert {p.name for p in out.glob("*.wav")} == {"source.wav", "edit_1.wav", "edit_2.wav"}
  record = json.loads((out / "edit.json").read_text())
  assert record["editing"]["injection_mode"] == "cached" and record["editing"]["edit_all"]
  assert record["editing"]["schedule_values"] == schedule.tolist()


# One case per kind of failure the command line itself handles; the library's checks behind them
# (empty prompts, duplicate or out-of-range layers, schedule shape and values) are tested in-process
# in tests/test_editing.py.
@pytest.mark.parametrize("args,message", [
    (["--prompts=piano"], "editing needs at least two prompts"),
    (["--prompts", "a", "b", "--vital_layers=20,3,4"], "layer 20 is out of range; this model's layers are 0..1"),
    (["--prompts", "a", "b", "--vital_layers=1", "--schedule", "SCHED_NAN"], "NaN"),
    (["--prompts", "a", "b", "--vital_layers=1", "--output_path", "/proc/nope"], "is not a writable directory"),
    (["--prompts", "a", "b", "--vital_layers=x"], "--vital_layers takes comma-separated integers"),
    (["--prompts", "a", "b", "--vital_layers=1", "--preset", "nope"], "--preset 'nope' not found"),
])
def test_edit_bad_input_fails_in_one_line_without_output(tiny, tmp_path, args, message):
  np.save(tmp_path / "bad_shape.npy", np.zeros((2, 1), np.float32))
  np.save(tmp_path / "nan.npy", np.full((3, 1), np.nan, np.float32))
  args = [{"SCHED_BAD_SHAPE": str(tmp_path / "bad_shape.npy"), "SCHED_NAN": str(tmp_path / "nan.npy")}.get(a, a)
          for a in args]
  out = tmp_path / "out"
  if "--output_path" not in args:
    args += ["--output_path", str(out)]
  res = run_script("edit.py", "--model", tiny.path, "--num_inference_steps", "3", "--audio_end_in_s", "2", *args)
  assert res.returncode != 0
  assert message in res.stderr, res.stderr
  assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr, res.stderr
  assert not out.exists() or not any(out.iterdir())
