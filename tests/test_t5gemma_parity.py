"""Stable Audio 3's text encoder: our Flax T5Gemma encoder against transformers' T5GemmaEncoderModel, our Gemma
tokenisation against what diffusers' StableAudio3Pipeline.encode_prompt feeds the encoder, and the name table and
config reader.

The tiny reference: vocab 128 (the tiny tokenizer's), hidden 32, 4 layers alternating sliding / full attention with
sliding_window 4 (it binds at length 16), 4 heads over 2 key/value heads of 8, soft-cap 1.5 (scores reach it) and
query_pre_attn_scalar 4 (not head_dim); every parameter random, norm gains and the padding row of the embedding
included. It is saved with save_pretrained, read back from disk (transformers' rotary buffer is not saved, so the
reference is the reloaded model) and converted by our name table. Tolerance: max|ours - ref| <= 1e-5 max|ref|.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers import T5GemmaConfig as HFT5GemmaConfig
from transformers import T5GemmaEncoderModel, T5GemmaForConditionalGeneration

from musickv_jax.convert.export_sa3_text import SPECIAL_TOKENS, build_tiny_gemma_tokenizer
from musickv_jax.convert.t5gemma_tables import (convert_t5gemma, t5gemma_abstract, t5gemma_config_from_hf,
                                                t5gemma_ignored, t5gemma_prefix)
from musickv_jax.convert.tensors import read_safetensors
from musickv_jax.errors import ConfigError, ConversionError
from musickv_jax.models.t5gemma import T5GemmaEncoder
from musickv_jax.text_gemma import tokenize_gemma
from tests.parity import assert_parity, max_error_ratio

ENCODER_TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=4, attn_logit_softcapping=1.5,
                    sliding_window=4, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh")
LENGTH = 16
PROMPTS = ["Piano solo", "acoustic guitar, country, soft", "", "héllo wörld!!", "calm " * 300]


def randomize_parameters_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Every parameter random: matrices ~ N(0, 1/fan_in) (the embedding's padding row too), the (1 + w) norm gains
  w ~ N(0, 0.3^2). Buffers are left alone: the rotary inv_freq is derived, and not saved."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(noise * p.shape[1] ** -0.5 if p.ndim == 2 else 0.3 * noise)
  return model


@dataclasses.dataclass
class Tiny:
  folder: object
  ref: T5GemmaEncoderModel  # reloaded from the folder
  cfg: object  # our T5GemmaConfig, read from the folder's config.json
  params: dict  # converted from the folder's model.safetensors
  state: dict  # the folder's tensors, as our converter reads them


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
  folder = tmp_path_factory.mktemp("t5gemma") / "text_encoder"
  hf_config = HFT5GemmaConfig(encoder=ENCODER_TINY, decoder=ENCODER_TINY, is_encoder_decoder=False)
  randomize_parameters_(T5GemmaEncoderModel(hf_config), seed=11).save_pretrained(folder)
  ref = T5GemmaEncoderModel.from_pretrained(folder).eval()
  assert ref.config.encoder._attn_implementation == "eager"  # the reference path (no sdpa: soft-capping)
  cfg = t5gemma_config_from_hf(json.loads((folder / "config.json").read_text()), max_length=LENGTH)
  state = read_safetensors(folder / "model.safetensors")
  return Tiny(folder, ref, cfg, convert_t5gemma(state, cfg, str(folder)), state)


def _padded_batch(side: str, lengths=(11, 3), seed=0) -> tuple[np.ndarray, np.ndarray]:
  """Two prompts of different lengths, padded on `side` with <pad> (0): ids and mask (2, LENGTH) int64."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((len(lengths), LENGTH), np.int64)
  mask = np.zeros_like(ids)
  for row, n in enumerate(lengths):
    span = slice(0, n) if side == "right" else slice(LENGTH - n, LENGTH)
    ids[row, span] = rng.integers(5, ENCODER_TINY["vocab_size"], size=n)
    ids[row, span.start] = 2  # <bos>
    mask[row, span] = 1
  return ids, mask


def _ours(cfg, params, ids, mask) -> np.ndarray:
  return np.asarray(T5GemmaEncoder(cfg).apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                              jnp.asarray(mask, jnp.int32)))


def _reference(model, ids, mask) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


# ----------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("side", ["left", "right"])
def test_t5gemma_matches_transformers(tiny, side):
  """Valid and padded positions, two prompts of different lengths; with right padding the short prompt's far
  padded queries see no key at all in the sliding layers (the reference then averages every value; so do we)."""
  ids, mask = _padded_batch(side)
  ours, ref = _ours(tiny.cfg, tiny.params, ids, mask), _reference(tiny.ref, ids, mask)
  assert ours.shape == (2, LENGTH, ENCODER_TINY["hidden_size"]) and ours.dtype == np.float32
  valid = mask.astype(bool)
  assert_parity(ours[valid], ref[valid], what=f"T5Gemma, {side} padding, valid positions")
  assert_parity(ours[~valid], ref[~valid], what=f"T5Gemma, {side} padding, padded positions")


