"""lmtune: fine-tune language models end to end, offline-first."""

__version__ = "0.1.0"
