"""``python -m fastlab.serve``: the same as ``fastlab-serve``."""

from fastlab.serve import main

main()