def test_padding_side_does_not_change_the_prompt_states(tiny):
  """Rotary positions are relative and padding is masked: a prompt's states do not depend on which side it was
  padded (up to rounding), in the reference and in ours."""
  right_ids, right_mask = _padded_batch("right")
  left_ids, left_mask = _padded_batch("left")
  right, left = _ours(tiny.cfg, tiny.params, right_ids, right_mask), _ours(tiny.cfg, tiny.params, left_ids, left_mask)
  for row, n in enumerate((11, 3)):
    assert_parity(left[row, LENGTH - n:], right[row, :n], what=f"prompt {row}: left against right padding")


@pytest.mark.parametrize("change", ["no soft-cap", "head_dim scaling", "all layers full", "window < sliding_window",
                                    "rotary base", "exact gelu", "norm gain w instead of 1 + w"])
def test_the_parity_test_sees_each_option(tiny, change):
  """Each option of the tiny config moves the output at least ten times the tolerance away from the reference, so
  the parity test above would catch it done wrong (including the window's off-by-one between transformers releases;
  the two GELUs are the closest pair, 3e-4 apart)."""
  cfg, params = tiny.cfg, tiny.params
  if change == "no soft-cap":
    cfg = dataclasses.replace(cfg, attn_logit_softcapping=None)
  elif change == "head_dim scaling":
    cfg = dataclasses.replace(cfg, query_pre_attn_scalar=float(cfg.head_dim))
  elif change == "all layers full":
    cfg = dataclasses.replace(cfg, layer_types=("full_attention",) * cfg.num_hidden_layers)
  elif change == "window < sliding_window":
    cfg = dataclasses.replace(cfg, sliding_window=cfg.sliding_window - 1)
  elif change == "rotary base":
    cfg = dataclasses.replace(cfg, rope_theta=100.0)
  elif change == "exact gelu":
    cfg = dataclasses.replace(cfg, hidden_activation="gelu")
  else:
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 1.0 if "norm" in jax.tree_util.keystr(path) else x, params)
  ids, mask = _padded_batch("left")
  ratio = max_error_ratio(_ours(cfg, params, ids, mask), _reference(tiny.ref, ids, mask))
  print(f"{change}: {ratio:.2e} x max|ref|")
  assert ratio > 1e-4


def test_bfloat16_is_close(tiny):
  """The bfloat16 matmul path runs and stays within bfloat16 distance of float32."""
  ids, mask = _padded_batch("left", seed=3)
  f32 = _ours(tiny.cfg, tiny.params, ids, mask)
  bf16 = _ours(dataclasses.replace(tiny.cfg, dtype="bfloat16"), tiny.params, ids, mask)
  assert bf16.dtype == np.float32 and np.all(np.isfinite(bf16))
  assert 0 < max_error_ratio(bf16, f32) < 5e-2


def test_full_t5gemma_checkpoint_converts(tmp_path):
  """A whole T5Gemma (T5GemmaForConditionalGeneration, as the hub and Stability's t5gemma-b-b-ul2/ folders hold it:
  `model.encoder.*`, `model.decoder.*`, config with is_encoder_decoder) gives its encoder; the decoder is ignored."""
  hf_config = HFT5GemmaConfig(encoder=ENCODER_TINY, decoder={**ENCODER_TINY, "num_hidden_layers": 2})
  randomize_parameters_(T5GemmaForConditionalGeneration(hf_config), seed=12).save_pretrained(tmp_path)
  full = T5GemmaForConditionalGeneration.from_pretrained(tmp_path).eval()
  state = read_safetensors(tmp_path / "model.safetensors")
  assert t5gemma_prefix(state) == "model.encoder" and any(t5gemma_ignored(n) for n in state)
  cfg = t5gemma_config_from_hf(json.loads((tmp_path / "config.json").read_text()), max_length=LENGTH)
  params = convert_t5gemma(state, cfg, str(tmp_path))
  ids, mask = _padded_batch("left", seed=5)
  assert_parity(_ours(cfg, params, ids, mask), _reference(full.model.encoder, ids, mask), what="T5Gemma, full model")


# ----------------------------------------------------------------------------- the name table


def test_layers_are_stacked(tiny):
  abstract = t5gemma_abstract(tiny.cfg)
  assert abstract["layers"]["attn"]["k"]["kernel"].shape == (4, 32, 2 * 8)  # (layers, hidden, kv_heads * head_dim)
  assert abstract["layers"]["pre_attn_norm"]["scale"].shape == (4, 32)
  assert abstract["embedding"].shape == (128, 32)


