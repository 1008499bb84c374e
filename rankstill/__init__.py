"""rankstill: distil a slow ranker into a small, fast student and serve it."""

__version__ = "0.1.0"
