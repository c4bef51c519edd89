"""What the commands leave on disk: output sets written atomically (sets.py), an edit's WAVs,
edit.json, spectrograms and listening page (edit.py, listening.py), the research charts
(charts.py) and the provenance record (record.py). The library's results in, files out; no flags."""