@pytest.mark.parametrize("fault", ["wrong shape", "missing", "unknown", "config with fewer layers"])
def test_name_table_refuses_by_name(tiny, fault):
  state, cfg = dict(tiny.state), tiny.cfg
  if fault == "wrong shape":
    name = "encoder.layers.1.self_attn.k_proj.weight"
    state[name] = np.zeros((32, 32), np.float32)  # q's shape: a config with as many kv heads as heads
  elif fault == "missing":
    name = "encoder.layers.3.mlp.up_proj.weight"
    del state[name]
  elif fault == "unknown":
    name = "encoder.layers.0.self_attn.q_norm.weight"
    state[name] = np.zeros((8,), np.float32)
  else:
    name = "encoder.layers.3.mlp.down_proj.weight"  # layer 3 is not part of a 3-layer model
    cfg = dataclasses.replace(cfg, num_hidden_layers=3, layer_types=cfg.layer_types[:3])
  with pytest.raises(ConversionError) as caught:
    convert_t5gemma(state, cfg, "tiny")
  message = str(caught.value)
  print(message)
  assert "\n" not in message and name in message  # the one line names the tensor


# ----------------------------------------------------------------------------- the config reader


def _config_json(tiny) -> dict:
  return json.loads((tiny.folder / "config.json").read_text())


def test_config_reader_reads_the_nested_encoder(tiny):
  raw = _config_json(tiny)
  assert raw["vocab_size"] != ENCODER_TINY["vocab_size"]  # the top level's vocab_size is not the encoder's
  cfg = t5gemma_config_from_hf(raw, max_length=256)
  assert (cfg.vocab_size, cfg.hidden_size, cfg.num_key_value_heads, cfg.head_dim) == (128, 32, 2, 8)
  assert cfg.layer_types == ("sliding_attention", "full_attention") * 2
  assert (cfg.query_pre_attn_scalar, cfg.attn_logit_softcapping, cfg.sliding_window) == (4.0, 1.5, 4)
  assert cfg.max_length == 256 and cfg.rope_theta == 10000.0
  # a transformers 4.x file: rope_theta at the encoder's top level, no layer_types (alternating by default)
  legacy = {**raw, "encoder": {k: v for k, v in raw["encoder"].items() if k not in ("rope_parameters", "layer_types")}}
  legacy["encoder"].update(rope_theta=500.0, rope_scaling=None)
  old = t5gemma_config_from_hf(legacy)
  assert old.rope_theta == 500.0 and old.layer_types == cfg.layer_types


@pytest.mark.parametrize("key, value, named", [
    ("rope_parameters", {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}, "rope_type"),
    ("attention_bias", True, "attention_bias"),
    ("hidden_activation", "relu", "hidden_activation"),
    ("layer_types", ["sliding_attention", "chunked_attention", "sliding_attention", "full_attention"],
     "chunked_attention"),
    ("num_key_value_heads", 3, "num_key_value_heads"),
])
def test_config_reader_refuses_unsupported_options(tiny, key, value, named):
  raw = _config_json(tiny)
  raw["encoder"] = {**raw["encoder"], key: value}
  with pytest.raises(ConfigError) as caught:
    t5gemma_config_from_hf(raw)
  message = str(caught.value)
  print(message)
  assert "\n" not in message and named in message


def test_config_reader_refuses_another_model():
  with pytest.raises(ConfigError, match="model_type 't5'"):
    t5gemma_config_from_hf({"model_type": "t5", "d_model": 32})
  with pytest.raises(ConfigError, match="'encoder'"):
    t5gemma_config_from_hf({"model_type": "t5gemma"})


# ----------------------------------------------------------------------------- the tokenizer


def _encode_prompt_inputs(tokenizer, encoder, prompts):
  """diffusers' StableAudio3Pipeline.encode_prompt, called on an object with only a tokenizer and a text encoder
  (the method uses nothing else): the ids and mask it feeds the encoder, and what it returns."""
  from diffusers import StableAudio3Pipeline

  fed = {}

  def record(module, args, kwargs):
    fed["ids"], fed["mask"] = args[0].numpy(), kwargs["attention_mask"].numpy()

  # its truncation warning decodes the whole padded batch (hundreds of <pad>s with left padding): not wanted here
  pipeline_log = logging.getLogger(StableAudio3Pipeline.__module__)
  level = pipeline_log.level
  pipeline_log.setLevel(logging.ERROR)
  handle = encoder.register_forward_pre_hook(record, with_kwargs=True)
  try:
    pipe = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=encoder)
    with torch.no_grad():
      embeds, mask = StableAudio3Pipeline.encode_prompt(pipe, prompts, "cpu", 1)
  finally:
    handle.remove()
    pipeline_log.setLevel(level)
  return fed, embeds.numpy(), mask.numpy()


