"""No request can ask for unbounded memory (issue 29, item 2): every size a person controls has a
cap (pipeline.limits) checked before anything is allocated, in one line naming the setting and the
cap, from every command and through the studio's request checks; what a run of one job needs in
memory is checked against the device by pipeline.memory's estimate before it starts.

The issue's case: --num_inference_steps 1000000000 reached a 7.45 GiB allocation in
kv_schedules.linear_ramp (a traceback; gradio's generic "exception" text in the studio)."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import jobs
from musickv_jax.cli import benchmark as benchmark_cli
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import edit_batch
from musickv_jax.cli import generate as generate_cli
from musickv_jax.cli import invert as invert_cli
from musickv_jax.cli import optimize_schedule as optimize_cli
from musickv_jax.cli import options
from musickv_jax.cli import probe_layers as probe_cli
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import EditSettings, GenerationSettings, WindowSettings, kv_schedules, limits, memory
from musickv_jax.sampling import schedules
from tests.test_cli import assert_one_line_error, cli

BILLION = 1_000_000_000
STEPS_REFUSED = (f"{BILLION} is more than {limits.MAX_STEPS} steps, the most one request may ask for; ask for at most "
                 f"{limits.MAX_STEPS}")


class Reached(AssertionError):
  """Work that a refused request must never reach."""


@pytest.fixture
def nothing_allocated(monkeypatch):
  """Loading a model, building a schedule or a sigma list fails the test: a refusal must come first."""
  def reached(*args, **kwargs):
    raise Reached("a refused request reached allocating work")

  monkeypatch.setattr(kv_schedules, "linear_ramp", reached)
  monkeypatch.setattr(schedules, "sigma_schedule", reached)
  monkeypatch.setattr(options, "load_model", reached)


def timed(call):
  start = time.perf_counter()
  result = call()
  return result, time.perf_counter() - start


@pytest.mark.parametrize("command,args", [
    (generate_cli, ["--prompts", "a"]),
    (edit_cli, ["--prompts", "a", "b"]),
    (invert_cli, ["--prompts", "a", "--input_audio", "{audio}"]),
    (optimize_cli, ["--prompts", "a", "b"]),
    (probe_cli, ["--prompts", "a"]),
], ids=["generate", "edit", "invert", "optimize", "probe"])
def test_a_billion_steps_is_refused_at_once_from_every_command(tiny, tmp_path, capsys, nothing_allocated, command,
                                                                args):
  sf.write(tmp_path / "a.wav", np.full((64, 2), 0.1, np.float32), 16)
  args = [a.format(audio=tmp_path / "a.wav") for a in args]
  (status, _, err), seconds = timed(lambda: cli(capsys, command, "--model", tiny.path, *args,
                                                "--num_inference_steps", BILLION, "--output_path", tmp_path / "out"))
  assert_one_line_error(status, err, f"error: --num_inference_steps {STEPS_REFUSED}")
  assert seconds < 1.0, seconds
  assert not (tmp_path / "out").exists()


def test_a_billion_steps_is_refused_at_once_through_the_studio(tiny, tmp_path, nothing_allocated, monkeypatch):
  """The studio's request checks (StudioRequest.edit_request) refuse it in the studio's names
  before it reaches the queue: the worker never sees it."""
  from musickv_jax.studio.request import RequestError, StudioRequest
  from musickv_jax.studio.service import Studio
  from musickv_jax.studio.worker import Worker

  studio = Studio({"tiny": (str(tiny.path), tiny.model)}, tmp_path / "studio", gather_s=0.0)
  monkeypatch.setattr(Worker, "submit", lambda self, task: (_ for _ in ()).throw(Reached("queued")))
  try:
    with pytest.raises(RequestError) as info:
      _, seconds = timed(lambda: studio.edit(StudioRequest("piano", ("guitar",), num_inference_steps=BILLION)))
    assert str(info.value) == f"steps {STEPS_REFUSED}"
    start = time.perf_counter()
    with pytest.raises(RequestError):
      studio.edit(StudioRequest("piano", ("guitar",), num_inference_steps=BILLION))
    assert time.perf_counter() - start < 1.0
    with pytest.raises(RequestError, match=f"prompts: prompt 2 has 5000 characters, more than "
                                           f"{limits.MAX_PROMPT_CHARS}"):
      studio.edit(StudioRequest("piano", ("g" * 5000,)))
  finally:
    studio.close()
  assert not (tmp_path / "studio").exists() or not any((tmp_path / "studio").iterdir())


def test_the_library_refuses_before_it_allocates(tiny, nothing_allocated):
  """jobs.resolve (every command's and the studio's path) and the settings' own validation."""
  cfg = tiny.model.config
  for call in (lambda: jobs.resolve(jobs.EditRequest(prompts=("a", "b"), num_inference_steps=BILLION), tiny.model),
               lambda: EditSettings(GenerationSettings(prompts=("a", "b"), num_inference_steps=BILLION)).validate(cfg),
               lambda: GenerationSettings(prompts=("a",), num_inference_steps=BILLION).check_sizes()):
    with pytest.raises(SettingsError) as info:
      _, seconds = timed(call)
    assert info.value.field == "num_inference_steps" and str(info.value) == f"num_inference_steps {STEPS_REFUSED}"
  # at the cap it is accepted (the cap is the most, not a step below it)
  GenerationSettings(prompts=("a",), num_inference_steps=limits.MAX_STEPS).check_sizes()


