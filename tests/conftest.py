"""Shared fixtures: tiny PyTorch references saved in real layouts and converted by our converter."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Commands run in-process by the tests convert into a cache of the test session, not the user's,
# and keep compiled programs in memory only.
os.environ["MUSICKV_CACHE"] = tempfile.mkdtemp(prefix="musickv-test-cache-")
atexit.register(shutil.rmtree, os.environ["MUSICKV_CACHE"], True)
os.environ["MUSICKV_COMPILATION_CACHE"] = "0"


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
