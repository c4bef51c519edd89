"""`python scripts/probe_layers.py` from a clone: the same command as musickv-probe-layers (musickv_jax/cli/probe_layers.py)."""

from musickv_jax.cli.probe_layers import main

if __name__ == "__main__":
  main()
