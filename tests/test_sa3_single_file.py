"""Stability AI's single-file Stable Audio 3 layout (convert/sa3_single_file.py): a tiny random SA3 pipeline
(tests/sa3_reference.py) written in that layout by the inverse of diffusers' conversion script
(tests/sa3_single_file_reference.py) converts to exactly what its diffusers folder converts to, parameter by
parameter bit for bit and with the same config; wrong shapes and options are refused in one line."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from musickv_jax.checkpoint import load_converted
from musickv_jax.convert.pipeline import convert_checkpoint
from musickv_jax.convert.sa3_single_file import is_sa3_single_file, read_sa3_single_file
from musickv_jax.convert.sources import read_source
from musickv_jax.errors import ConversionError
from tests import sa3_single_file_reference as S


@dataclasses.dataclass
class Pair:
  weights: Path  # Stability's model.safetensors (model_config.json and t5gemma-b-b-ul2/ beside it)
  config: dict  # its model_config.json
  from_diffusers: object  # LoadedModel converted from the diffusers folder
  from_single: object  # LoadedModel converted from the single file


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Pair:
  root = tmp_path_factory.mktemp("sa3_single")
  ref = S.build_stability_reference(root)
  weights = S.write_single_file(ref, root / "stability")
  quiet = {"log": lambda message: None}
  convert_checkpoint(ref.diffusers_dir, root / "from_diffusers", **quiet)
  convert_checkpoint(weights, root / "from_single", **quiet)
  return Pair(weights, json.loads((weights.parent / "model_config.json").read_text()),
              load_converted(root / "from_diffusers"), load_converted(root / "from_single"))


def test_every_parameter_is_bit_identical_to_the_diffusers_conversion(pair):
  ours = jax.tree_util.tree_flatten_with_path(pair.from_single.params)[0]
  theirs = dict(jax.tree_util.tree_flatten_with_path(pair.from_diffusers.params)[0])
  assert [path for path, _ in ours] == list(theirs)
  for path, leaf in ours:
    other = theirs[path]
    name = jax.tree_util.keystr(path)
    assert leaf.dtype == other.dtype and leaf.shape == other.shape, name
    assert np.array_equal(np.asarray(leaf), np.asarray(other)), name


def test_the_config_equals_the_diffusers_conversion(pair):
  ours, theirs = pair.from_single.config, pair.from_diffusers.config
  assert ours.family == "sa3" and ours.diffusion.objective == "rf_denoiser"
  assert ours.replace(name="") == theirs.replace(name="")


def test_it_is_told_from_a_stable_audio_open_config(pair):
  assert is_sa3_single_file(pair.config)
  sao = {"model": {"conditioning": {"configs": [{"id": "prompt", "type": "t5", "config": {}}]},
                   "pretransform": {"config": {"encoder": {"type": "oobleck", "config": {"strides": [2, 4]}}}}}}
  assert not is_sa3_single_file(sao)


def _reread(pair, tmp_path, tensors: dict, config: dict | None = None):
  """read_source on a copy of the single file with `tensors` and `config` instead (the T5Gemma folder is the
  fixture's)."""
  folder = tmp_path / "edited"
  folder.mkdir()
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / "model.safetensors"))
  (folder / "model_config.json").write_text(json.dumps(config or pair.config))
  return read_source(str(folder), t5_dir=pair.weights.parent / S.T5_FOLDER)


def test_a_wrong_shaped_tensor_is_refused_under_its_own_name(pair, tmp_path):
  tensors = load_file(str(pair.weights))
  name = "model.model.transformer.layers.1.ff.ff.0.proj.weight"
  tensors[name] = tensors[name][:-2]
  with pytest.raises(ConversionError) as caught:
    _reread(pair, tmp_path, tensors)
  message = str(caught.value)
  assert "\n" not in message and name in message and "(254, 64)" in message and "(256, 64)" in message


def test_the_text_encoder_in_the_file_and_zero_padding(pair, tmp_path):
  """A trained encoder saved in the file (enable_grad) is laid over the folder's weights, as the script loads it;
  padding_mode 'zero' gives diffusers' zero padding embedding."""
  tensors = load_file(str(pair.weights))
  del tensors["conditioner.conditioners.prompt.padding_embedding"]
  trained = np.full((S.R.COND_DIM,), 0.25, np.float32)
  tensors["conditioner.conditioners.prompt.model.encoder.norm.weight"] = trained
  config = copy.deepcopy(pair.config)
  config["model"]["conditioning"]["configs"][0]["config"].update(padding_mode="zero", enable_grad=True)
  source = _reread(pair, tmp_path, tensors, config)
  assert source.layout == "sa3-single-file"
  assert np.array_equal(source.state_dicts["t5"]["encoder.norm.weight"], trained)
  assert "encoder.layers.0.mlp.up_proj.weight" in source.state_dicts["t5"]  # the rest from the folder
  assert not source.state_dicts["dit"]["prompt_padding_embedding"].any()


def _set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split(".")
  for key in parents:
    tree = tree[int(key)] if isinstance(tree, list) else tree[key]
  if value is _DELETE:
    del tree[leaf]
  else:
    tree[leaf] = value


_DELETE = object()
_DIT = "model.diffusion.config"
_ENC = "model.pretransform.config.encoder.config"
_DEC = "model.pretransform.config.decoder.config"
_DURATION = "model.conditioning.configs.1.config"


@pytest.mark.parametrize("path, value, named", [
    (f"{_DIT}.use_flash_attention", True, f"{_DIT}.use_flash_attention"),  # unknown
    (f"{_ENC}.dyt", False, f"{_ENC}.dyt"),  # unsupported value
    ("model.diffusion.diffusion_objective", "v", "model.diffusion.diffusion_objective"),
    (f"{_DIT}.num_heads", 2, "head dim"),  # 32 < 64: Stability's rotary width differs from diffusers'
    (f"{_DIT}.norm_kwargs.eps", 1e-5, f"{_DIT}.norm_kwargs.eps"),  # one RMSNorm epsilon
    (f"{_DIT}.global_cond_type", _DELETE, f"{_DIT}.global_cond_type"),  # Stability's default 'prepend'
    # Stability's default (1) and the script's (384) disagree
    (f"{_DURATION}.max_val", _DELETE, "model.conditioning.configs[1].config.max_val"),
    ((f"{_ENC}.sliding_window", f"{_DEC}.sliding_window"), [1, 2], f"{_ENC}.sliding_window = [1, 2]"),  # symmetric
    (f"{_ENC}.sliding_window", [1, 2], f"{_ENC}.sliding_window = [1, 2]"),  # one value for the encoder and decoder
    (f"{_DEC}.ff_mult", 3, f"{_DEC}.ff_mult"),
])
def test_an_option_it_cannot_convert_is_refused_in_one_line(pair, tmp_path, path, value, named):
  config = copy.deepcopy(pair.config)
  for each in (path,) if isinstance(path, str) else path:
    _set(config, each, value)
  edited = tmp_path / "model_config.json"
  edited.write_text(json.dumps(config))
  with pytest.raises(ConversionError) as caught:
    read_sa3_single_file(pair.weights, edited, None)
  message = str(caught.value)
  assert "\n" not in message and named in message, message


def test_the_folder_form_dispatches_to_this_reader(pair, tmp_path):
  folder = tmp_path / "copy"
  shutil.copytree(pair.weights.parent, folder)
  source = read_source(str(folder))  # model.safetensors + model_config.json + t5gemma-b-b-ul2/ beside it
  assert source.layout == "sa3-single-file" and source.config.replace(name="") == \
      pair.from_diffusers.config.replace(name="")
