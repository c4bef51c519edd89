"""Nothing non-finite is ever written (issue 29, item 1): a run whose samples, latents, schedule
or metrics are NaN or infinite says in one line which stage made them and writes nothing (no file,
no temporary). Each stage is made to run away on purpose (a huge guidance, or a stage replaced by
one that returns NaN), through the command that writes its result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import finite
from musickv_jax.audio import save_wav
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import evaluate as evaluate_cli
from musickv_jax.cli import generate as generate_cli
from musickv_jax.cli import invert as invert_cli
from musickv_jax.errors import NonFiniteError
from musickv_jax.writers.sets import OutputSet, write_json, write_npy
from tests.test_cli import assert_one_line_error, cli

FAST = ["--num_inference_steps", "3", "--audio_end_in_s", "2"]


def everything_under(folder: Path) -> list[str]:
  """Every file and folder under `folder` (hidden ones too); [] when it does not exist."""
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def with_nan(array) -> np.ndarray:
  """`array` with one value NaN and one infinite: what a run that overflowed leaves."""
  array = np.array(array, np.float32)
  array.reshape(-1)[0] = np.nan
  array.reshape(-1)[-1] = np.inf
  return array


def test_generate_at_a_huge_guidance_writes_nothing_non_finite(tiny, tmp_path, capsys):
  """--guidance_scale=1e30 (the issue's case: an all-NaN WAV written with exit 0): the run either
  writes finite audio and latents, or refuses in one line naming the stage and writes nothing."""
  out = tmp_path / "out"
  status, _, err = cli(capsys, generate_cli, "--model", tiny.path, "--prompts", "a", "b", "--guidance_scale=1e30",
                       "--num_inference_steps", "8", "--audio_end_in_s", "2", "--output_path", out,
                       "--save_latents", out / "latents.npy")
  if status == 0:
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    for wav in wavs:
      assert np.all(np.isfinite(sf.read(wav, always_2d=True)[0])), wav
    assert np.all(np.isfinite(np.load(out / "latents.npy")))
  else:
    assert_one_line_error(status, err, "non-finite")
    assert any(stage in err for stage in ("sampling produced", "decoding produced")), err
    assert everything_under(out) == []
  assert not list(out.glob(".*partial*"))


def test_latents_that_ran_away_in_sampling_are_refused_naming_sampling(tiny, tmp_path, capsys, monkeypatch):
  from musickv_jax.pipeline import generation

  real = generation.run_plan
  monkeypatch.setattr(generation, "run_plan", lambda *a, **k: (with_nan(real(*a, **k)[0]), None))
  out = tmp_path / "out"
  status, _, err = cli(capsys, generate_cli, "--model", tiny.path, "--prompts", "a", *FAST, "--output_path", out,
                       "--save_latents", out / "latents.npy")
  assert_one_line_error(status, err, "error: sampling produced non-finite latents (2 of ")
  assert "values are NaN or infinite); nothing was written; a lower --guidance_scale keeps the latents in range" \
      in err
  assert everything_under(out) == []


def test_audio_that_ran_away_in_decoding_is_refused_naming_decoding(tiny, tmp_path, capsys, monkeypatch):
  """Through musickv-edit (jobs.prepare, jobs.run, EditJob.result): the decoder's output is NaN."""
  from musickv_jax.pipeline import common

  real = common.decode
  monkeypatch.setattr(common, "decode", lambda *a, **k: with_nan(real(*a, **k)))
  out = tmp_path / "out"
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", *FAST, "--vital_layers=1",
                       "--output_path", out, "--save_latents", out / "latents.npy")
  assert_one_line_error(status, err, "error: decoding produced non-finite audio (2 of ")
  assert everything_under(out) == []


