"""The bad-input sweep of issue 21 (the batch, schedule-optimisation, conversion and evaluation
commands, tried as a careful user would), each case with a test that failed before its fix."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import cli as cli_package
from musickv_jax.cli import convert as convert_cli
from musickv_jax.cli import edit_batch
from musickv_jax.cli import evaluate as evaluate_cli
from musickv_jax.cli import optimize_schedule as optimize_cli
from musickv_jax.cli.runner import Command, Flags
from musickv_jax.jobs.manifest import read_manifest
from musickv_jax.research import optimization
from tests.test_cli import assert_one_line_error, cli

FAST = ["--num_inference_steps", "2", "--audio_end_in_s", "2", "--vital_layers=1"]


def write_manifest(path: Path, jobs: list) -> Path:
  path.write_text("".join((json.dumps(j) if isinstance(j, dict) else j) + "\n" for j in jobs))
  return path


def snapshot(folder: Path) -> dict[str, bytes]:
  """Every file under `folder` (hidden ones too), by relative path, with its bytes."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def batch(capsys, tiny, manifest, out, *args):
  return cli(capsys, edit_batch, "--model", tiny.path, "--manifest", manifest, "--output_path", out, *FAST, *args)


# ----------------------------------------------------------------------------- 1: --resume compares what was asked


def test_resume_refuses_jobs_the_manifest_now_asks_differently(tiny, tmp_path, capsys):
  """A folder written for other prompts, another seed or another recording is not the job the
  manifest now asks for: --resume names the jobs and the fields and changes nothing;
  --recompute_changed recomputes just those, replacing each folder once its new result is complete."""
  sf.write(tmp_path / "a.wav", np.full((40, 2), 0.1, np.float32), 16)
  first = write_manifest(tmp_path / "first.jsonl", [
      {"id": "song-1", "prompts": ["Piano solo", "Acoustic guitar"]},
      {"id": "same", "prompts": ["violin", "cello"], "seed": 3},
      {"id": "seeded", "prompts": ["violin", "cello"]},
      {"id": "recording", "prompts": ["a tone", "a piano"], "input_audio": "a.wav", "audio_end_in_s": None},
  ])
  out = tmp_path / "out"
  status, _, err = batch(capsys, tiny, first, out)
  assert status == 0, err
  written = snapshot(out)

  # the same manifest and flags: everything is done, nothing recomputed
  status, stdout, err = batch(capsys, tiny, first, out, "--resume")
  assert status == 0, err
  assert "4 job(s) for this process (4 already done)" in stdout
  before = snapshot(out)
  assert {k: v for k, v in before.items() if "/" in k} == {k: v for k, v in written.items() if "/" in k}

  second = write_manifest(tmp_path / "second.jsonl", [
      {"id": "song-1", "prompts": ["Rock drums", "Jazz brushes"]},
      {"id": "same", "prompts": ["violin", "cello"], "seed": 3},
      {"id": "seeded", "prompts": ["violin", "cello"]},
      {"id": "recording", "prompts": ["a tone", "a piano"], "input_audio": "a.wav", "audio_end_in_s": None},
  ])
  sf.write(tmp_path / "a.wav", np.full((40, 2), 0.2, np.float32), 16)  # same name, other content
  status, stdout, err = batch(capsys, tiny, second, out, "--resume", "--seed", "5")
  lines = err.strip().splitlines()
  assert status == 1, err
  assert lines[-1].startswith("error: 3 finished job(s) in ") and "--recompute_changed" in lines[-1], err
  assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
  by_job = {line.split()[1]: line for line in lines[:-1]}
  assert set(by_job) == {"song-1", "seeded", "recording"}, err
  assert "prompts (['Piano solo', 'Acoustic guitar'] -> ['Rock drums', 'Jazz brushes'])" in by_job["song-1"]
  assert "seed (0 -> 5)" in by_job["seeded"] and "prompts" not in by_job["seeded"]
  assert "input_audio (the recording's content)" in by_job["recording"] and "seed (0 -> 5)" in by_job["recording"]
  assert "loading" not in stdout  # refused before the model was read
  assert snapshot(out) == before  # nothing written, nothing removed

  status, stdout, err = batch(capsys, tiny, second, out, "--resume", "--seed", "5", "--recompute_changed")
  assert status == 0, err
  assert "recomputing 3 job(s) whose settings changed" in stdout
  after = snapshot(out)
  assert after["same/latents.npy"] == before["same/latents.npy"]  # unchanged: kept as it was
  assert after["song-1/latents.npy"] != before["song-1/latents.npy"]
  record = json.loads((out / "song-1" / "edit.json").read_text())
  assert record["settings"]["prompts"] == ["Rock drums", "Jazz brushes"]
  assert record["request"]["prompts"] == ["Rock drums", "Jazz brushes"]
  # and now they match
  status, stdout, err = batch(capsys, tiny, second, out, "--resume", "--seed", "5")
  assert status == 0 and "(4 already done)" in stdout, err


