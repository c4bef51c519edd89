"""The library/command-line boundary and the defects of the bad-input sweep (issue 8), each with
a test that failed before its fix. Commands run in-process (musickv_jax.cli.runner.run) unless the
defect is about a process (Ctrl-C, SIGKILL)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import files
from musickv_jax.audio import load_audio
from musickv_jax.checkpoint import load_converted
from musickv_jax.cli import convert as convert_cli
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import generate as generate_cli
from musickv_jax.cli import invert as invert_cli
from musickv_jax.cli.runner import run
from musickv_jax.errors import CheckpointError, SettingsError
from musickv_jax.pipeline import EditSettings, GenerationSettings, InversionSettings
from tests.test_files import dead_pid, stale_name

REPO = Path(__file__).resolve().parent.parent
FAST = ["--num_inference_steps", "2", "--audio_end_in_s", "2"]


def cli(capsys, command, *args):
  """Runs a command in-process: (exit status, stdout, stderr)."""
  status = run(command.COMMAND, [str(a) for a in args])
  out, err = capsys.readouterr()
  return status, out, err


def assert_one_line_error(status, err, message, expected_status=1):
  assert status == expected_status, err
  assert message in err, err
  assert err.strip().count("\n") == 0 and "Traceback" not in err, err
  assert err.startswith("error: ")


# ----------------------------------------------------------------------------- field names vs flags


@pytest.mark.fast
def test_library_errors_name_fields(tiny, tmp_path):
  cfg = tiny.model.config
  with pytest.raises(SettingsError) as info:
    GenerationSettings(prompts=("a",), num_inference_steps=0).validate(cfg)
  assert info.value.field == "num_inference_steps"
  assert str(info.value) == "num_inference_steps must be an integer of at least 1, got 0"
  with pytest.raises(SettingsError) as info:
    EditSettings(GenerationSettings(prompts=("a", "b"), num_inference_steps=4), vital_layers=(9,)).validate(cfg)
  assert info.value.field == "vital_layers" and str(info.value).startswith("vital_layers: layer 9 is out of range")
  with pytest.raises(SettingsError) as info:
    InversionSettings("a", variant="backwards").validate(cfg)
  assert info.value.field == "variant" and "--" not in str(info.value)
  sf.write(tmp_path / "a.wav", np.full((100, 2), 0.1, np.float32), 16)
  with pytest.raises(SettingsError) as info:
    load_audio(tmp_path / "a.wav", sample_rate=16, max_seconds=10, start_s=99)
  assert info.value.field == "start_s" and "start_s 99 is outside the file" in str(info.value)


def test_command_lines_print_flag_names(tiny, tmp_path, capsys):
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--vital_layers=1",
                       "--num_inference_steps", "0", "--output_path", tmp_path / "o")
  assert_one_line_error(status, err, "error: --num_inference_steps must be an integer of at least 1, got 0")
  sf.write(tmp_path / "a.wav", np.full((100, 2), 0.1, np.float32), 16)
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--vital_layers=1",
                       "--input_audio", tmp_path / "a.wav", "--input_start_s", "99", *FAST, "--output_path",
                       tmp_path / "o")
  assert_one_line_error(status, err, "--input_start_s 99 is outside the file")
  status, _, err = cli(capsys, invert_cli, "--model", tiny.path, "--prompts", "a", "--input_audio",
                       tmp_path / "a.wav", "--inversion", "backwards", "--output_path", tmp_path / "o")
  assert_one_line_error(status, err, "error: --inversion must be one of ('reference', 'consistent')")
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--vital_layers=1",
                       "--schedule=constant", "--schedule_weight=2", *FAST, "--output_path", tmp_path / "o")
  assert_one_line_error(status, err, "--schedule values must lie in [0, 1] (found 2 .. 2); set "
                                     "--allow_unbounded_schedule to use them anyway")
  assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- sweep defect 1: --overwrite


def test_overwrite_never_deletes_user_files_or_the_source(tiny, tmp_path, capsys):
  mine = tmp_path / "my-folder"
  mine.mkdir()
  (mine / "thesis.txt").write_text("years of work")
  status, _, err = cli(capsys, convert_cli, "--source", tiny.ref.diffusers_dir, "--output", mine, "--overwrite")
  assert_one_line_error(status, err, "holds files that are not a converted checkpoint")
  assert (mine / "thesis.txt").read_text() == "years of work"

  source = tmp_path / "src"
  shutil.copytree(tiny.ref.diffusers_dir, source)
  before = sorted(str(p.relative_to(source)) for p in source.rglob("*"))
  for output in (source, source / "converted", tmp_path):
    status, _, err = cli(capsys, convert_cli, "--source", source, "--output", output, "--overwrite")
    assert status == 1, (output, err)
    assert "overlap the input" in err or "not a converted checkpoint" in err, err
  assert sorted(str(p.relative_to(source)) for p in source.rglob("*")) == before

  empty = tmp_path / "empty"
  empty.mkdir()
  status, _, err = cli(capsys, convert_cli, "--source", source, "--output", empty, "--overwrite")
  assert status == 0, err
  status, _, err = cli(capsys, convert_cli, "--source", source, "--output", empty, "--overwrite")  # a converted one
  assert status == 0, err
  load_converted(empty)


# ----------------------------------------------------------------------------- sweep defect 2: damaged checkpoints


@pytest.mark.parametrize("damage", ["truncated data", "marker not json", "config not json", "missing config"])
def test_damaged_checkpoint_is_one_line(tiny, tmp_path, capsys, damage):
  broken = tmp_path / "ckpt"
  shutil.copytree(tiny.path, broken)
  if damage == "truncated data":  # an interrupted copy: every data file cut to half
    for f in (broken / "params").rglob("*"):
      if f.is_file() and f.stat().st_size > 64 and not f.name.endswith((".json", "_METADATA", "manifest.ocdbt")):
        f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
  elif damage == "marker not json":
    (broken / "musickv_checkpoint.json").write_text("{\"format\": ")
  elif damage == "config not json":
    (broken / "config.json").write_text("not json")
  else:
    (broken / "config.json").unlink()
  with pytest.raises(CheckpointError, match="damaged or incomplete .* convert it again"):
    load_converted(broken)
  status, _, err = cli(capsys, generate_cli, "--model", broken, "--prompts", "a", *FAST, "--output_path",
                       tmp_path / "o")
  assert_one_line_error(status, err, f"{broken}: ")
  assert "convert it again" in err


# ----------------------------------------------------------------------------- sweep defects 3 and 4: conversion


def test_interrupted_conversion_leaves_no_staging(tiny, tmp_path, monkeypatch, capsys):
  import musickv_jax.checkpoint as checkpoint

  real = checkpoint.orbax_checkpointer

  class Interrupting:
    def __init__(self, inner):
      self.inner = inner

    def save(self, path, args):
      self.inner.save(path, args=args)  # the data is written, then Ctrl-C arrives
      raise KeyboardInterrupt

  def interrupting():
    ocp, inner = real()
    return ocp, Interrupting(inner)

  monkeypatch.setattr(checkpoint, "orbax_checkpointer", interrupting)
  status, _, err = cli(capsys, convert_cli, "--source", tiny.ref.diffusers_dir, "--output", tmp_path / "out")
  assert status == 130 and err.strip() == "interrupted; nothing was written", err
  assert list(tmp_path.iterdir()) == []


def test_stale_staging_of_a_killed_conversion_is_removed(tiny, tmp_path, capsys):
  stale = tmp_path / stale_name("out", dead_pid())
  (stale / "params").mkdir(parents=True)
  (stale / "params" / "big").write_bytes(b"x" * 1000)
  status, out, err = cli(capsys, convert_cli, "--source", tiny.ref.diffusers_dir, "--output", tmp_path / "out")
  assert status == 0, err
  assert f"removed {stale}" in out
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_conversion_killed_by_sigkill_is_cleaned_by_the_next_run(tiny, tmp_path):
  """A real process, killed while its staging folder exists; the next conversion removes it."""
  command = [sys.executable, "-m", "convert", "--source", str(tiny.ref.diffusers_dir), "--output", str(tmp_path / "out")]
  staged = lambda: any(".partial-" in p.name for p in tmp_path.iterdir())  # noqa: E731
  for _ in range(3):  # on a loaded machine the poll can miss the short window; a finished run is tried again
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not staged() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.005)
    proc.kill()
    proc.wait()
    if staged():
      break
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
  else:
    pytest.fail("the conversion finished before it could be killed, three times; nothing was tested")
  again = subprocess.run(command + ["--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr
  assert "left by an interrupted conversion" in again.stdout
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_problems_are_reported_before_reading_the_source(tiny, tmp_path, capsys):
  status, out, err = cli(capsys, convert_cli, "--source", tiny.ref.diffusers_dir, "--output", "/proc/musickv/out")
  assert_one_line_error(status, err, "--output /proc/musickv/out: cannot write there")
  assert "reading" not in out
  (tmp_path / "exists").mkdir()
  status, out, err = cli(capsys, convert_cli, "--source", tmp_path / "not-a-checkpoint", "--output",
                         tmp_path / "exists")
  assert_one_line_error(status, err, "already exists; choose another output directory or set --overwrite")
  assert "reading" not in out


# ----------------------------------------------------------------------------- sweep defect 5: Ctrl-C


def _edit_command(model, out):
  return [sys.executable, str(REPO / "scripts" / "edit.py"), "--model", str(model), "--prompts", "a", "b",
          "--vital_layers=1", "--num_inference_steps", "400", "--audio_end_in_s", "2", "--output_path", str(out)]


def _wait_for(text: str, chunks: list, proc) -> None:
  deadline = time.time() + 120
  while text not in "".join(chunks) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  assert proc.poll() is None, f"the edit ended before it could be interrupted (waiting for {text!r})"


@pytest.mark.parametrize("moment", ["while importing", "while loading", "while sampling"])
def test_ctrl_c_prints_one_line_and_leaves_nothing(tiny, tmp_path, moment):
  out = tmp_path / "out"
  env = {**os.environ, "MUSICKV_PROGRESS": "1", "MUSICKV_COMPILATION_CACHE": "0"}
  proc = subprocess.Popen(_edit_command(tiny.path, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, text=True)
  chunks, said = [], []
  reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
  reader.start()
  listener = threading.Thread(target=lambda: said.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
  listener.start()
  if moment == "while importing":
    # the interpreter is up (a tenth of that) and the command's module is importing the library (well over a second)
    time.sleep(1.0)
  elif moment == "while loading":
    _wait_for("loading ", said, proc)  # the command says when it starts reading the checkpoint
  else:
    _wait_for("step/s", chunks, proc)  # the progress bar shows steps once sampling runs
  proc.send_signal(signal.SIGINT)
  proc.wait(timeout=120)
  reader.join(timeout=10)
  err = "".join(chunks)
  assert proc.returncode == 130, err
  assert "Traceback" not in err, err
  assert err.replace("\r", "\n").strip().splitlines()[-1] == "interrupted; nothing was written"
  assert not out.exists() or not any(out.iterdir())


def test_sigterm_also_cleans_up(tiny, tmp_path):
  out = tmp_path / "out"
  proc = subprocess.Popen(_edit_command(tiny.path, out), cwd=REPO, stderr=subprocess.PIPE, text=True,
                          stdout=subprocess.DEVNULL)
  time.sleep(4.0)
  proc.terminate()
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143 and "terminated; nothing was written" in err and "Traceback" not in err, err
  assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- sweep defect 6: killed while writing


def test_a_run_clears_temporaries_left_by_a_killed_run(tiny, tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  stale = out / stale_name("source.wav", dead_pid())
  stale.write_bytes(b"half")
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--vital_layers=1", *FAST,
                       "--output_path", out)
  assert status == 0, err
  assert not stale.exists() and f"removed {stale}" in err
  assert not files.stale_temporaries(out) and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_failure_after_the_first_output_is_staged(tiny, tmp_path, capsys, monkeypatch):
  """The spectrogram fails after the WAVs were staged: nothing appears, the earlier run's files stay."""
  from musickv_jax.metrics import spectrogram

  out = tmp_path / "out"
  out.mkdir()
  (out / "source.wav").write_bytes(b"an earlier run")

  def disk_full(path, *args, **kwargs):
    raise OSError(28, "No space left on device", str(path))

  monkeypatch.setattr(spectrogram, "save_comparison", disk_full)
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--vital_layers=1", *FAST,
                       "--output_path", out)
  assert_one_line_error(status, err, "error: No space left on device")
  assert sorted(p.name for p in out.iterdir()) == ["source.wav"]
  assert (out / "source.wav").read_bytes() == b"an earlier run"


