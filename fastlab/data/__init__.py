"""Data: sources (digits, folder, name_re, csv) and the DataBunch that batches them."""

from fastlab.data.bunch import DataBunch, TensorLoader, channel_stats
from fastlab.data.external import untar_data
from fastlab.data.sources import SOURCES, Source
from fastlab.data.split import seeded_split

__all__ = ["SOURCES", "DataBunch", "Source", "TensorLoader", "channel_stats", "seeded_split", "untar_data"]
