"""The command lines: flags -> the library's settings, one-line errors, progress, provenance
records and outputs written as a set. One module per command (`musickv-<name>`); the library
never imports from here."""
