"""The converter: both layouts give the same parameters, the name tables invert, and every bad
input gets a clear error that names the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from musickv_jax.convert.pipeline import convert_checkpoint, convert_source
from musickv_jax.convert.sources import read_source
from musickv_jax.convert.tensors import ConversionError, read_safetensors
from musickv_jax.checkpoint import load_converted as load_model
from musickv_jax.errors import CheckpointError
from tests.reference import write_sat_checkpoint

REPO = Path(__file__).resolve().parent.parent


def quiet(message):
  del message


def convert(source, output, **kwargs):
  return convert_checkpoint(source, output, log=quiet, **kwargs)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------- layouts


@pytest.fixture(scope="module")
def sat_files(tiny64, tmp_path_factory):
  root = tmp_path_factory.mktemp("sat")
  weights, t5_dir = write_sat_checkpoint(tiny64.ref, root / "sat")
  ckpt, _ = write_sat_checkpoint(tiny64.ref, root / "satckpt", as_ckpt=True)
  return weights, ckpt, t5_dir


def test_sat_single_file_gives_the_same_params(tiny64, sat_files, tmp_path):
  weights, _, t5_dir = sat_files
  model = load_model(convert(weights, tmp_path / "out", t5_dir=t5_dir))
  assert model.config.dit == tiny64.model.config.dit
  assert model.config.vae == tiny64.model.config.vae
  assert model.config.conditioner == tiny64.model.config.conditioner
  assert_trees_equal(model.params, tiny64.model.params)


def test_sat_ckpt_pickle_gives_the_same_params(tiny64, sat_files, tmp_path):
  _, ckpt, t5_dir = sat_files
  # The SAT folder form: the directory holding model.ckpt + model_config.json.
  model = load_model(convert(ckpt.parent, tmp_path / "out", t5_dir=t5_dir))
  assert_trees_equal(model.params, tiny64.model.params)


def test_sat_t5_from_a_diffusers_checkpoint(tiny64, sat_files, tmp_path):
  weights, _, _ = sat_files
  model = load_model(convert(weights, tmp_path / "out", t5_dir=tiny64.ref.diffusers_dir))
  assert_trees_equal(model.params.t5, tiny64.model.params.t5)


def test_sat_model_config_override(sat_files, tmp_path):
  weights, _, t5_dir = sat_files
  moved = tmp_path / "weights" / "model.safetensors"
  moved.parent.mkdir()
  shutil.copy(weights, moved)
  with pytest.raises(ConversionError, match="no model_config.json beside it; pass model_config"):
    convert(moved, tmp_path / "a", t5_dir=t5_dir)
  convert(moved, tmp_path / "b", t5_dir=t5_dir, model_config=weights.parent / "model_config.json")


def test_name_tables_invert_exactly(tiny64):
  """torch -> ours -> torch reproduces every tensor (weight norm re-factored: same folded weight)."""
  from musickv_jax.convert.export import to_torch_state_dicts

  exported = to_torch_state_dicts(tiny64.model.config, tiny64.model.params)
  originals = {"dit": tiny64.ref.dit, "t5": tiny64.ref.t5, "conditioner": tiny64.ref.projection}
  for name, module in originals.items():
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    assert set(exported[name]) == set(state), name
    for key, value in state.items():
      np.testing.assert_array_equal(exported[name][key], value, err_msg=key)
  vae_state = {k: v.numpy() for k, v in tiny64.ref.vae.state_dict().items()}
  assert set(exported["vae"]) == set(vae_state)
  for key in vae_state:
    if key.endswith("weight_v"):
      g, v = vae_state[key[:-1] + "g"], vae_state[key]
      eg, ev = exported["vae"][key[:-1] + "g"], exported["vae"][key]
      fold = lambda g, v: g * v / np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=(1, 2), keepdims=True))  # noqa
      np.testing.assert_allclose(fold(eg, ev), fold(g, v), rtol=1e-6, atol=1e-7, err_msg=key)
    elif not key.endswith("weight_g"):
      np.testing.assert_array_equal(exported["vae"][key], vae_state[key], err_msg=key)


def test_ints_stored_as_floats_are_accepted(tiny, tmp_path):
  src = tmp_path / "src"
  shutil.copytree(tiny.ref.diffusers_dir, src)
  cfg_path = src / "transformer" / "config.json"
  cfg = json.loads(cfg_path.read_text())
  cfg["sample_size"] = float(cfg["sample_size"])
  cfg["num_layers"] = float(cfg["num_layers"])
  cfg_path.write_text(json.dumps(cfg))
  assert read_source(src).config.dit == tiny.model.config.dit
  cfg["num_layers"] = 2.5
  cfg_path.write_text(json.dumps(cfg))
  with pytest.raises(ConversionError, match="'num_layers' should be an integer, found 2.5"):
    read_source(src)


def test_bfloat16_storage(tiny, tmp_path):
  model = load_model(convert(tiny.ref.diffusers_dir, tmp_path / "bf16", dtype="bfloat16"))
  assert {str(leaf.dtype) for leaf in jax.tree.leaves(model.params)} == {"bfloat16"}
  f32 = jax.tree.leaves(tiny.model.params)
  for a, b in zip(jax.tree.leaves(model.params), f32):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=1e-2, atol=1e-6)


def test_loaded_model_has_a_working_tokenizer(tiny):
  from musickv_jax.text import tokenize
  ids, mask = tokenize(tiny.model.tokenizer, ["piano solo", "acoustic guitar, country, soft"],
                       tiny.model.config.t5.max_length)
  assert ids.shape == mask.shape == (2, tiny.model.config.t5.max_length)
  assert ids[0, int(mask[0].sum()) - 1] == 1  # ends with </s>
  assert mask[0].sum() < mask[1].sum()


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def diffusers_copy(tiny, tmp_path):
  dst = tmp_path / "src"
  shutil.copytree(tiny.ref.diffusers_dir, dst)
  return dst


def _edit_transformer_weights(root: Path, edit):
  path = root / "transformer" / "diffusion_pytorch_model.safetensors"
  tensors = {k: np.array(v) for k, v in read_safetensors(path).items()}
  edit(tensors)
  save_file(tensors, str(path))


def no_leftovers(parent: Path):
  return not any(p.name.startswith(".") and "partial" in p.name for p in parent.iterdir())


def test_missing_tensor_is_named_with_its_shape(diffusers_copy, tmp_path):
  _edit_transformer_weights(diffusers_copy, lambda t: t.pop("transformer_blocks.1.attn1.to_k.weight"))
  with pytest.raises(ConversionError) as err:
    convert(diffusers_copy, tmp_path / "out")
  msg = str(err.value)
  assert "\n" not in msg and "tensor transformer_blocks.1.attn1.to_k.weight (shape (32, 32)) is missing" in msg
  assert "1 missing tensor(s)" in err.value.details
  assert "transformer_blocks.1.attn1.to_k.weight: expected shape (32, 32)" in err.value.details
  assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_unexpected_tensor_is_named(diffusers_copy, tmp_path):
  _edit_transformer_weights(diffusers_copy, lambda t: t.update({"extra.lora_A.weight": np.zeros((2, 3), np.float32)}))
  with pytest.raises(ConversionError, match=r"tensor extra.lora_A.weight \(shape \(2, 3\)\) is not part of this model"):
    convert(diffusers_copy, tmp_path / "out")
  assert not (tmp_path / "out").exists()
  convert(diffusers_copy, tmp_path / "out", allow_unexpected=True)  # the escape hatch works
  assert (tmp_path / "out" / "musickv_checkpoint.json").is_file()


def test_shape_mismatches_list_expected_and_found(diffusers_copy, tmp_path):
  cfg_path = diffusers_copy / "transformer" / "config.json"
  cfg = json.loads(cfg_path.read_text())
  cfg["time_proj_dim"] = 32  # the weights were saved with 16
  cfg_path.write_text(json.dumps(cfg))
  with pytest.raises(ConversionError) as err:
    convert(diffusers_copy, tmp_path / "out")
  msg = str(err.value)
  assert "\n" not in msg and "tensor time_proj.weight has shape (8,) but the model config needs (16,)" in msg
  assert "2 problems in all" in msg
  assert "time_proj.weight: expected (16,), found (8,)" in err.value.details
  assert "timestep_proj.0.weight: expected (32, 32), found (32, 16)" in err.value.details


def test_unknown_layout_says_what_it_looked_for(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConversionError, match="unknown checkpoint layout; looked for model_index.json .diffusers., "
                                            "model.safetensors or model.ckpt with model_config.json"):
    convert(tmp_path / "empty", tmp_path / "out")


def test_diffusers_missing_folder(diffusers_copy, tmp_path):
  shutil.rmtree(diffusers_copy / "vae")
  with pytest.raises(ConversionError, match=r"missing the folder\(s\) vae/"):
    convert(diffusers_copy, tmp_path / "out")


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "tiny"])
def test_corrupt_safetensors_is_one_line_naming_the_file(diffusers_copy, tmp_path, damage):
  path = diffusers_copy / "transformer" / "diffusion_pytorch_model.safetensors"
  data = path.read_bytes()
  if damage == "truncate":
    path.write_bytes(data[: len(data) // 2])
  elif damage == "garbage_header":
    path.write_bytes(data[:8] + b"{not json" + data[17:])
  else:
    path.write_bytes(b"abc")
  with pytest.raises(ConversionError) as err:
    convert(diffusers_copy, tmp_path / "out")
  msg = str(err.value)
  assert "\n" not in msg
  assert str(path) in msg and "not a valid safetensors file" in msg
  assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_ckpt_without_torch_says_use_safetensors(sat_files, tmp_path, monkeypatch):
  _, ckpt, t5_dir = sat_files
  import builtins
  real_import = builtins.__import__

  def no_torch(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
      raise ImportError("No module named 'torch'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_torch)
  with pytest.raises(ConversionError, match="needs torch to read; install torch, or use the checkpoint's "
                                            ".safetensors file instead"):
    convert(ckpt, tmp_path / "out", t5_dir=t5_dir)


def test_ckpt_is_loaded_weights_only(sat_files, tmp_path, capfd):
  """A pickle that would run code on load is refused, not executed, in one line that names what it
  would have imported and does not repeat torch's advice to load it with weights_only=False or to
  allow-list its globals (issue 29, item 5: both would run it)."""
  _, _, t5_dir = sat_files
  evil = tmp_path / "evil" / "model.ckpt"
  evil.parent.mkdir()
  shutil.copy(sat_files[1].parent / "model_config.json", evil.parent)

  class Boom:
    def __reduce__(self):
      return (print, ("pwned",))

  torch.save({"state_dict": {"x": Boom()}}, evil)
  with pytest.raises(ConversionError, match="cannot be read as a weights-only PyTorch checkpoint") as info:
    convert(evil, tmp_path / "out", t5_dir=t5_dir)
  message = str(info.value)
  assert "(Unsupported global: GLOBAL builtins.print was not an allowed global by default); nothing in it was run" \
      in message or "(Unsupported global: GLOBAL print was not an allowed global by default); nothing in it was run" \
      in message, message
  for advice in ("weights_only=False", "weights_only", "safe_globals", "trust", "can still be loaded", "\x1b", "\n"):
    assert advice not in message, (advice, message)
  assert "pwned" not in capfd.readouterr().out
  garbage = tmp_path / "garbage" / "model.ckpt"
  garbage.parent.mkdir()
  shutil.copy(sat_files[1].parent / "model_config.json", garbage.parent)
  garbage.write_bytes(b"not a pickle at all")
  with pytest.raises(ConversionError) as info:
    convert(garbage, tmp_path / "out2", t5_dir=t5_dir)
  assert "cannot be read as a weights-only PyTorch checkpoint" in str(info.value)
  assert "weights_only" not in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_sat_without_t5_dir(sat_files, tmp_path):
  with pytest.raises(ConversionError, match="does not contain T5; pass t5_dir"):
    convert(sat_files[0], tmp_path / "out")


def test_existing_output_needs_overwrite(tiny, tmp_path):
  out = convert(tiny.ref.diffusers_dir, tmp_path / "out")
  with pytest.raises(ConversionError, match="already exists; choose another output directory or set overwrite"):
    convert(tiny.ref.diffusers_dir, out)
  convert(tiny.ref.diffusers_dir, out, overwrite=True)
  load_model(out)
  assert no_leftovers(tmp_path)


def test_missing_source(tmp_path):
  with pytest.raises(ConversionError, match="no such file or directory"):
    convert(tmp_path / "nope", tmp_path / "out")


def test_cli_success_and_one_line_errors(tiny, tmp_path):
  ok = subprocess.run([sys.executable, "-m", "convert", "--source", str(tiny.ref.diffusers_dir),
                       "--output", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr
  assert "dit" in ok.stdout and "params" in ok.stdout and "MiB" in ok.stdout
  bad = tmp_path / "bad"
  shutil.copytree(tiny.ref.diffusers_dir, bad)
  (bad / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 4)
  res = subprocess.run([sys.executable, "-m", "convert", "--source", str(bad), "--output", str(tmp_path / "o2")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert res.returncode == 1
  assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: ")
  assert "Traceback" not in res.stderr
  assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- loading


def test_load_errors(tiny, tmp_path):
  with pytest.raises(CheckpointError, match="no such directory"):
    load_model(tmp_path / "nope")
  with pytest.raises(CheckpointError, match="is not a converted musickv-jax checkpoint"):
    load_model(tiny.ref.diffusers_dir)
  broken = tmp_path / "broken"
  shutil.copytree(tiny.path, broken)
  cfg = json.loads((broken / "config.json").read_text())
  cfg["dit"]["depth"] = 3
  (broken / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(CheckpointError, match=r"do not match its config.json"):
    load_model(broken)


def test_convert_source_reports_every_component(tiny):
  src = read_source(tiny.ref.diffusers_dir)
  lines = []
  params = convert_source(src, log=lines.append)
  assert set(params) == {"dit", "vae", "t5", "conditioner"}
  assert [line.split()[0] for line in lines] == ["dit", "vae", "t5", "conditioner"]
