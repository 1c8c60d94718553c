"""Images with per-pixel masks: the sources and the MaskBunch."""
