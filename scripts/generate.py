"""`python scripts/generate.py` from a clone: the same command as musickv-generate (musickv_jax/cli/generate.py)."""

from musickv_jax.cli.launch import generate

if __name__ == "__main__":
  generate()
