"""Models: loading by task (load.py) and the registry of adaptation methods (methods.py)."""