def test_resume_cannot_verify_a_folder_without_a_record_of_its_request(tiny, tmp_path, capsys):
  manifest = write_manifest(tmp_path / "jobs.jsonl", [{"id": "old", "prompts": ["violin", "cello"]}])
  out = tmp_path / "out"
  status, _, err = batch(capsys, tiny, manifest, out)
  assert status == 0, err
  record = json.loads((out / "old" / "edit.json").read_text())
  record.pop("request", None)  # as written before the record had one
  (out / "old" / "edit.json").write_text(json.dumps(record))
  before = snapshot(out)
  status, _, err = batch(capsys, tiny, manifest, out, "--resume")
  lines = err.strip().splitlines()
  assert status == 1, err
  assert lines[0].startswith("job old (manifest line 1): cannot verify"), err
  assert lines[-1].startswith("error: ") and "--recompute_changed" in lines[-1]
  assert snapshot(out) == before


def test_every_flag_of_the_batch_is_compared_or_named_as_not_changing_the_result():
  """A flag added later must be put on one side: what a job's result depends on (compared by
  --resume), or how the run goes (never compared)."""
  fv = Flags()
  edit_batch.define(fv)
  assert set(fv) == set(edit_batch.REQUEST_FLAGS) | set(edit_batch.RUN_FLAGS)
  assert not set(edit_batch.REQUEST_FLAGS) & set(edit_batch.RUN_FLAGS)


# ----------------------------------------------------------------------------- 2: an empty manifest


@pytest.mark.parametrize("content", ["", "\n\n", "# just a comment\n"])
def test_an_empty_manifest_is_refused(tiny, tmp_path, capsys, content):
  (tmp_path / "jobs.jsonl").write_text(content)
  status, _, err = batch(capsys, tiny, tmp_path / "jobs.jsonl", tmp_path / "out")
  assert_one_line_error(status, err, f"--manifest {tmp_path / 'jobs.jsonl'} holds no jobs", expected_status=2)
  assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 3: numbers that are not finite


def _commands() -> list[Command]:
  found = []
  for info in pkgutil.iter_modules(cli_package.__path__):
    command = getattr(importlib.import_module(f"musickv_jax.cli.{info.name}"), "COMMAND", None)
    if isinstance(command, Command):
      found.append(command)
  return found


def _numeric_flags() -> list[tuple[Command, str]]:
  """Every flag of every command that takes a number (float flags; lists of numbers)."""
  cases = []
  for command in _commands():
    fv = Flags()
    command.define(fv)
    for name in fv:
      flag = fv[name]
      if type(flag.parser).__name__ == "FloatParser" or name in ("ramp", "window"):
        cases.append((command, name))
  return cases


NUMERIC = _numeric_flags()


def test_the_numeric_flags_are_found():
  names = {(c.name, f) for c, f in NUMERIC}
  assert ("musickv-optimize-schedule", "fidelity_weight") in names and ("musickv-edit", "ramp") in names
  assert len(names) > 20


@pytest.mark.parametrize("command,flag", NUMERIC, ids=[f"{c.name}--{f}" for c, f in NUMERIC])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_numeric_flag_must_be_finite(tmp_path, capsys, monkeypatch, command, flag, value):
  from musickv_jax.cli.runner import run

  monkeypatch.chdir(tmp_path)
  given = f"{value},1" if flag in ("ramp", "window") else value
  status = run(command, [f"--{flag}={given}"])
  _, err = capsys.readouterr()
  assert_one_line_error(status, err, f"error: --{flag} must be a finite number, got {given}", expected_status=2)
  assert list(tmp_path.iterdir()) == []


def test_the_manifest_numbers_must_be_finite(tmp_path):
  manifest = tmp_path / "m.jsonl"
  manifest.write_text('{"id": "a", "prompts": ["x", "y"], "guidance_scale": NaN}\n'
                      '{"id": "b", "prompts": ["x", "y"], "input_start_s": Infinity}\n'
                      '{"id": "c", "prompts": ["x", "y"], "window_s": -Infinity}\n')
  jobs, problems = read_manifest(manifest)
  assert jobs == []
  messages = [str(p) for p in problems]
  assert "\"guidance_scale\" must be a finite number, got nan" in messages[0]
  assert "\"input_start_s\" must be a finite number, got inf" in messages[1]
  assert "\"window_s\" must be a finite number or null, got -inf" in messages[2]


