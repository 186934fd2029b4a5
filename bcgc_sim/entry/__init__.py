"""The entry layer: the only part of bcgc_sim that composes master, workers and the model.

`cli` is the `bcgc` command (also `python -m bcgc_sim`); the public Python API will sit beside
it. Nothing below this package imports it, and bcgc_sim/__init__.py does not either: master
imports bcgc_sim, so that would close a circle at import time.
"""
