"""Editing jobs at scale: the manifest format (manifest.py) and many edits as rows of one sampler
call over every device of a host (batching.py)."""
