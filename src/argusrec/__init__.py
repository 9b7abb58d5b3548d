"""argusrec: autoregressive recommender transformers (the ARGUS recipe) on user event logs."""

__version__ = "0.1.0"