@pytest.fixture(scope="module", params=[("left", True), ("right", True), ("left", False)],
                ids=["left-bos", "right-bos", "left-nobos"])
def gemma_tokenizer(request, tmp_path_factory):
  """The tiny Gemma tokenizer saved with save_pretrained and loaded back with AutoTokenizer."""
  side, bos = request.param
  folder = tmp_path_factory.mktemp("tokenizer")
  build_tiny_gemma_tokenizer(ENCODER_TINY["vocab_size"], padding_side=side, add_bos_token=bos).save_pretrained(folder)
  loaded = AutoTokenizer.from_pretrained(folder)
  assert type(loaded).__name__ == "GemmaTokenizer" and loaded.padding_side == side
  return folder, loaded, side, bos


def test_tiny_tokenizer_is_gemma_shaped(gemma_tokenizer):
  """Gemma's special ids; the folder's tokenizer.json read by the tokenizers library alone tokenizes as the loaded
  transformers tokenizer does; a character outside the vocabulary is <unk>; the build is deterministic."""
  from tokenizers import Tokenizer

  folder, tok, _, bos = gemma_tokenizer
  assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4] and len(tok) == 128
  assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
  raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
  for prompt in PROMPTS:
    assert raw.encode(prompt).ids == tok(prompt)["input_ids"]
  assert tok("")["input_ids"] == ([2] if bos else [])
  assert tok("é")["input_ids"] == ([2, 3] if bos else [3])
  assert tok.decode(tok("Piano solo, warm")["input_ids"], skip_special_tokens=True) == "Piano solo, warm"
  first, again = (build_tiny_gemma_tokenizer(128, add_bos_token=bos).backend_tokenizer.to_str() for _ in range(2))
  assert first == again


def test_tokenize_gemma_is_what_the_pipeline_feeds_the_encoder(gemma_tokenizer, tiny, caplog):
  """At the pipeline's 256 tokens: a short prompt, punctuation, the empty prompt (CFG's unconditional branch), an
  unknown character and a prompt of 300 words (truncated, and logged)."""
  _, tok, side, bos = gemma_tokenizer
  ids, mask = tokenize_gemma(tok, PROMPTS)
  fed, _, returned_mask = _encode_prompt_inputs(tok, tiny.ref, PROMPTS)
  assert ids.dtype == mask.dtype == np.int32 and ids.shape == (len(PROMPTS), 256)
  np.testing.assert_array_equal(ids, fed["ids"])
  np.testing.assert_array_equal(mask, fed["mask"])
  np.testing.assert_array_equal(mask, returned_mask)
  empty = ids[PROMPTS.index("")]
  expected_empty = [2] if bos else []
  assert list(empty[empty != 0]) == expected_empty
  if expected_empty:
    assert (empty[-1] if side == "left" else empty[0]) == 2
  assert mask[-1].all() and "prompt 5 is" in caplog.text  # the long prompt fills the window and is reported


def test_tokenize_gemma_follows_the_tokenizer_cap(gemma_tokenizer, tiny):
  """The pipeline pads to min(model_max_length, 256): a tokenizer capped at 16 gives 16 tokens, in both."""
  _, tok, _, _ = gemma_tokenizer
  tok.model_max_length = LENGTH
  try:
    ids, mask = tokenize_gemma(tok, PROMPTS)
    fed, _, _ = _encode_prompt_inputs(tok, tiny.ref, PROMPTS)
  finally:
    tok.model_max_length = int(1e30)
  assert ids.shape == (len(PROMPTS), LENGTH)
  np.testing.assert_array_equal(ids, fed["ids"])
  np.testing.assert_array_equal(mask, fed["mask"])


# ----------------------------------------------------------------------------- end to end


def test_prompt_text_to_hidden_states(gemma_tokenizer, tiny):
  """prompt text -> tokenize_gemma -> our converted encoder equals prompt text -> StableAudio3Pipeline.encode_prompt
  with the tiny torch encoder (16 tokens, so the sliding window binds), every position."""
  _, tok, side, _ = gemma_tokenizer
  tok.model_max_length = LENGTH
  try:
    ids, mask = tokenize_gemma(tok, PROMPTS)
    _, embeds, _ = _encode_prompt_inputs(tok, tiny.ref, PROMPTS)
  finally:
    tok.model_max_length = int(1e30)
  ours = _ours(tiny.cfg, tiny.params, ids, mask)
  assert_parity(ours, embeds, what=f"prompt -> T5Gemma states ({side} padding), every position")
  valid = mask.astype(bool)
  assert_parity(ours[valid], embeds[valid], what=f"prompt -> T5Gemma states ({side} padding), prompt tokens")
