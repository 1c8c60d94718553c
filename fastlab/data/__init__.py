"""Data: the sources every option of the ``data`` group names, and the bunches that batch them.

Importing this package registers every built-in source (``fastlab.registry``): images
(digits, glyphs, points, folder, name_re, csv), masks (scenes, camvid), text (text_folder,
text_csv, pydocs) and tables (sklearn_table, table_csv).
"""

from fastlab.data.external import untar_data
from fastlab.data.images import sources as image_sources  # noqa: F401  (the modules that register)
from fastlab.data.images.bunch import DataBunch, TensorLoader, channel_stats
from fastlab.data.images.sources import Source
from fastlab.data.loader_bunch import LoaderBunch
from fastlab.data.masks import sources as mask_sources  # noqa: F401
from fastlab.data.split import seeded_split
from fastlab.data.tables import sources as table_sources  # noqa: F401
from fastlab.data.text import pydocs  # noqa: F401
from fastlab.data.text import sources as text_sources  # noqa: F401

__all__ = ["DataBunch", "LoaderBunch", "Source", "TensorLoader", "channel_stats", "seeded_split", "untar_data"]