# ----------------------------------------------------------------------------- sweep defect 7: path typos


def test_a_mistyped_local_path_is_not_taken_for_a_hub_id(tiny, tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "ckpt").mkdir()
  status, _, err = cli(capsys, generate_cli, "--model", "ckpt/sao-typo", "--prompts", "a", *FAST)
  assert_one_line_error(status, err, "error: --model ckpt/sao-typo: no such file or directory")
  status, _, err = cli(capsys, convert_cli, "--source", "ckpt/stable-audio", "--output", "out")
  assert_one_line_error(status, err, "error: --source ckpt/stable-audio: no such file or directory")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing can be downloaded here anyway; fail fast
  status, _, err = cli(capsys, generate_cli, "--model", "ckpts/sao", "--prompts", "a", *FAST)
  assert_one_line_error(status, err, "error: --model ckpts/sao: no such local file or directory, and as a Hugging "
                                     "Face hub id it could not be used")
  assert "--hf_token" in err


# ----------------------------------------------------------------------------- sweep defects 8, 9, 10


@pytest.mark.parametrize("args,message", [
    (["--seed=99999999999999999999"], "error: --seed must be an integer from 0 to 4294967295, got 99999999999999999999"),
    (["--seed=-1"], "error: --seed must be an integer from 0 to 4294967295, got -1"),
    (["--audio_end_in_s", "0.00001"], "is shorter than one sample at 16 Hz; ask for a longer span"),
    (["--prompts", "fine", "--weird"], "'--weird' after --prompts is not a flag of this command; a value that starts "
                                       "with '--' must be given as --prompts=\"--weird\""),
])
def test_generate_refuses_in_one_line(tiny, tmp_path, capsys, args, message):
  base = ["--model", tiny.path, "--num_inference_steps", "2", "--output_path", tmp_path / "o"]
  if "--prompts" not in args:
    base += ["--prompts", "a"]
  status, _, err = cli(capsys, generate_cli, *base, *args)
  assert status in (1, 2) and message in err and err.strip().count("\n") == 0, err
  assert not (tmp_path / "o").exists()


