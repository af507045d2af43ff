"""latentloop: a local render daemon for text-to-audio loops. Imports nothing heavy."""

__version__ = "0.1.0"
