"""The studio's refusals of a request name its own controls, never a command-line flag (issue 29,
item 5): the page and the API say "vital layers ...", musickv-edit says "--vital_layers ...". In
this process (studio.service, no gradio), before anything is queued."""

from __future__ import annotations

import pytest

from musickv_jax.studio.request import RequestError, StudioRequest
from musickv_jax.studio.service import Studio
from musickv_jax.studio.worker import Worker


class Queued(Exception):
  pass


@pytest.mark.parametrize("layers,expected", [
    ("x", "vital layers must be comma-separated integers (e.g. 20,3,4), got 'x'"),
    ("1;0", "vital layers must be comma-separated integers (e.g. 20,3,4), got '1;0'"),
    ("99", "vital layers: layer 99 is out of range"),
])
def test_bad_vital_layers_are_refused_in_the_studios_words(tiny, tmp_path, monkeypatch, layers, expected):
  studio = Studio({"tiny": (str(tiny.path), tiny.model)}, tmp_path / "studio", gather_s=0.0)
  monkeypatch.setattr(Worker, "submit", lambda self, task: (_ for _ in ()).throw(Queued("queued")))
  try:
    with pytest.raises(RequestError) as info:
      studio.edit(StudioRequest("piano", ("guitar",), vital_layers=layers, num_inference_steps=2))
  finally:
    studio.close()
  message = str(info.value)
  assert message.startswith(expected) and "\n" not in message, message
  assert "--" not in message and "vital_layers" not in message, message  # no flag, no field name