@pytest.mark.parametrize("request_kwargs,field,message", [
    (dict(prompts=("a",) * (limits.MAX_PROMPTS + 1)), "prompts",
     f"prompts {limits.MAX_PROMPTS + 1} is more than {limits.MAX_PROMPTS} prompts"),
    (dict(prompts=("a", "b" * (limits.MAX_PROMPT_CHARS + 1))), "prompts",
     f"prompts: prompt 2 has {limits.MAX_PROMPT_CHARS + 1} characters, more than {limits.MAX_PROMPT_CHARS}"),
    (dict(prompts=("a", "b"), negative_prompt="n" * 10_000), "negative_prompt",
     f"negative_prompt: the prompt has 10000 characters, more than {limits.MAX_PROMPT_CHARS}"),
    (dict(prompts=("a", "b"), windows=WindowSettings(windows_per_batch=BILLION)), "windows_per_batch",
     f"windows_per_batch {BILLION} is more than {limits.MAX_ROWS} windows"),
], ids=["prompts", "prompt-text", "negative-prompt", "windows-per-batch"])
def test_every_size_of_a_request_has_its_cap(nothing_allocated, request_kwargs, field, message):
  with pytest.raises(SettingsError) as info:
    jobs.check_combinations(jobs.EditRequest(**request_kwargs))
  assert info.value.field == field and str(info.value).startswith(message), str(info.value)


def test_windows_far_shorter_than_the_models_are_refused(tiny44k):
  cfg = tiny44k.model.config
  frames = cfg.frames_for_samples(int(cfg.conditioner.seconds_max * cfg.sample_rate))
  settings = WindowSettings(window_s=cfg.seconds_of_frames(2), overlap_s=0.0)
  with pytest.raises(SettingsError) as info:
    settings.layout(cfg, frames)
  assert info.value.field == "window_s" and f"windows, more than {limits.MAX_WINDOWS}" in str(info.value)


@pytest.mark.parametrize("command,args,message", [
    (edit_batch, ["--manifest", "{manifest}", "--rows_per_device", str(BILLION)],
     f"--rows_per_device {BILLION} is more than {limits.MAX_ROWS} rows"),
    (optimize_cli, ["--prompts", "a", "b", "--iterations", str(BILLION)],
     f"--iterations {BILLION} is more than {limits.MAX_ITERATIONS} iterations"),
    (probe_cli, ["--prompts", "a", "--variants_per_call", str(BILLION)],
     f"--variants_per_call {BILLION} is more than {limits.MAX_ROWS} variants"),
    (probe_cli, ["--prompts", "a", "--seeds", ",".join(map(str, range(limits.MAX_SEEDS + 1)))],
     f"--seeds {limits.MAX_SEEDS + 1} is more than {limits.MAX_SEEDS} seeds"),
    (generate_cli, ["--prompts", *["a"] * (limits.MAX_PROMPTS + 1)],
     f"--prompts {limits.MAX_PROMPTS + 1} is more than {limits.MAX_PROMPTS} prompts"),
], ids=["batch-rows", "iterations", "probe-variants", "probe-seeds", "generate-prompts"])
def test_the_commands_sizes_are_capped_before_the_model_loads(tiny, tmp_path, capsys, nothing_allocated, command,
                                                               args, message):
  manifest = tmp_path / "jobs.jsonl"
  manifest.write_text(json.dumps({"id": "a", "prompts": ["a", "b"]}) + "\n")
  args = [a.format(manifest=manifest) for a in args]
  (status, _, err), seconds = timed(lambda: cli(capsys, command, "--model", tiny.path, *args,
                                                "--output_path", tmp_path / "out"))
  assert_one_line_error(status, err, message)
  assert seconds < 1.0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--job", "--job_seconds", "1e9"], "--job_seconds must be more than 0 and at most 47.55 s (the model's window)"),
    (["--long_seconds", "1e9"], "--long_seconds must be more than 0 and at most 512.00 s"),
    (["--repeats", str(BILLION)], f"--repeats {BILLION} is more than {limits.MAX_ITERATIONS} repeats"),
    (["--batch", str(2 * BILLION)], f"--batch {2 * BILLION} is more than {limits.MAX_ROWS} rows"),
], ids=["job-seconds", "long-seconds", "repeats", "batch"])
def test_the_benchmarks_sizes_are_capped(capsys, args, message):
  (status, _, err), seconds = timed(lambda: cli(capsys, benchmark_cli, *args))
  assert status in (1, 2) and message in err and err.count("\n") == 1, err
  assert seconds < 1.0


