"""A studio edit's request (studio.request.StudioRequest) in the library's terms: the method, the
SDEdit level and the regions text become jobs.EditRequest's fields; every refusal is one line in
the studio's names (the page's controls, the API's parameters), never a command-line flag. No model
is loaded (the tiny config stands in for one where a refusal needs the model)."""

from __future__ import annotations

import shlex

import pytest

from musickv_jax import jobs
from musickv_jax.cli import options
from musickv_jax.config import named_config
from musickv_jax.errors import MusicKVError
from musickv_jax.studio.request import RequestError, StudioRequest, one_line, regions_from_text

pytestmark = pytest.mark.fast

RECORDING = "/tmp/song.wav"


def _request(**kwargs) -> StudioRequest:
  return StudioRequest("clean guitar", ("classical piano",), **kwargs)


def test_method_level_and_regions_become_the_librarys_request():
  asked = _request(audio=RECORDING, method="sdedit", init_noise_level=0.4, regions="4,7; 20, 24.5").edit_request()
  assert asked.method == "sdedit" and asked.init_noise_level == 0.4
  assert asked.regions == ((4.0, 7.0), (20.0, 24.5))
  assert asked.recording == jobs.RecordingRequest(path=RECORDING)
  flowedit = _request(audio=RECORDING, method="flowedit", regions="1.5,3\n6,8").edit_request()
  assert flowedit.method == "flowedit" and flowedit.init_noise_level is None
  assert flowedit.regions == ((1.5, 3.0), (6.0, 8.0))  # a new line separates regions too
  plain = _request().edit_request()  # nothing asked: the library's defaults
  assert (plain.method, plain.init_noise_level, plain.regions) == (jobs.DEFAULTS.method, None, ())


def test_a_studio_request_is_the_command_lines_request():
  """The same edit asked through musickv-edit's flags: equal requests (so equal edits)."""
  from tests.test_jobs import _parse

  studio = _request(audio=RECORDING, method="flowedit", regions="0.5,1.25;2,3").edit_request()
  line = options.edit_command_line("ckpt/sao", studio)
  assert "--edit_method=flowedit" in line and "--edit_region=0.5,1.25" in line and "--edit_region=2.0,3.0" in line
  assert options.edit_request(_parse(shlex.split(line)[3:])) == studio


@pytest.mark.parametrize("text", ["", "  ", ";", "\n"])
def test_empty_regions_text_is_the_whole_clip(text):
  assert regions_from_text(text) == ()


@pytest.mark.parametrize(("kwargs", "expected"), [
    (dict(audio=RECORDING, regions="4-7"), "regions: '4-7' is not START,END; write START,END seconds, several "
                                           "separated by ';'"),
    (dict(audio=RECORDING, regions="4,7,9"), "regions: '4,7,9' is not START,END"),
    (dict(audio=RECORDING, regions="7,4"), "regions: '7,4' must have 0 <= START < END seconds"),
    (dict(audio=RECORDING, regions="-1,2"), "regions: '-1,2' must have 0 <= START < END seconds"),
    (dict(audio=RECORDING, regions="1,inf"), "regions: '1,inf' must have 0 <= START < END seconds"),
    (dict(audio=RECORDING, method="magic"), "method must be one of inversion, flowedit, sdedit, got 'magic'"),
    (dict(method="flowedit"), "method flowedit edits a recording without inverting it: upload the recording (audio)"),
    (dict(audio=RECORDING, init_noise_level=0.5), "SDEdit level is where SDEdit starts: choose method sdedit"),
    (dict(audio=RECORDING, method="sdedit", init_noise_level=float("nan")), "SDEdit level must be a finite number"),
])
def test_refusals_are_one_line_in_the_studios_names(kwargs, expected):
  with pytest.raises(RequestError) as caught:
    _request(**kwargs).edit_request()
  message = str(caught.value)
  assert message.startswith(expected), message
  assert "\n" not in message and "--" not in message and "init_noise_level" not in message


def test_the_librarys_refusals_name_the_studios_controls():
  """What the library refuses on a model (jobs.resolve), rendered as the studio shows it; a good
  request with a method and regions passes the same checks."""
  config = named_config("tiny")
  resolved = jobs.resolve(_request(audio=RECORDING, method="flowedit", regions="0.5,1; 2,3").edit_request(), config)
  assert resolved.settings.method == "flowedit" and resolved.settings.regions == ((0.5, 1.0), (2.0, 3.0))
  with pytest.raises(MusicKVError) as caught:
    jobs.resolve(_request(audio=RECORDING, method="sdedit", init_noise_level=1.5).edit_request(), config)
  message = one_line(caught.value, RECORDING)
  assert message.startswith("SDEdit level must be from 0 to 1") and "init_noise_level" not in message, message


def test_a_comparisons_command_line_asks_the_same_comparison():
  """The musickv-compare command recorded in a studio comparison's compare.json, read back by
  musickv-compare's own flags: the same request (each variant's method from --methods)."""
  from musickv_jax.cli import compare as compare_cli
  from musickv_jax.cli.runner import Flags, expand_multi_value_flags

  asked = _request(audio=RECORDING, regions="0.5,1", num_inference_steps=4, guidance_scale=3.0, seed=7,
                   vital_layers="1,2").edit_request()
  line = options.compare_command_line("ckpt/sao", asked, "inversion, sdedit:0.5", False)
  args = shlex.split(line)
  assert args[:3] == ["musickv-compare", "--model", "ckpt/sao"] and "--methods=inversion,sdedit:0.5" in args
  fv = Flags()
  compare_cli.define(fv)
  fv(["musickv-compare", *expand_multi_value_flags(args[3:], ("prompts",), fv)])
  assert options.edit_request(options.Values.from_flags(fv)) == asked
  assert fv.methods == "inversion,sdedit:0.5" and fv.without_injection is False
  # a request that names a method: the comparison's command leaves it to --methods (musickv-compare refuses it)
  sdedit = _request(audio=RECORDING, method="sdedit", init_noise_level=0.3).edit_request()
  line = options.compare_command_line("ckpt/sao", sdedit, "flowedit", True)
  assert "--edit_method" not in line and "--init_noise_level" not in line and "--nowithout_injection" not in line
