"""Our Oobleck VAE against diffusers' AutoencoderOobleck (encode mean / std, decode)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musickv_jax.models.oobleck import OobleckVAE
from tests.parity import assert_parity

pytestmark = pytest.mark.fast  # part of `make test-fast`


def _vae(conv):
  vae = OobleckVAE(conv.model.config.vae)
  return vae, {"params": conv.model.params.vae}


def test_encode_matches_diffusers(tiny):
  vae, variables = _vae(tiny)
  hop = tiny.model.config.vae.hop_length
  audio = np.random.default_rng(1).uniform(-1, 1, size=(2, 2, hop * 24)).astype(np.float32)
  dist = vae.apply(variables, jnp.asarray(audio), method=vae.encode)
  with torch.no_grad():
    ref = tiny.ref.vae.encode(torch.from_numpy(audio)).latent_dist
  assert_parity(dist.mean, ref.mean.numpy(), what="VAE encode mean")
  assert_parity(dist.std, ref.std.numpy(), what="VAE encode std")


def test_decode_matches_diffusers(tiny):
  vae, variables = _vae(tiny)
  latents = np.random.default_rng(2).normal(size=(2, tiny.model.config.vae.latent_dim, 20)).astype(np.float32)
  audio = vae.apply(variables, jnp.asarray(latents), method=vae.decode)
  with torch.no_grad():
    ref = tiny.ref.vae.decode(torch.from_numpy(latents)).sample.numpy()
  assert audio.shape == (2, 2, 20 * tiny.model.config.vae.hop_length)
  assert_parity(audio, ref, what="VAE decode")


def test_sampled_latent_uses_std(tiny):
  import jax
  vae, variables = _vae(tiny)
  audio = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, size=(1, 2, 64)).astype(np.float32))
  dist = vae.apply(variables, audio, method=vae.encode)
  a, b = dist.sample(jax.random.key(0)), dist.sample(jax.random.key(1))
  assert not np.allclose(a, b)
  noise = (np.asarray(a) - np.asarray(dist.mean)) / np.asarray(dist.std)
  np.testing.assert_allclose(noise, np.asarray(jax.random.normal(jax.random.key(0), dist.mean.shape)), atol=1e-4)