def test_a_prompt_starting_with_dashes_works_with_equals(tiny, tmp_path, capsys):
  status, _, err = cli(capsys, generate_cli, "--model", tiny.path, "--prompts=--weird but fine", *FAST,
                       "--output_path", tmp_path / "o")
  assert status == 0, err
  assert json.loads(next((tmp_path / "o").glob("*.json")).read_text())["prompt"] == "--weird but fine"


def test_converter_bad_flag_value_is_one_line(tiny, tmp_path, capsys):
  status, _, err = cli(capsys, convert_cli, "--source", tiny.ref.diffusers_dir, "--output", tmp_path / "o",
                       "--dtype", "float16")
  assert_one_line_error(status, err, "error: flag --dtype=float16", expected_status=2)
  status, _, err = cli(capsys, convert_cli, "--source", tiny.ref.diffusers_dir)
  assert_one_line_error(status, err, "error: --source and --output are required", expected_status=2)


def test_truncation_warning_shows_only_the_cut_part(tiny, caplog):
  from musickv_jax.text import tokenize

  long_prompt = "piano solo " + "happy " * 2000 + "ENDWORD"
  with caplog.at_level(logging.WARNING, logger="musickv_jax.text"):
    ids, mask = tokenize(tiny.model.tokenizer, [long_prompt], 12)
  assert ids.shape == (1, 12)
  (record,) = [r for r in caplog.records if r.name == "musickv_jax.text"]
  text = record.getMessage()
  assert text.startswith("prompt 1 is ") and "so this end was cut: " in text and len(text) < 200, text
  assert "piano solo" not in text


