"""A negative guidance scale is refused (issue 29, item 4: `--guidance_scale -3` ran silently on
every family), in one line that says what guidance below 0 would do, on every model family the
tests use (Stable Audio Open 1.0, Stable Audio Open Small, Stable Audio 3), from the command line
and through the studio; 0 and scales between 0 and 1 (weaker than none) are accepted."""

from __future__ import annotations

import pytest

from musickv_jax import jobs
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import generate as generate_cli
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import GenerationSettings
from tests.test_cli import assert_one_line_error, cli

REFUSED = ("must be 0 or more, got -3: below 0 guidance pushes the audio away from its prompt; 1 is no guidance, 0 "
           "to 1 weaker than none (0: the unconditional model), more than 1 stronger")


@pytest.fixture(params=["sao-1.0", "sao-small", "sa3"])
def family(request):
  """(name, converted checkpoint path, loaded model) of each family."""
  if request.param == "sao-1.0":
    tiny = request.getfixturevalue("tiny")
    return request.param, tiny.path, tiny.model
  if request.param == "sao-small":
    small = request.getfixturevalue("sao_small")
    return request.param, small.path, small.model
  sa3 = request.getfixturevalue("sa3")
  return request.param, sa3.path, sa3.model


def test_negative_guidance_is_refused_on_the_command_line(family, tmp_path, capsys):
  _, path, _ = family
  for command, prompts in ((generate_cli, ["a"]), (edit_cli, ["a", "b"])):
    out = tmp_path / command.__name__.rsplit(".", 1)[-1]
    status, _, err = cli(capsys, command, "--model", path, "--prompts", *prompts, "--guidance_scale=-3",
                         "--num_inference_steps", "2", "--output_path", out)
    assert_one_line_error(status, err, f"error: --guidance_scale {REFUSED}")
    assert not out.exists()


def test_negative_guidance_is_refused_by_the_studio(family, tmp_path):
  from musickv_jax.studio.request import RequestError, StudioRequest
  from musickv_jax.studio.service import Studio

  name, path, model = family
  studio = Studio({name: (str(path), model)}, tmp_path / "studio", gather_s=0.0)
  try:
    with pytest.raises(RequestError) as info:
      studio.edit(StudioRequest("piano", ("guitar",), guidance_scale=-3.0, num_inference_steps=2))
  finally:
    studio.close()
  assert str(info.value) == f"guidance {REFUSED}"
  assert not (tmp_path / "studio").exists() or not any((tmp_path / "studio").iterdir())


def test_guidance_from_0_up_is_accepted_and_below_0_refused(family):
  _, _, model = family
  for scale in (0.0, 0.5, 1.0, 7.0):
    jobs.resolve(jobs.EditRequest(prompts=("a", "b"), guidance_scale=scale), model)
  for scale in (-3.0, -1e-6):
    with pytest.raises(SettingsError) as info:
      GenerationSettings(prompts=("a",), guidance_scale=scale).validate(model.config)
    assert info.value.field == "guidance_scale"
