"""cvtool: understand, train, run and cross-check convolutional networks.

The core package (this one, minus `cvtool.cli`) imports only the standard library and numpy,
and never a backend: backends are handed in as objects.
"""

__version__ = "0.1.0"
