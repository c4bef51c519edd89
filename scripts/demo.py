"""`python scripts/demo.py` from a clone: the same command as musickv-demo (musickv_jax/cli/demo.py)."""

from musickv_jax.cli.demo import main

if __name__ == "__main__":
  main()
