"""Data: reading labelled files (load.py) and splitting them (split.py)."""
