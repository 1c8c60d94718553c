"""Images with labels or points: decoding, the file-based sources, the DataBunch."""
