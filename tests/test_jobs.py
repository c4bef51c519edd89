"""jobs/: one owner for "edit request -> finished result". Prepared and run jobs equal the pipeline's
own edit; progress is an argument (two edits in two threads hear only their own steps); the
command line's defaults are the library's (one place), and a request survives the trip to the
musickv-edit command line that the studio records and back."""

from __future__ import annotations

import dataclasses
import shlex
import threading

import numpy as np
import pytest

from musickv_jax import jobs, pipeline
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import options
from musickv_jax.cli.runner import Flags, expand_multi_value_flags


def _request(prompts, steps, seed=0):
  return dataclasses.replace(jobs.DEFAULTS, prompts=prompts, num_inference_steps=steps, seed=seed,
                             audio_end_in_s=0.5, guidance_scale=3.0)


def test_a_prepared_job_equals_the_pipelines_edit(tiny):
  request = _request(("piano", "guitar"), 3)
  prepared = jobs.prepare(tiny.model, request)
  outcome = next(jobs.run(tiny.model, jobs.plan_run([prepared.job], prepared.job.n_prompts)))
  assert outcome.error is None
  result = prepared.job.result(tiny.model, *outcome.latents[prepared.id])
  expected = pipeline.edit(tiny.model, jobs.resolve(request, tiny.model).settings)
  np.testing.assert_array_equal(result.latents, expected.latents)
  np.testing.assert_array_equal(result.audio, expected.audio)


def test_two_edits_in_two_threads_hear_only_their_own_progress(tiny):
  """Each run's listener is its own argument: no module state is shared between threads."""
  steps = {"a": 4, "b": 6}
  heard: dict[str, list[jobs.Progress]] = {"a": [], "b": []}
  prepared = {name: jobs.prepare(tiny.model, _request(("piano", "guitar"), n, seed=len(name)), name)
              for name, n in steps.items()}
  barrier = threading.Barrier(2)
  errors = []

  def edit(name):
    try:
      barrier.wait()
      job = prepared[name].job
      for outcome in jobs.run(tiny.model, jobs.plan_run([job], job.n_prompts), on_progress=heard[name].append):
        assert outcome.error is None
    except Exception as e:  # noqa: BLE001 -- reported below, in the main thread
      errors.append(e)

  threads = [threading.Thread(target=edit, args=(name,)) for name in steps]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors, errors
  for name, n in steps.items():
    reports = heard[name]
    assert reports and {r.jobs for r in reports} == {(name,)}, reports
    assert all(r.total == n and r.steps == n for r in reports)
    assert [r.done for r in reports] == sorted(r.done for r in reports) and reports[-1].done == n


def test_a_listener_that_raises_cancelled_fails_only_its_group(tiny):
  first = jobs.prepare(tiny.model, _request(("piano", "guitar"), 2), "first")
  second = jobs.prepare(tiny.model, _request(("piano", "guitar"), 4), "second")  # another bucket: its own group

  def on_progress(progress):
    if progress.jobs == ("first",):
      raise jobs.Cancelled("cancelled")

  outcomes = list(jobs.run(tiny.model, jobs.plan_run([first.job, second.job], 2), on_progress=on_progress))
  assert [o.group.ids for o in outcomes] == [("first",), ("second",)]
  assert isinstance(outcomes[0].error, jobs.Cancelled) and outcomes[1].error is None


def test_a_job_with_more_prompts_than_a_devices_rows_is_refused_alone(tiny):
  big = jobs.prepare(tiny.model, dataclasses.replace(_request(("a", "b", "c"), 2), edit_all=True), "big")
  small = jobs.prepare(tiny.model, _request(("a", "b"), 2), "small")
  plan = jobs.plan_run([big.job, small.job], rows_per_device=2)
  assert set(plan.refused) == {"big"} and plan.refused["big"].field == "rows_per_device"
  assert [group.ids for group in plan.groups] == [("small",)]


def _parse(argv: list[str]) -> options.Values:
  fv = Flags()
  edit_cli.define(fv)
  fv(["musickv-edit", *expand_multi_value_flags(argv, ("prompts",), fv)])
  return options.Values.from_flags(fv)


@pytest.mark.fast
def test_the_command_lines_defaults_are_the_librarys():
  """musickv-edit with nothing set asks exactly the library's default request (jobs.DEFAULTS): the
  studio and the command line read their defaults from one place."""
  asked = options.edit_request(_parse(["--prompts", "a", "b"]))
  assert asked == dataclasses.replace(jobs.DEFAULTS, prompts=("a", "b"))


@pytest.mark.fast
@pytest.mark.parametrize("argv", [
    ["--num_inference_steps=7", "--guidance_scale=3", "--seed=5", "--vital_layers=1,2", "--schedule=window",
     "--window=0.25,0.75", "--schedule_weight=0.5", "--edit_all"],
    ["--input_audio=/tmp/song.wav", "--input_start_s=1.5", "--input_end_s=9", "--inversion=consistent",
     "--audio_end_in_s=4", "--preset=musickv-constant", "--skip_layers=3", "--ramp=0.2,0.9"],
])
def test_a_request_survives_the_trip_to_its_command_line_and_back(argv):
  request = options.edit_request(_parse(["--prompts", "Piano solo", "Acoustic guitar, country, soft", *argv]))
  line = options.edit_command_line("ckpt/sao", request)
  args = shlex.split(line)
  assert args[:3] == ["musickv-edit", "--model", "ckpt/sao"]
  assert options.edit_request(_parse(args[3:])) == request