def test_preset_by_path(tiny, tmp_path, capsys):
  preset = tmp_path / "probe" / "preset.json"
  preset.parent.mkdir()
  preset.write_text(json.dumps({"description": "from a probe", "vital_layers": [0], "skip_layers": [],
                                "guidance_scale": 3.0, "time_varying": False}))
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--preset", preset, *FAST,
                       "--output_path", tmp_path / "o")
  assert status == 0, err
  record = json.loads((tmp_path / "o" / "edit.json").read_text())
  assert record["editing"]["vital_layers"] == [0] and record["settings"]["guidance_scale"] == 3.0
  assert record["editing"]["schedule"] == "constant" and record["preset"] == str(preset)
  preset.write_text(json.dumps({"vital_layers": "20,3,4"}))
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--preset", preset, *FAST,
                       "--output_path", tmp_path / "o2")
  assert_one_line_error(status, err, "'vital_layers' must be a list of integers")
  status, _, err = cli(capsys, edit_cli, "--model", tiny.path, "--prompts", "a", "b", "--preset", "nope", *FAST,
                       "--output_path", tmp_path / "o2")
  assert_one_line_error(status, err, "error: --preset 'nope' not found; available: musickv, musickv-constant")


def test_an_inverted_latent_is_checked_against_its_sidecar(tiny, tmp_path, capsys):
  """edit --inverted_latent reads the sidecar that invert wrote beside the latent: a sidecar that
  does not belong to the latent, or is damaged, is refused in one line."""
  frames = 3
  latent = np.zeros((1, tiny.model.config.dit.io_channels, frames), np.float32)
  np.save(tmp_path / "inverted_latent.npy", latent)
  hop = tiny.model.config.vae.hop_length
  sidecar = tmp_path / "inverted_latent.json"
  base = ["--model", tiny.path, "--inverted_latent", tmp_path / "inverted_latent.npy", "--prompts", "a", "b",
          "--vital_layers=1", "--num_inference_steps", "2", "--output_path", tmp_path / "o"]
  sidecar.write_text(json.dumps({"n_samples": 10 * hop, "settings": {"prompt": "a", "num_inference_steps": 2}}))
  status, _, err = cli(capsys, edit_cli, *base)
  assert_one_line_error(status, err, f"its sidecar says {10 * hop} samples, which is not {frames} latent frames")
  sidecar.write_text("{broken")
  status, _, err = cli(capsys, edit_cli, *base)
  assert_one_line_error(status, err, "its sidecar")
  assert "is damaged" in err
  sidecar.write_text(json.dumps({"n_samples": frames * hop - 1, "settings": {"prompt": "other text",
                                                                             "num_inference_steps": 4}}))
  status, _, err = cli(capsys, edit_cli, *base)
  assert status == 0, err
  assert "inverted with 4 steps but is edited with 2" in err and "inverted with the description 'other text'" in err
  audio, _ = sf.read(tmp_path / "o" / "edit_1.wav", always_2d=True)
  assert audio.shape[0] == frames * hop - 1
