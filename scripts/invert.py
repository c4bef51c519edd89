"""`python scripts/invert.py` from a clone: the same command as musickv-invert (musickv_jax/cli/invert.py)."""

from musickv_jax.cli.launch import invert

if __name__ == "__main__":
  invert()