# ----------------------------------------------------------------------------- what fits the device


def test_a_cached_edit_whose_kv_does_not_fit_is_refused_before_it_runs(tiny, tmp_path, capsys, monkeypatch):
  """The cached mode keeps steps x vital layers x 2 branches of K/V: at the step cap it is 30 times
  what 30 steps keep. A device that holds the model and its rows, but not that, refuses it in one
  line (naming the mode and the steps) before any sampling; the joint mode still runs there."""
  cfg = tiny.model.config
  frames = cfg.dit.sample_size
  steps = limits.MAX_STEPS
  kv = memory.kv_store_bytes(cfg, steps, 1, 2, frames)
  fits_rows = memory.params_bytes(tiny.model) + memory.dit_fixed_bytes(cfg) + 4 * memory.dit_row_bytes(cfg, frames)
  assert kv == steps * 1 * 2 * (frames + 1) * 2 * cfg.dit.embed_dim * 4
  monkeypatch.setattr(memory, "device_memory_bytes", lambda: fits_rows + kv // 2)
  sampled = []
  from musickv_jax.pipeline import plan as plan_lib

  real_run_block = plan_lib.run_block
  monkeypatch.setattr(plan_lib, "run_block", lambda *a, **k: sampled.append(1) or real_run_block(*a, **k))
  args = ["--model", tiny.path, "--prompts", "a", "b", "--audio_end_in_s", "2", "--vital_layers=1",
          "--num_inference_steps", steps]
  status, _, err = cli(capsys, edit_cli, *args, "--injection_mode", "cached", "--output_path", tmp_path / "cached")
  assert_one_line_error(status, err, "the K/V kept over the steps")
  assert "but this device has" in err and "use --injection_mode=joint, or fewer --num_inference_steps or " \
      "--vital_layers" in err
  assert not sampled and not (tmp_path / "cached").exists()
  # the same edit in the joint mode keeps no K/V: it fits (checked, not run: 1000 steps take a while)
  settings = EditSettings(GenerationSettings(prompts=("a", "b"), audio_end_in_s=2, num_inference_steps=steps),
                          vital_layers=(1,))
  memory.check_run(tiny.model, settings.for_model(cfg), frames, True)
  with pytest.raises(SettingsError) as info:
    memory.check_run(tiny.model, dataclasses.replace(settings, injection_mode="cached").for_model(cfg), frames, True)
  assert info.value.field == "injection_mode"


def test_more_prompts_than_the_device_holds_are_refused_before_they_run(tiny, tmp_path, capsys, monkeypatch):
  cfg = tiny.model.config
  frames = cfg.dit.sample_size
  base = memory.params_bytes(tiny.model) + memory.dit_fixed_bytes(cfg)
  monkeypatch.setattr(memory, "device_memory_bytes", lambda: base + 5 * memory.dit_row_bytes(cfg, frames))
  status, _, err = cli(capsys, generate_cli, "--model", tiny.path, "--prompts", "a", "b", "c", "--audio_end_in_s", "2",
                       "--num_inference_steps", "2", "--output_path", tmp_path / "out")
  assert_one_line_error(status, err, "6 DiT rows of")
  assert err.strip().endswith("ask for fewer --prompts") and not (tmp_path / "out").exists()
  status, _, err = cli(capsys, generate_cli, "--model", tiny.path, "--prompts", "a", "b", "--audio_end_in_s", "2",
                       "--num_inference_steps", "2", "--output_path", tmp_path / "two")
  assert status == 0, err