def test_an_inversion_that_ran_away_is_refused_naming_inversion(tiny, tmp_path, capsys, monkeypatch):
  from musickv_jax.pipeline import recording

  real = recording.invert_latents
  monkeypatch.setattr(recording, "invert_latents", lambda *a, **k: (with_nan(real(*a, **k)[0]), None))
  sf.write(tmp_path / "a.wav", 0.1 * np.sin(np.arange(64)[:, None] * [0.3, 0.5]).astype(np.float32), 16)
  out = tmp_path / "inverted"
  status, _, err = cli(capsys, invert_cli, "--model", tiny.path, "--prompts", "a", "--input_audio",
                       tmp_path / "a.wav", "--num_inference_steps", "3", "--output_path", out)
  assert_one_line_error(status, err, "error: inversion produced non-finite inverted latents (2 of ")
  assert everything_under(out) == []


def test_metrics_that_are_not_finite_are_refused_naming_metrics(tmp_path, capsys, monkeypatch):
  from musickv_jax.metrics import scoring  # where musickv-evaluate and musickv-compare score

  real = scoring.compare_jit
  monkeypatch.setattr(scoring, "compare_jit", lambda *a: {**real(*a), "chroma_cosine": np.float32(np.nan)})
  t = np.arange(44100) / 44100
  for name, f in (("source.wav", 220), ("edit.wav", 330)):
    sf.write(tmp_path / name, 0.3 * np.sin(2 * np.pi * f * t), 44100)
  out = tmp_path / "eval"
  status, _, err = cli(capsys, evaluate_cli, "--source", tmp_path / "source.wav", "--edits", tmp_path / "edit.wav",
                       "--output_path", out)
  assert_one_line_error(status, err, f"error: metrics produced non-finite scores of {tmp_path / 'edit.wav'} (1 of ")
  assert everything_under(out) == []


# ----------------------------------------------------------------------------- the writers, the last line


@pytest.mark.fast
@pytest.mark.parametrize("write", [
    lambda outputs: write_npy(outputs.path("latents.npy"), with_nan(np.ones((1, 4, 8)))),
    lambda outputs: write_json(outputs.path("metrics.json"), {"edits": [{"metrics": {"a": 1.0, "b": float("inf")}}]}),
    lambda outputs: save_wav(outputs.path("edit_1.wav"), with_nan(np.zeros((2, 16))), 16),
], ids=["npy", "json", "wav"])
def test_a_writer_refuses_what_no_stage_checked_and_leaves_nothing(tmp_path, write):
  """What a stage forgot to check still cannot be written: the writer refuses it, naming the file,
  and the set's other files and temporaries are removed."""
  out = tmp_path / "out"
  with pytest.raises(NonFiniteError) as info, OutputSet(out) as outputs:
    outputs.path("first.txt").write_text("written before")
    write(outputs)
    outputs.commit()
  message = str(info.value)
  assert message.startswith("the run produced non-finite values in ") or message.startswith(
      "the run produced non-finite samples in "), message
  assert any(name in message for name in ("latents.npy", "metrics.json", "edit_1.wav")), message
  assert "partial" not in message and "\n" not in message
  assert everything_under(out) == []


@pytest.mark.fast
def test_count_non_finite_reads_arrays_numbers_and_records():
  record = {"a": [1.0, float("nan")], "path": Path("x"), "text": "nan", "none": None, "flag": True,
            "array": np.array([1.0, np.inf]), "ints": np.arange(3), "nested": {"b": np.float32(-np.inf)}}
  assert finite.count_non_finite(record) == (3, 8)
  assert finite.count_non_finite(np.array([{"x": float("inf")}], dtype=object)) == (1, 1)
  assert finite.count_non_finite(json.loads('{"a": 1e308}')) == (0, 1)
  with pytest.raises(NonFiniteError) as info:
    finite.require_finite(record, stage="sampling", what="latents", advice="lower {guidance_scale}",
                          mentions=("guidance_scale",))
  assert info.value.describe(lambda field: f"--{field}") == (
      "sampling produced non-finite latents (3 of 8 values are NaN or infinite); nothing was written; "
      "lower --guidance_scale")
