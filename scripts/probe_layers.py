"""`python scripts/probe_layers.py` from a clone: the same command as musickv-probe-layers (musickv_jax/cli/probe_layers.py)."""

from musickv_jax.cli.launch import probe_layers

if __name__ == "__main__":
  probe_layers()
