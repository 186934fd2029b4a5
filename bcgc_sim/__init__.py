"""bcgc-sim: block coordinate gradient coding, predicted and measured."""

__version__ = "0.1.0"
