"""fastlab: fast.ai's training practice as config-driven, sweepable, comparable research runs."""

__version__ = "0.1.0"
