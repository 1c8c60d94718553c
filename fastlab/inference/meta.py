"""A saved model's metadata as inference reads it: :class:`~fastlab.models.meta.ModelMeta`, the
one shape training keeps on the Learner and ``model.pt`` and bundles record.

:meth:`ModelMeta.from_dict` reads the ``task`` key, takes that task's ``Task.meta_type`` from the
registry, and builds and checks it: an image model's meta has ``n_in``/``size``/``mean``/``std``
(``fastlab.tasks.images.ImageMeta``), a text model's its ``vocab``, a table model's its
``procs``. ``to_dict`` gives plain JSON data, which is what a bundle's ``meta.json`` holds.
"""

from __future__ import annotations

from fastlab.models.meta import ModelMeta

__all__ = ["ModelMeta"]
