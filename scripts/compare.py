"""`python scripts/compare.py` from a clone: the same command as musickv-compare (musickv_jax/cli/compare.py)."""

from musickv_jax.cli.launch import compare

if __name__ == "__main__":
  compare()
