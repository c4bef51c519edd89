"""musickv-jax: MusicKV training-free music editing on Stable Audio Open, in JAX/Flax.

  from musickv_jax import load_model, pipeline
  model = load_model("ckpt/sao")   # converted checkpoint, unconverted checkpoint, or hub id

The Python API is `musickv_jax.pipeline`; the command lines are in `musickv_jax.cli`.
"""

__version__ = "0.2.0"


def __getattr__(name: str):
  # `import musickv_jax` stays light (the command lines parse their flags before JAX loads);
  # load_model brings in JAX, Orbax and the converter when it is first asked for.
  if name == "load_model":
    from musickv_jax.loading import load_model
    return load_model
  raise AttributeError(f"module 'musickv_jax' has no attribute {name!r}")
