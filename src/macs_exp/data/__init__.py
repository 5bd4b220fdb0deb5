"""Offline rating datasets (MovieLens, BookCrossing, Douban-Book, generic tables) for the rating env."""

from macs_exp.data.dataset import RatingData
from macs_exp.data.loaders import FORMATS, DataError, RatingSource, read_ratings, resolve_source
from macs_exp.data.preprocess import build_rating_data, load_rating_data

__all__ = [
    "FORMATS",
    "DataError",
    "RatingData",
    "RatingSource",
    "build_rating_data",
    "load_rating_data",
    "read_ratings",
    "resolve_source",
]
