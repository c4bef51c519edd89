"""Shared fixtures: tiny PyTorch references saved in real layouts and converted by our converter."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Commands run in-process by the tests convert into a cache of the test session, not the user's.
os.environ["MUSICKV_CACHE"] = tempfile.mkdtemp(prefix="musickv-test-cache-")
atexit.register(shutil.rmtree, os.environ["MUSICKV_CACHE"], True)

# One persistent compilation cache for the whole test run: the pytest-xdist workers, the commands
# they run in-process and the command lines they start as processes compile each program once
# (the same sampler chunk, VAE and text encoder programs recur in hundreds of tests). Made by the
# first process (xdist's controller), inherited by every other through the environment, removed
# at its exit. Tests of the cache itself, and of Ctrl-C while sampling, set their own.
if "MUSICKV_TEST_XLA_CACHE" not in os.environ:
  os.environ["MUSICKV_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="musickv-test-xla-")
  atexit.register(shutil.rmtree, os.environ["MUSICKV_TEST_XLA_CACHE"], True)
os.environ["MUSICKV_COMPILATION_CACHE"] = os.environ["MUSICKV_TEST_XLA_CACHE"]
os.environ["MUSICKV_COMPILATION_CACHE_MIN_S"] = "0.5"  # programs cheaper to compile than to read back stay out


def _use_the_runs_compilation_cache() -> None:
  import jax

  jax.config.update("jax_compilation_cache_dir", os.environ["MUSICKV_COMPILATION_CACHE"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ["MUSICKV_COMPILATION_CACHE_MIN_S"]))


_use_the_runs_compilation_cache()


@dataclasses.dataclass
class Converted:
  ref: object  # tests.reference.TinyReference
  path: Path  # converted checkpoint
  model: object  # musickv_jax.checkpoint.LoadedModel


def _convert(source, output, **kwargs):
  from musickv_jax.convert.pipeline import convert_checkpoint
  from musickv_jax.checkpoint import load_converted

  convert_checkpoint(source, output, log=lambda message: None, **kwargs)
  return load_converted(output)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Converted:
  """The tiny configs of docs/architecture.md (head_dim 8), diffusers layout, converted."""
  from tests.reference import build_reference

  root = tmp_path_factory.mktemp("tiny")
  ref = build_reference(root)
  return Converted(ref, root / "converted", _convert(ref.diffusers_dir, root / "converted"))


@pytest.fixture(scope="session")
def tiny64(tmp_path_factory) -> Converted:
  """head_dim 64 (rotary 32 like SAO), representable in stable-audio-tools too; diffusers layout."""
  from tests.reference import DIT_TINY_HD64, build_reference

  root = tmp_path_factory.mktemp("tiny64")
  ref = build_reference(root, dit_kwargs=DIT_TINY_HD64, seed=10)
  return Converted(ref, root / "converted", _convert(ref.diffusers_dir, root / "converted"))


@pytest.fixture(scope="session")
def tiny44k(tmp_path_factory):
  """configs/tiny (the demo model: 44.1 kHz, SAO's VAE strides, 24 layers), random weights written
  in the diffusers layout without torch and converted: for tests that read real audio files."""
  from musickv_jax.convert.export import build_tiny_tokenizer, write_diffusers_checkpoint
  from musickv_jax.config import named_config
  from musickv_jax.models.sao import random_params

  root = tmp_path_factory.mktemp("tiny44k")
  config = named_config("tiny")
  write_diffusers_checkpoint(root / "diffusers", config, random_params(config, 1),
                             build_tiny_tokenizer(config.t5.max_length))
  return Converted(None, root / "converted", _convert(root / "diffusers", root / "converted"))


@pytest.fixture(scope="session")
def sao_small(tmp_path_factory) -> Converted:
  """A tiny Stable Audio Open Small (rf_denoiser: ping-pong, q/k LayerNorm) in its released
  single-file layout (stable-audio-tools' model.safetensors + model_config.json), converted."""
  pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools reference is not installed (Makefile .test)")
  from tests import sat_reference as S

  root = tmp_path_factory.mktemp("sao_small")
  ref = S.build_tiny(root / "sat", "rf_denoiser", seed=21)
  return Converted(ref, root / "converted", _convert(root / "sat" / "model.safetensors", root / "converted",
                                                    t5_dir=ref.t5_dir))


@pytest.fixture(scope="session")
def sa3(tmp_path_factory) -> Converted:
  """A tiny random Stable Audio 3 pipeline (distilled: ping-pong) in the diffusers layout, converted
  (tests/sa3_reference.py)."""
  from tests.sa3_reference import build_sa3_reference

  root = tmp_path_factory.mktemp("sa3")
  ref = build_sa3_reference(root)
  return Converted(ref, root / "converted", _convert(ref.diffusers_dir, root / "converted"))


@pytest.fixture(scope="session")
def sa3_base(tmp_path_factory) -> Converted:
  """The -base kind of Stable Audio 3 (Euler, CFG), without differential attention and without
  memory tokens: the other options of the DiT."""
  from tests.sa3_reference import build_sa3_reference

  root = tmp_path_factory.mktemp("sa3_base")
  ref = build_sa3_reference(root, differential=False, memory_tokens=0, distilled=False, seed=7)
  return Converted(ref, root / "converted", _convert(ref.diffusers_dir, root / "converted"))


@pytest.fixture(scope="session")
def sa3_44k(tmp_path_factory) -> Converted:
  """configs/tiny-sa3 (44.1 kHz, Stable Audio 3's 4096x SAME, 4 layers with differential attention
  and memory tokens), random weights and the tiny Gemma tokenizer written as a converted checkpoint:
  for the commands that read real audio and compute music metrics."""
  from musickv_jax.checkpoint import load_converted, save_checkpoint
  from musickv_jax.config import named_config
  from musickv_jax.convert.export_sa3_text import build_tiny_gemma_tokenizer
  from musickv_jax.models.sao import random_params

  root = tmp_path_factory.mktemp("sa3_44k")
  config = named_config("tiny-sa3")
  save_checkpoint(root / "converted", config, random_params(config, 2), tokenizer=build_tiny_gemma_tokenizer(
      config.t5.vocab_size, model_max_length=config.t5.max_length), log=lambda message: None)
  return Converted(None, root / "converted", load_converted(root / "converted"))
