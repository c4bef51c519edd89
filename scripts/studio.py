"""`python scripts/studio.py` from a clone: the same command as musickv-studio (musickv_jax/cli/studio/command.py)."""

from musickv_jax.cli.launch import studio

if __name__ == "__main__":
  studio()
