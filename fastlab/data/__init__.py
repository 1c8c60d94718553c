"""Data: the sources every option of the ``data`` group names, and the bunches that batch them.

Importing this package registers every built-in source (``fastlab.registry``): images
(digits, glyphs, points, folder, name_re, csv), masks (scenes, camvid), text (text_folder,
text_csv, pydocs) and tables (sklearn_table, table_csv).
"""

from fastlab.data import masks, pydocs, sources, tabular, text_sources  # noqa: F401  (they register)
from fastlab.data.bunch import DataBunch, TensorLoader, channel_stats
from fastlab.data.external import untar_data
from fastlab.data.loader_bunch import LoaderBunch
from fastlab.data.sources import Source
from fastlab.data.split import seeded_split

__all__ = ["DataBunch", "LoaderBunch", "Source", "TensorLoader", "channel_stats", "seeded_split", "untar_data"]
