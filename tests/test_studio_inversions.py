"""The studio's inversion cache (jobs.inversions) is keyed by everything that decides an inversion,
the steps included (issue 29, escaped bug 2): two edits of one recording with different step
counts each invert, and each equals musickv-edit with its own steps; the same steps again come from
the cache. The studio runs in this process (studio.service, no gradio)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musickv_jax.cli import edit as edit_cli
from musickv_jax.studio.request import StudioRequest
from musickv_jax.studio.service import Studio
from tests.test_cli import cli


@pytest.fixture
def recording(tmp_path):
  t = np.arange(int(2.5 * 44100)) / 44100
  x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)
  path = tmp_path / "guitar.wav"
  sf.write(path, np.stack([x, 0.8 * x], axis=1), 44100)
  return path


def test_edits_with_other_steps_each_invert_and_equal_musickv_edit(tiny44k, recording, tmp_path, capsys):
  studio = Studio({"tiny": (str(tiny44k.path), tiny44k.model)}, tmp_path / "studio", gather_s=0.0)
  outcomes = {}
  try:
    for steps in (3, 4, 3):
      outcome = studio.edit(StudioRequest("clean guitar", ("church organ",), audio=str(recording),
                                          num_inference_steps=steps))
      outcomes.setdefault(steps, []).append(outcome)
    counts = studio.cache.counts
  finally:
    studio.close()
  assert [o.inversion_cached for o in outcomes[3]] == [False, True]  # the same steps again: the cache's
  assert outcomes[4][0].inversion_cached is False  # other steps: inverted again, not the 3-step inversion
  assert (counts.hits, counts.misses) == (1, 2)
  for steps in (3, 4):
    status, _, err = cli(capsys, edit_cli, "--model", tiny44k.path, "--prompts", "clean guitar", "church organ",
                         "--input_audio", recording, "--num_inference_steps", steps, "--output_path",
                         tmp_path / f"cli-{steps}")
    assert status == 0, err
    for outcome in outcomes[steps]:
      for ours, name in ((outcome.source_wav, "source_reconstruction.wav"), (outcome.edit_wavs[0], "edit_1.wav")):
        theirs = sf.read(tmp_path / f"cli-{steps}" / name, always_2d=True)[0]
        np.testing.assert_array_equal(sf.read(ours, always_2d=True)[0], theirs,
                                      err_msg=f"{steps} steps, {name}")  # an edit alone: the same program
