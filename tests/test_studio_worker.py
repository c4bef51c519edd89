"""The studio's worker runs a comparison (a `Solo` task) alone on its own thread, with progress and
cancel like an edit's; Studio.compare in this process on the tiny model: its folder, its table,
and a cancel that stops it between groups of steps and writes nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf

from musickv_jax import jobs
from musickv_jax.errors import SettingsError
from musickv_jax.jobs import Cancelled
from musickv_jax.studio.request import RequestError, StudioRequest
from musickv_jax.studio.worker import Solo, Worker


@pytest.fixture
def worker():
  running = Worker({"m": object()}, jobs.InversionCache(), gather_s=0.0)
  yield running
  running.stop()


@pytest.mark.fast
def test_a_solo_task_runs_on_the_worker_thread_with_progress(worker):
  heard = []

  def work(model, task):
    listener = task.listener("comparing")
    for step in range(1, 4):
      listener(step, 3)
    return threading.current_thread().name, model

  task = Solo("t1", "m", work, progress=lambda fraction, what: heard.append((fraction, what)))
  name, model = worker.submit(task).result(timeout=30)
  assert name == "musickv-studio-worker" and model is worker.models["m"]
  assert [fraction for fraction, _ in heard] == [1 / 3, 2 / 3, 1.0]
  assert heard[-1][1] == "comparing: step 3 of 3"


@pytest.mark.fast
def test_a_cancelled_solo_task_stops_at_its_next_step(worker):
  started, steps = threading.Event(), []

  def work(model, task):
    listener = task.listener("comparing")
    started.set()
    task.cancel.wait(timeout=30)
    for step in range(1, 4):
      listener(step, 3)  # Cancelled at the first step after the cancel
      steps.append(step)

  task = Solo("t2", "m", work)
  future = worker.submit(task)
  assert started.wait(timeout=30)
  task.cancel.set()
  with pytest.raises(Cancelled):
    future.result(timeout=30)
  assert steps == []


@pytest.mark.fast
def test_a_solo_tasks_refusal_is_one_line_in_the_studios_names(worker):
  def work(model, task):
    raise SettingsError("{field} must be from 0 to 1, got 2", field="init_noise_level")

  future = worker.submit(Solo("t3", "m", work))
  with pytest.raises(RequestError, match=r"^SDEdit level must be from 0 to 1, got 2$"):
    future.result(timeout=30)
  # and the worker goes on
  assert worker.submit(Solo("t4", "m", lambda model, task: "next")).result(timeout=30) == "next"


def _recording(path, rate: int, seconds: float = 2.0) -> None:
  t = np.arange(int(seconds * rate)) / rate
  tone = 0.3 * np.sin(2 * np.pi * 3.0 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
  sf.write(path, np.stack([tone, 0.8 * tone], axis=1).astype(np.float32), rate, subtype="FLOAT")


def test_studio_compare_writes_its_folder_and_a_cancel_stops_it(tiny, tmp_path):
  from musickv_jax.studio.service import Studio

  _recording(tmp_path / "in.wav", tiny.model.config.sample_rate)
  commands = []

  def command_of(source, request, methods, without_injection):
    commands.append((source, request, methods, without_injection))
    return "musickv-compare ..."

  studio = Studio({"tiny": (str(tiny.path), tiny.model)}, tmp_path / "out", gather_s=0.0,
                  compare_command_of=command_of)
  asked = StudioRequest("piano solo", ("acoustic guitar",), audio=str(tmp_path / "in.wav"), num_inference_steps=4,
                        guidance_scale=3.0, regions="0.5,1.25")
  try:
    heard = []
    outcome = studio.compare(asked, "flowedit,sdedit:0.5", without_injection=False,
                             progress=lambda fraction, what: heard.append((fraction, what)))
    assert [label for label, _ in outcome.variants] == ["flowedit", "sdedit-0.5"]
    assert all(wav is not None and wav.is_file() for _, wav in outcome.variants)
    assert outcome.record.is_file() and outcome.plot.is_file() and outcome.page.is_file()
    assert outcome.folder.parent == tmp_path / "out" and outcome.command == "musickv-compare ..."
    source, request, methods, without = commands[0]
    assert (source, methods, without) == (str(tiny.path), "flowedit,sdedit:0.5", False)
    assert request.regions == ((0.5, 1.25),) and request.method == "inversion"  # the variants set their methods
    assert all(row["editing"]["regions"] == [[0.5, 1.25]] for row in outcome.rows)
    table = outcome.table()
    assert [line[0] for line in table] == ["flowedit", "sdedit-0.5"] and len(table[0]) == len(outcome.headers())
    assert outcome.headers()[2] == "timbre_distance ↓" and all(isinstance(v, float) for v in table[0][1:7])
    fractions = [fraction for fraction, what in heard if what.startswith("comparing")]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0

    folders = set((tmp_path / "out").iterdir())

    def cancel_at_first_step(fraction, what):
      studio.cancel("session")
    with pytest.raises(Cancelled):
      studio.compare(asked, "flowedit,sdedit:0.5", progress=cancel_at_first_step, session="session")
    assert set((tmp_path / "out").iterdir()) == folders  # nothing written
    # refused before the queue, in the studio's words
    with pytest.raises(RequestError, match="^methods: unknown method 'magic'"):
      studio.compare(asked, "magic")
    with pytest.raises(RequestError, match="^a comparison sets each variant's method from methods"):
      studio.compare(StudioRequest("a", ("b",), audio=str(tmp_path / "in.wav"), method="flowedit"))
  finally:
    studio.close()
