"""musickv-compare end to end on the tiny Stable Audio Open 1.0 model: every variant's WAV equals the
same method run alone through musickv-edit (the derived bound of two float32 batch sizes), the
plot exists with one point per variant, the page has a player per result, and bad --methods are
refused in one line before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musickv_jax.cli import compare as compare_cli
from musickv_jax.cli import edit as edit_cli
from musickv_jax.errors import SettingsError
from musickv_jax.jobs import compare
from tests import tolerances
from tests.test_cli import assert_one_line_error, cli

PROMPTS = ("piano solo", "acoustic guitar, country")
STEPS = "4"


def _tone(path, rate: int, seconds: float = 3.0) -> None:
  t = np.arange(int(seconds * rate)) / rate
  tone = 0.3 * np.sin(2 * np.pi * 3.0 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
  sf.write(path, np.stack([tone, 0.8 * tone], axis=1).astype(np.float32), rate, subtype="FLOAT")


@pytest.mark.fast
def test_methods_are_read_with_and_without_injection():
  variants = compare.methods_from_text("inversion, sdedit:0.5,flowedit")
  assert [v.label for v in variants] == ["inversion", "inversion-no-kv", "sdedit-0.5", "sdedit-0.5-no-kv",
                                         "flowedit", "flowedit-no-kv"]
  assert [v.label for v in compare.methods_from_text("sdedit", without_injection=False)] == ["sdedit"]
  for bad, message in (("invert", "unknown method 'invert'"), ("flowedit:0.5", "only sdedit takes a level"),
                       ("sdedit:2", "the level is a number from 0 to 1"), ("sdedit:x", "the level is a number"),
                       ("inversion,inversion", "is listed twice"), (" , ", "is empty")):
    with pytest.raises(SettingsError, match=message):
      compare.methods_from_text(bad)


def test_every_variant_equals_its_method_run_alone(tiny, tmp_path, capsys):
  model = tiny.model
  cfg = model.config
  _tone(tmp_path / "in.wav", cfg.sample_rate)
  common = ["--model", tiny.path, "--input_audio", tmp_path / "in.wav", "--prompts", *PROMPTS,
            "--num_inference_steps", STEPS, "--guidance_scale", "3"]
  status, out, err = cli(capsys, compare_cli, *common, "--methods", "inversion,flowedit,sdedit:0.5",
                         "--output_path", tmp_path / "compare")
  assert status == 0, err
  folder = tmp_path / "compare"
  record = json.loads((folder / "compare.json").read_text())
  labels = [row["label"] for row in record["rows"]]
  assert labels == ["inversion", "inversion-no-kv", "flowedit", "flowedit-no-kv", "sdedit-0.5", "sdedit-0.5-no-kv"]
  assert all(row["error"] is None and row["metrics"] for row in record["rows"])
  # a method's two variants share one sampler call; the inversion ran once
  assert record["rows"][0]["sampled_with"] == ["inversion-no-kv"]
  assert record["rows"][0]["inversion_seconds"] > 0 or record["rows"][1]["inversion_seconds"] > 0
  assert min(record["rows"][0]["inversion_seconds"], record["rows"][1]["inversion_seconds"]) == 0
  assert record["rows"][0]["dit_calls"] == 4 + 4 * 2 * 2 and record["rows"][4]["dit_calls"] == 4 * 2 * 2
  # the plot: one point per variant; the page: a player per result and the input
  assert [point["label"] for point in record["plot"]["points"]] == labels
  assert (folder / "fidelity_editability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  page = (folder / "index.html").read_text()
  assert page.count("<audio") == len(labels) + 1 and "fidelity_editability.png" in page

  report = []
  for row in record["rows"]:
    method, level = row["method"], row["init_noise_level"]
    flags = ["--edit_method", method] + (["--init_noise_level", str(level)] if method == "sdedit" else [])
    if not row["injection"]:
      flags += ["--schedule", "constant", "--schedule_weight", "0"]
    alone_dir = tmp_path / f"alone-{row['label']}"
    status, _, err = cli(capsys, edit_cli, *common, *flags, "--output_path", alone_dir)
    assert status == 0, err
    alone, rate = sf.read(alone_dir / "edit_1.wav", dtype="float32")
    compared, _ = sf.read(folder / row["file"], dtype="float32")
    frames = cfg.frames_for_samples(alone.shape[0])
    bound = tolerances.decoded_run_to_run(cfg.dit, cfg.vae, frames, cfg.t5.max_length + 2, 3.0)
    bound *= 4 if method == "flowedit" else 1  # its steps add up the differences: the error grows with them
    error = float(np.abs(compared - alone).max()) / float(np.abs(alone).max())
    report.append(f"{row['label']}: compare vs musickv-edit alone, relative {error:.2e} (bound {bound:.2e})")
    assert error <= bound, report[-1]
    assert json.loads((alone_dir / "edit.json").read_text())["editing"]["method"] == method
  with capsys.disabled():
    print("\n" + "\n".join(report))


def test_bad_methods_are_refused_before_the_model_loads(tmp_path, capsys):
  _tone(tmp_path / "in.wav", 16000)
  status, _, err = cli(capsys, compare_cli, "--model", tmp_path / "no-model", "--input_audio", tmp_path / "in.wav",
                       "--prompts", *PROMPTS, "--methods", "inversion,magic", "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "--methods: unknown method 'magic'")
  status, _, err = cli(capsys, compare_cli, "--model", tmp_path / "no-model", "--prompts", *PROMPTS,
                       "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "--input_audio is required", expected_status=2)
  assert not (tmp_path / "out").exists()
