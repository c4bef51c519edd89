"""Real-audio editing from the command line: an MP3 and a mono 22.05 kHz WAV on the tiny 44.1 kHz
model, invert.py + edit.py --inverted_latent, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tests.test_generate_cli import run_script

SR = 44100
COMMON = ["--num_inference_steps", "4", "--vital_layers=20,3,4"]


def write_tone(path, seconds, rate, channels, fmt=None):
  t = np.arange(int(seconds * rate)) / rate
  x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)
  sf.write(path, np.repeat(x[:, None], channels, axis=1), rate, format=fmt)
  return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
  root = tmp_path_factory.mktemp("recordings")
  return {"mp3": write_tone(root / "guitar.mp3", 2.5, SR, 2, "MP3"),
          "mono": write_tone(root / "mono22k.wav", 2.0, 22050, 1),
          "long": write_tone(root / "long.wav", 20.0, 8000, 1),
          "too_long": write_tone(root / "too_long.wav", 520.0, 8000, 1),
          "six": write_tone(root / "six.wav", 1.0, SR, 6)}


@pytest.mark.parametrize("kind", ["mp3", "mono"])
def test_edit_real_audio_end_to_end(tiny44k, recordings, tmp_path, kind):
  out = tmp_path / "out"
  res = run_script("edit.py", "--model", tiny44k.path, "--input_audio", recordings[kind], "--prompts",
                   "clean indie guitar", "classical piano solo, excited", *COMMON, "--output_path", out)
  assert res.returncode == 0, res.stderr
  names = sorted(p.name for p in out.iterdir())
  assert names == ["edit.json", "edit_1.wav", "index.html", "input.wav", "source_reconstruction.wav",
                   "spectrograms.png"]
  length = sf.info(recordings[kind]).duration
  for name in ("source_reconstruction.wav", "edit_1.wav", "input.wav"):
    audio, sr = sf.read(out / name, always_2d=True)
    assert sr == SR and audio.shape[1] == 2 and abs(audio.shape[0] / SR - length) < 0.05, name
  record = json.loads((out / "edit.json").read_text())
  assert record["real_audio"]["source_guidance"] == 1.0
  assert record["real_audio"]["settings"]["variant"] == "reference"
  assert record["settings"]["audio_end_in_s"] is None  # seconds_total: the model's maximum, as the reference
  assert [o["role"] for o in record["outputs"]] == ["source", "edit"]


def test_invert_once_edit_many(tiny44k, recordings, tmp_path):
  inv_dir = tmp_path / "inv"
  res = run_script("invert.py", "--model", tiny44k.path, "--input_audio", recordings["mp3"], "--prompts",
                   "clean indie guitar", "--num_inference_steps", "4", "--output_path", inv_dir)
  assert res.returncode == 0, res.stderr
  latent = np.load(inv_dir / "inverted_latent.npy")
  meta = json.loads((inv_dir / "inverted_latent.json").read_text())
  assert latent.shape == (1, 8, -(-meta["n_samples"] // 2048))
  for i, edit in enumerate(["classical piano"]):  # each further edit reuses the latent the same way
    out = tmp_path / f"edit{i}"
    res = run_script("edit.py", "--model", tiny44k.path, "--inverted_latent", inv_dir / "inverted_latent.npy",
                     "--prompts", "clean indie guitar", edit, *COMMON, "--output_path", out)
    assert res.returncode == 0, res.stderr
    audio, _ = sf.read(out / "edit_1.wav", always_2d=True)
    assert audio.shape[0] == meta["n_samples"]


def test_kv_from_inversion_cli(tiny44k, recordings, tmp_path):
  out = tmp_path / "out"
  res = run_script("edit.py", "--model", tiny44k.path, "--input_audio", recordings["mono"], "--prompts",
                   "clean indie guitar", "piano", *COMMON, "--kv_from_inversion", "--output_path", out)
  assert res.returncode == 0, res.stderr
  assert sorted(p.name for p in out.glob("*.wav")) == ["edit_1.wav", "input.wav"]


# Audio-file errors are tested in-process in tests/test_audio.py; here, one of them end to end
# plus the command-line checks of real-audio editing.
@pytest.mark.parametrize("args,message", [
    (["--input_audio", "MONO", "--prompts=only the source"], "editing needs at least two prompts in --prompts"),
    (["--input_audio", "TOOLONG", "--prompts", "a", "b"],
     "520.00 s long but the model takes at most 512.00 s; pick a segment with --input_start_s / --input_end_s"),
    (["--input_audio", "LONG", "--prompts", "a", "b", "--window_s", "20"],
     "--window_s 20 s does not fit the model: give more than 0 and at most 16.35 s"),
    (["--input_audio", "LONG", "--prompts", "a", "b", "--window_s", "8", "--overlap_s", "8"],
     "--overlap_s (8 s) must be shorter than the window (7.99 s, --window_s)"),
    (["--input_audio", "LONG", "--prompts", "a", "b", "--memory_budget_gib", "0.001"],
     "but the memory budget (--memory_budget_gib) is 0.001 GiB; edit a shorter segment (--input_start_s / "
     "--input_end_s)"),
    (["--input_audio", "LONG", "--prompts", "a", "b", "--kv_from_inversion"],
     "a recording longer than one window is edited by regenerating its source: leave out --kv_from_inversion"),
    (["--input_audio", "SIX", "--prompts", "a", "b"], "has 6 channels; the model takes 2. Set --downmix to mix them down"),
    (["--inverted_latent", "BADLATENT", "--prompts", "a", "b"], "--inverted_latent has shape (1, 4, 10)"),
    (["--inverted_latent", "GOODLATENT", "--input_audio", "MONO", "--prompts", "a", "b"],
     "--inverted_latent has 3 frames but the recording (this segment) needs 44"),
])
def test_real_audio_bad_input(tiny44k, recordings, tmp_path, args, message):
  np.save(tmp_path / "bad.npy", np.zeros((1, 4, 10), np.float32))
  np.save(tmp_path / "good.npy", np.zeros((1, 8, 3), np.float32))
  subst = {"MONO": recordings["mono"], "LONG": recordings["long"], "SIX": recordings["six"],
           "TOOLONG": recordings["too_long"],
           "BADLATENT": tmp_path / "bad.npy", "GOODLATENT": tmp_path / "good.npy"}
  args = [str(subst.get(a, a)) for a in args]
  out = tmp_path / "out"
  res = run_script("edit.py", "--model", tiny44k.path, *args, *COMMON, "--output_path", out)
  assert res.returncode != 0
  assert message in res.stderr, res.stderr
  assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr, res.stderr
  assert not out.exists() or not any(out.iterdir())


def test_invert_needs_one_description(tiny44k, recordings, tmp_path):
  res = run_script("invert.py", "--model", tiny44k.path, "--input_audio", recordings["mono"], "--prompts", "a", "b",
                   "--output_path", tmp_path / "o")
  assert res.returncode == 2 and "give exactly one --prompts" in res.stderr


def test_a_recording_longer_than_the_window_is_edited_whole(tiny44k, recordings, tmp_path):
  """20 s on the tiny model (16.35 s window), in 8 s windows: every output has the recording's
  length, the record says how the windows fell, and the inversion can be saved and edited again."""
  out = tmp_path / "out"
  windows = ["--window_s", "8", "--overlap_s", "2"]
  res = run_script("edit.py", "--model", tiny44k.path, "--input_audio", recordings["long"], "--prompts",
                   "clean indie guitar", "classical piano solo", *COMMON, *windows, "--output_path", out)
  assert res.returncode == 0, res.stderr
  assert "4 windows of 7.99 s" in res.stdout, res.stdout
  assert sorted(p.name for p in out.iterdir()) == ["edit.json", "edit_1.wav", "index.html", "input.wav",
                                                  "source_reconstruction.wav", "spectrograms.png"]
  n = None
  for name in ("input.wav", "source_reconstruction.wav", "edit_1.wav"):
    audio, sr = sf.read(out / name, always_2d=True)
    n = n or audio.shape[0]
    assert sr == SR and audio.shape == (n, 2) and abs(n / SR - 20.0) < 1e-3, name
  record = json.loads((out / "edit.json").read_text())
  assert record["real_audio"]["windows"] == {"window_s": 8.0, "overlap_s": 2.0, "windows_per_batch": None,
                                             "memory_budget_gib": None}
  assert record["real_audio"]["latent_shape"] == [1, 8, 431]

  inv_dir = tmp_path / "inv"
  res = run_script("invert.py", "--model", tiny44k.path, "--input_audio", recordings["long"], "--prompts",
                   "clean indie guitar", "--num_inference_steps", "4", *windows, "--output_path", inv_dir)
  assert res.returncode == 0, res.stderr
  again = tmp_path / "again"
  res = run_script("edit.py", "--model", tiny44k.path, "--inverted_latent", inv_dir / "inverted_latent.npy",
                   "--prompts", "clean indie guitar", "classical piano solo", *COMMON, "--output_path", again)
  assert res.returncode == 0, res.stderr
  first, _ = sf.read(out / "edit_1.wav", always_2d=True)
  second, _ = sf.read(again / "edit_1.wav", always_2d=True)
  np.testing.assert_array_equal(second, first)  # the same inversion, the same windows, the same program
