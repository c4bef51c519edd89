"""`python scripts/demo.py` from a clone: the same command as musickv-demo (musickv_jax/cli/demo.py)."""

from musickv_jax.cli.launch import demo

if __name__ == "__main__":
  demo()