def test_a_loss_that_turns_non_finite_stops_the_optimisation(tiny44k, tmp_path, capsys, monkeypatch):
  """The third step's loss is NaN (as an overflow would make it): the run stops there with one
  line, and the outputs and the checkpoint hold the last finite state (after two steps)."""
  real_init = optimization.ScheduleOptimizer.__init__

  def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    step = self.step

    def failing(state, model_params):
      new, loss, terms = step(state, model_params)
      if int(new.iteration) >= 3:
        new = new.replace(logits=new.logits * np.nan)
        loss = loss * np.nan
      return new, loss, terms

    self.step = failing

  monkeypatch.setattr(optimization.ScheduleOptimizer, "__init__", init)
  args = ["--model", tiny44k.path, "--prompts", "piano solo", "acoustic guitar", "--vital_layers=20,3",
          "--num_inference_steps", "4", "--time_bins", "3", "--audio_end_in_s", "0.5", "--learning_rate", "0.003"]
  out = tmp_path / "learned"
  status, _, err = cli(capsys, optimize_cli, *args, "--iterations", "5", "--output_path", out)
  assert_one_line_error(status, err, "error: the loss became nan at iteration 3")
  assert "kept the last finite schedule (iteration 2)" in err
  history = json.loads((out / "history.json").read_text())
  assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["loss"])
  schedule = np.load(out / "schedule.npy")
  assert schedule.shape == (4, 2) and np.all(np.isfinite(schedule))
  saved = json.loads((out / "checkpoint" / "history.json").read_text())
  assert saved == history
  monkeypatch.undo()
  # the checkpoint is the second step's: resuming from it gives the straight run's schedule
  status, _, err = cli(capsys, optimize_cli, *args, "--iterations", "2", "--output_path", tmp_path / "straight")
  assert status == 0, err
  np.testing.assert_array_equal(np.load(tmp_path / "straight" / "schedule.npy"), schedule)


# ----------------------------------------------------------------------------- 4: a local path or a hub id


def test_a_missing_local_path_with_missing_folders_says_so_first(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing can be downloaded here anyway; fail fast
  status, _, err = cli(capsys, convert_cli, "--source", "ckpts/stable-audio", "--output", "out")
  assert_one_line_error(status, err, "error: --source ckpts/stable-audio: no such local file or directory, and as a "
                                     "Hugging Face hub id it could not be used: cannot download")
  assert "--hf_token" in err
  assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 5: a directory where a file is needed


def test_a_directory_given_as_the_manifest(tiny, tmp_path, capsys):
  (tmp_path / "jobs").mkdir()
  status, _, err = batch(capsys, tiny, tmp_path / "jobs", tmp_path / "out")
  assert_one_line_error(status, err, f"--manifest {tmp_path / 'jobs'} is a directory; give a manifest file",
                        expected_status=2)
  assert not (tmp_path / "out").exists()


def test_a_directory_given_as_an_edit(tmp_path, capsys):
  sf.write(tmp_path / "src.wav", 0.1 * np.ones((4410, 2), np.float32), 44100)
  (tmp_path / "edits").mkdir()
  status, _, err = cli(capsys, evaluate_cli, "--source", tmp_path / "src.wav", "--edits", tmp_path / "edits",
                       "--output_path", tmp_path / "o")
  assert_one_line_error(status, err, f"{tmp_path / 'edits'} is a directory; give an audio file")
  assert not (tmp_path / "o").exists()


def test_a_directory_given_as_a_manifest_recording(tmp_path):
  (tmp_path / "song.wav").mkdir()
  manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "prompts": ["x", "y"], "input_audio": "song.wav"}])
  _, problems = read_manifest(manifest)
  assert "\"input_audio\" song.wav is a directory; give a file" in str(problems[0])


# ----------------------------------------------------------------------------- 6: clips of different lengths


def test_evaluate_says_what_it_compares_when_lengths_differ(tmp_path, capsys):
  rate = 44100
  t = np.arange(5 * rate) / rate
  tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  sf.write(tmp_path / "source.wav", tone[:2 * rate], rate)
  sf.write(tmp_path / "long.wav", tone, rate)
  sf.write(tmp_path / "same.wav", tone[:2 * rate], rate)
  status, _, err = cli(capsys, evaluate_cli, "--source", tmp_path / "source.wav", "--edits", tmp_path / "long.wav",
                         tmp_path / "same.wav", "--output_path", tmp_path / "eval")
  assert status == 0, err
  notes = [line for line in err.splitlines() if line.startswith("info:")]
  expected = f"info: {tmp_path / 'long.wav'} is 5.00 s long and the source 2.00 s; comparing their common first 2.00 s"
  assert notes == [expected], err
  result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert [e["compared_s"] for e in result["edits"]] == [2.0, 2.0]
