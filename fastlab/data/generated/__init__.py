"""Data fastlab makes itself, offline: glyphs, scenes and points images."""
