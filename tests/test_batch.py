"""Editing jobs at scale (musickv-edit-batch): manifest errors, every job equal to a standalone edit,
one compilation per bucket, 4 simulated devices equal to 1, a SIGKILLed run resumed, two processes
with jax.distributed, and the listening page's links."""

from __future__ import annotations

import html.parser
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import pipeline
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import edit_batch
from musickv_jax.cli.runner import run
from musickv_jax.jobs import batching
from musickv_jax.jobs.manifest import read_manifest
from musickv_jax.pipeline import kv_schedules
from musickv_jax.sampling import placement
from tests import tolerances
from tests.test_cli import cli

REPO = Path(__file__).resolve().parent.parent
COMMON = ["--num_inference_steps", "3", "--audio_end_in_s", "1.5", "--latent_length", "fit"]


def write_manifest(path: Path, jobs: list) -> Path:
  path.write_text("".join((json.dumps(j) if isinstance(j, dict) else j) + "\n" for j in jobs))
  return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  root = tmp_path_factory.mktemp("batch")
  t = np.arange(int(2.0 * 22050)) / 22050
  sf.write(root / "tone.wav", 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
  np.save(root / "half.npy", np.full((3, 1), 0.5, np.float32))
  t = np.arange(int(4.0 * 22050)) / 22050
  sf.write(root / "song.wav", 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2, 22050)
  jobs = [
      {"id": "piano", "prompts": ["piano solo", "acoustic guitar, country"], "seed": 1},
      {"id": "drums", "prompts": ["drums", "jazz trio", "rock band"], "seed": 2, "edit_all": True,
       "schedule": "constant", "vital_layers": [5, 9]},
      {"id": "violin", "prompts": ["violin", "cello"], "num_inference_steps": 2, "seed": 3},
      {"id": "ramp-file", "prompts": ["synth pad", "choir"], "schedule": "half.npy", "vital_layers": "20", "seed": 4},
      {"id": "recording", "prompts": ["a tone", "a piano"], "input_audio": "tone.wav"},
      # longer than its 1.5 s windows: a job of its own, over 3 windows
      {"id": "song", "prompts": ["a tone", "a choir"], "input_audio": "song.wav", "window_s": 1.5, "overlap_s": 0.5,
       "audio_end_in_s": None},
      {"id": "bad-layer", "prompts": ["x", "y"], "vital_layers": [99]},
  ]
  return root, write_manifest(root / "jobs.jsonl", jobs), jobs


# ----------------------------------------------------------------------------- the manifest


def test_manifest_problems_are_reported_per_line(tmp_path):
  (tmp_path / "here.wav").write_bytes(b"")
  manifest = write_manifest(tmp_path / "m.jsonl", [
      {"id": "ok", "prompts": ["a", "b"]},
      "{not json",
      {"prompts": ["a", "b"]},
      {"id": "ok", "prompts": ["c", "d"]},
      {"id": "x", "prompts": ["a", "b"], "colour": "red"},
      {"id": "y", "prompts": ["a", "b"], "input_audio": "missing.wav"},
      {"id": "z", "prompts": ["only one"]},
      {"id": "../escape", "prompts": ["a", "b"]},
      {"id": "s", "prompts": ["a", "b"], "seed": "7"},
      {"id": "fine", "prompts": ["a", "b"], "input_audio": "here.wav", "vital_layers": "20,3,4"},
  ])
  jobs, problems = read_manifest(manifest)
  assert [j.id for j in jobs] == ["ok", "fine"]
  assert jobs[1].overrides["vital_layers"] == ["20", "3", "4"]
  assert jobs[1].overrides["input_audio"] == str(tmp_path / "here.wav")  # relative to the manifest
  messages = {p.line: str(p) for p in problems}
  assert "line 2: not valid JSON" in messages[2]
  assert "\"id\" is missing" in messages[3]
  assert "duplicate id (first on line 1)" in messages[4]
  assert "unknown key(s) ['colour']" in messages[5]
  assert "\"input_audio\" missing.wav: file not found" in messages[6]
  assert "\"prompts\" must list the source description and at least one edit" in messages[7]
  assert "not a folder-safe name" in messages[8]
  assert "\"seed\" must be an integer" in messages[9]


# ----------------------------------------------------------------------------- a batch


@pytest.fixture(scope="module")
def batch_run(tiny44k, workspace):
  root, manifest, _ = workspace
  out = root / "out"
  before = batching.sample_on_mesh._cache_size()
  status = run(edit_batch.COMMAND, ["--model", str(tiny44k.path), "--manifest", str(manifest),
                                               "--output_path", str(out), "--rows_per_device", "4", *COMMON])
  compilations = batching.sample_on_mesh._cache_size() - before
  return out, status, compilations


def test_a_batch_runs_the_good_jobs_and_reports_the_bad(batch_run):
  out, status, _ = batch_run
  assert status == edit_batch.EXIT_SOME_FAILED
  summary = json.loads((out / "summary.json").read_text())
  by_id = {job["id"]: job for job in summary["jobs"]}
  assert {k: v["status"] for k, v in by_id.items()} == {"piano": "ok", "drums": "ok", "violin": "ok",
                                                        "ramp-file": "ok", "recording": "ok", "song": "ok",
                                                        "bad-layer": "failed"}
  assert "--vital_layers: layer 99 is out of range" in by_id["bad-layer"]["error"]
  assert summary["devices"] == 1 and all(job["seconds"] >= 0 for job in summary["jobs"])
  assert sorted(p.name for p in (out / "piano").iterdir()) == ["edit.json", "edit_1.wav", "index.html", "latents.npy",
                                                                "source.wav", "spectrograms.png"]
  assert sorted(p.name for p in (out / "recording").iterdir()) == [
      "edit.json", "edit_1.wav", "index.html", "input.wav", "latents.npy", "source_reconstruction.wav",
      "spectrograms.png"]
  assert not (out / "bad-layer").exists()
  assert not [p for p in out.iterdir() if p.name.startswith(".")]
  assert np.load(out / "drums" / "latents.npy").shape[0] == 3
  song, rate = sf.read(out / "song" / "edit_1.wav")
  assert song.shape[0] == 4 * rate  # the recording's length


def test_one_compilation_per_bucket(batch_run):
  """Buckets here: 3 steps at the generated length (piano, drums, ramp-file), 2 steps (violin), and
  the recording's own length. Prompts, seeds, schedules and vital layers are data."""
  _, _, compilations = batch_run
  assert compilations == 3


@pytest.mark.parametrize("job_id", ["piano", "drums", "violin", "ramp-file", "recording", "song"])
def test_each_job_equals_a_standalone_edit(tiny44k, workspace, batch_run, tmp_path, capsys, job_id):
  root, _, jobs = workspace
  out, _, _ = batch_run
  job = next(j for j in jobs if j["id"] == job_id)
  args = ["--model", tiny44k.path, *COMMON, "--output_path", tmp_path / "alone", "--save_latents",
          tmp_path / "alone.npy", "--prompts", *job["prompts"]]
  for key, value in job.items():
    if key in ("id", "prompts"):
      continue
    if value is None:  # audio_end_in_s: null, the model's default instead of COMMON's
      at = args.index(f"--{key}")
      del args[at:at + 2]
      continue
    if key in ("input_audio",) or (key == "schedule" and value.endswith(".npy")):
      value = root / value
    if isinstance(value, bool):
      args.append(f"--{key}" if value else f"--no{key}")
    elif isinstance(value, list):
      args.append(f"--{key}={','.join(map(str, value))}")
    else:
      args += [f"--{key}", value]
  status, _, err = cli(capsys, edit_cli, *args)
  assert status == 0, err
  alone, batched = np.load(tmp_path / "alone.npy"), np.load(out / job_id / "latents.npy")
  error = np.abs(alone - batched).max() / np.abs(alone).max()
  print(f"{job_id}: batch vs standalone edit {error:.1e}")
  cfg = tiny44k.model.config  # batches of other sizes round in other orders: the derived bound
  assert error <= tolerances.run_to_run(cfg.dit, alone.shape[-1], cfg.t5.max_length + 2, 7.0)
  a, _ = sf.read(tmp_path / "alone" / "edit_1.wav")
  b, _ = sf.read(out / job_id / "edit_1.wav")
  assert a.shape == b.shape


def test_jobs_packed_on_one_device_each_equal_their_standalone_edit(tiny44k):
  """Three jobs share one device's rows (in the manifest batch above every job sits at row 0):
  rows 0-1 the first, 2-4 the second (edit_all: two edits whose source is row 2 of the block),
  5-6 the third (its own vital layer and a bypassed layer), row 7 padding. Each job equals its
  standalone edit (pipeline.edit, the same settings) within the derived run-to-run bound: an edit
  that blended another job's source row, or a bypass on another job's rows, moves it by far more."""
  model, cfg = tiny44k.model, tiny44k.model.config

  def settings(prompts, seed, **kwargs):
    gen = pipeline.GenerationSettings(prompts=prompts, seed=seed, num_inference_steps=3, audio_end_in_s=1.5,
                                      latent_length="fit")
    return pipeline.EditSettings(gen, **kwargs)

  edits = {
      "first": settings(("piano solo", "acoustic guitar, country"), 1, vital_layers=(5, 9)),
      "second": settings(("drums", "jazz trio", "rock band"), 2, vital_layers=(5, 9), edit_all=True,
                         schedule=kv_schedules.constant(3, 2)),
      "third": settings(("violin", "cello"), 3, vital_layers=(20,), skip_layers=(3,)),
  }
  jobs = [batching.plan_job(model, job_id, s) for job_id, s in edits.items()]
  batches = batching.pack(jobs, rows_per_device=8, n_devices=1)
  assert len(batches) == 1 and [[job.id for job in device] for device in batches[0].devices] == [list(edits)]
  mesh = placement.data_mesh()
  batched = batching.run_batch(model, placement.replicate(model.params.dit, mesh), batches[0], mesh)
  for job_id, edit_settings in edits.items():
    alone = pipeline.edit(model, edit_settings).latents
    error = float(np.abs(batched[job_id] - alone).max() / np.abs(alone).max())
    bound = tolerances.run_to_run(cfg.dit, alone.shape[-1], cfg.t5.max_length + 2, 7.0)
    print(f"{job_id}: packed vs standalone edit {error:.1e} (bound {bound:.1e})")
    assert batched[job_id].shape == alone.shape
    assert error <= bound, f"{job_id}: packed vs standalone edit {error:.2e} > {bound:.2e}"


def test_the_listening_page_links_resolve(batch_run):
  out, _, _ = batch_run

  class Links(html.parser.HTMLParser):
    def __init__(self):
      super().__init__()
      self.links = []

    def handle_starttag(self, tag, attrs):
      if tag in ("audio", "img"):
        self.links.append(dict(attrs)["src"])

  for page in [out / "index.html", out / "piano" / "index.html"]:
    parser = Links()
    parser.feed(page.read_text())
    assert len(parser.links) >= 3
    for link in parser.links:
      assert not link.startswith(("/", "http")), link
      assert (page.parent / link).is_file(), link
  text = (out / "index.html").read_text()
  assert "failed: --vital_layers: layer 99 is out of range" in text and "a piano" in text


# ----------------------------------------------------------------------------- devices, kills, hosts


def run_batch_process(args, env_extra=None, **kwargs):
  env = {**os.environ, **(env_extra or {})}  # the test run's compilation cache (conftest.py)
  return subprocess.Popen([sys.executable, str(REPO / "scripts" / "edit_batch.py"), *map(str, args)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_four_simulated_devices_equal_one(tiny44k, workspace, batch_run, tmp_path):
  root, manifest, _ = workspace
  out, _, _ = batch_run
  proc = run_batch_process(["--model", tiny44k.path, "--manifest", manifest, "--output_path", tmp_path / "four",
                            "--rows_per_device", "3", *COMMON],
                           env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  stdout, stderr = proc.communicate(timeout=600)
  assert proc.returncode == edit_batch.EXIT_SOME_FAILED, stderr[-2000:]
  assert json.loads((tmp_path / "four" / "summary.json").read_text())["devices"] == 4
  worst = 0.0
  for job_id in ("piano", "drums", "violin", "ramp-file", "recording"):
    one, four = np.load(out / job_id / "latents.npy"), np.load(tmp_path / "four" / job_id / "latents.npy")
    worst = max(worst, float(np.abs(one - four).max() / np.abs(one).max()))
  print(f"4 devices vs 1: {worst:.1e}")
  cfg = tiny44k.model.config  # other rows per device round in other orders: the derived bound
  frames = max(np.load(out / job_id / "latents.npy").shape[-1] for job_id in ("piano", "recording"))
  assert worst <= tolerances.run_to_run(cfg.dit, frames, cfg.t5.max_length + 2, 7.0)


@pytest.mark.parametrize("moment", ["staging a WAV", "staging the latents over an earlier folder"])
def test_ctrl_c_while_a_job_folder_is_written_leaves_no_staging(tiny44k, tmp_path, capsys, monkeypatch, moment):
  """Ctrl-C (KeyboardInterrupt) in write_job, after part of the job's folder is staged: exit 130,
  one line, and the output folder holds only what was there (the summary, an earlier complete
  folder of the job untouched): no staging folder, no hidden temporary."""
  from musickv_jax.jobs import results as job_results
  from musickv_jax.writers import edit as edit_outputs

  manifest = write_manifest(tmp_path / "jobs.jsonl", [{"id": "piano", "prompts": ["piano solo", "guitar"], "seed": 1}])
  out = tmp_path / "out"
  expected = ["summary.json"]
  if moment == "staging a WAV":
    real, calls = edit_outputs.save_wav, []

    def interrupted(path, *args, **kwargs):  # the source's WAV is staged, then Ctrl-C
      calls.append(path)
      if len(calls) == 2:
        raise KeyboardInterrupt
      return real(path, *args, **kwargs)

    monkeypatch.setattr(edit_outputs, "save_wav", interrupted)
  else:
    (out / "piano").mkdir(parents=True)
    (out / "piano" / "edit.json").write_text("an earlier run")
    expected = ["piano", "summary.json"]

    def interrupted(path, array):  # every other file is staged; the latents half written
      path.write_bytes(b"half")
      raise KeyboardInterrupt

    monkeypatch.setattr(job_results, "write_npy", interrupted)
  status, _, err = cli(capsys, edit_batch, "--model", tiny44k.path, "--manifest", manifest, "--output_path", out,
                       *COMMON)
  assert status == 130, err
  assert err.strip().splitlines()[-1] == "interrupted; nothing was written", err
  assert sorted(p.name for p in out.iterdir()) == expected  # hidden names included
  if moment != "staging a WAV":
    assert [p.name for p in (out / "piano").iterdir()] == ["edit.json"]
    assert (out / "piano" / "edit.json").read_text() == "an earlier run"


def test_a_killed_batch_resumes_without_recomputing(tiny44k, tmp_path):
  """SIGKILL once the first job's folder is in place; --resume finishes the rest; nothing half
  written is ever visible, and the outputs equal an uninterrupted run."""
  jobs = [{"id": f"job{i}", "prompts": ["piano", "guitar"], "seed": i, "num_inference_steps": 2 + i}
          for i in range(4)]  # different step counts: separate batches, one after the other
  manifest = write_manifest(tmp_path / "jobs.jsonl", jobs)
  out = tmp_path / "out"
  args = ["--model", tiny44k.path, "--manifest", manifest, "--output_path", out, "--audio_end_in_s", "1.5",
          "--latent_length", "fit"]
  proc = run_batch_process(args)
  deadline = time.time() + 300
  while not (out / "job0").is_dir() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  done = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
  assert "job0" in done and len(done) < 4, done
  for name in done:  # every visible job folder is complete
    assert (out / name / "latents.npy").is_file() and (out / name / "index.html").is_file()
  first = (out / "job0" / "latents.npy").stat().st_mtime_ns

  resumed = run_batch_process([*args, "--resume"])
  stdout, stderr = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, stderr[-2000:]
  assert f"({len(done)} already done)" in stdout
  assert (out / "job0" / "latents.npy").stat().st_mtime_ns == first  # not recomputed
  assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the killed run's staging is gone
  straight = run_batch_process([*args[:5], tmp_path / "straight", *args[6:]])
  straight.communicate(timeout=600)
  for job in jobs:
    np.testing.assert_array_equal(np.load(out / job["id"] / "latents.npy"),
                                  np.load(tmp_path / "straight" / job["id"] / "latents.npy"))


def test_two_processes_share_the_manifest(tiny44k, tmp_path):
  """jax.distributed on the CPU backend: two processes on this machine, each running every second
  job on its own device; process 0 merges the summary."""
  jobs = [{"id": f"j{i}", "prompts": ["piano", "guitar"], "seed": i} for i in range(3)]
  manifest = write_manifest(tmp_path / "jobs.jsonl", jobs)
  out = tmp_path / "out"
  port = 23000 + os.getpid() % 1000
  procs = [run_batch_process(["--model", tiny44k.path, "--manifest", manifest, "--output_path", out, *COMMON,
                              "--coordinator_address", f"localhost:{port}", "--num_processes", "2",
                              "--process_id", str(i)]) for i in range(2)]
  results = [p.communicate(timeout=600) for p in procs]
  for proc, (stdout, stderr) in zip(procs, results):
    assert proc.returncode == 0, stderr[-2000:]
  assert "2 job(s) for this process" in results[0][0] and "1 job(s) for this process" in results[1][0]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["processes"] == 2 and [j["id"] for j in summary["jobs"]] == ["j0", "j1", "j2"]
  assert all(j["status"] == "ok" for j in summary["jobs"])
  assert sorted(p.name for p in out.iterdir()) == ["index.html", "j0", "j1", "j2", "summary.json"]


def test_batch_usage_errors(tiny44k, tmp_path, capsys):
  status, _, err = cli(capsys, edit_batch, "--model", tiny44k.path, "--output_path", tmp_path / "o")
  assert status == 2 and "--manifest is required" in err
  manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "big", "prompts": ["a", "b", "c"]},
                                                   {"id": "small", "prompts": ["a", "b"]}])
  status, _, err = cli(capsys, edit_batch, "--model", tiny44k.path, "--manifest", manifest, "--rows_per_device", "2",
                       "--output_path", tmp_path / "o", *COMMON)
  assert status == edit_batch.EXIT_SOME_FAILED
  assert "job big (manifest line 1): 3 prompts do not fit the 2 rows of a device; raise --rows_per_device" in err
  assert (tmp_path / "o" / "small" / "edit.json").is_file() and not (tmp_path / "o" / "big").exists()
  status, _, err = cli(capsys, edit_batch, "--model", tiny44k.path, "--manifest", tmp_path / "none.jsonl",
                       "--output_path", tmp_path / "o2")
  assert status == 2 and "--manifest" in err and "file not found" in err


def test_a_batch_that_does_not_fit_the_memory_budget_is_refused_before_it_runs(tiny44k, tmp_path, capsys):
  """The memory plan's estimate (pipeline.memory) refuses the batch in one line, before any
  sampling, naming the flags to change; nothing is written."""
  manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "prompts": ["a", "b"]}, {"id": "b", "prompts": ["c", "d"]}])
  status, _, err = cli(capsys, edit_batch, "--model", tiny44k.path, "--manifest", manifest, "--memory_budget_gib",
                       "0.0001", "--output_path", tmp_path / "o", *COMMON)
  assert status == 1 and err.count("\n") == 1, err
  assert "but the memory budget (--memory_budget_gib) is" in err and "lower --rows_per_device" in err
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
