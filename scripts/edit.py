"""`python scripts/edit.py` from a clone: the same command as musickv-edit (musickv_jax/cli/edit.py)."""

from musickv_jax.cli.launch import edit

if __name__ == "__main__":
  edit()
