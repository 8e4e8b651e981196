"""Datasets and few-shot episode sampling."""
from metajax.data.episodes import Episode, check_episode_spec, sample_episode
from metajax.data.errors import DataError
from metajax.data.omniglot import (
    OmniglotSplits,
    default_cache_dir,
    load_omniglot,
    omniglot_split_indices,
    resolve_data_dir,
)
from metajax.data.sinusoid import sample_sinusoid_task

__all__ = [
    "DataError",
    "Episode",
    "OmniglotSplits",
    "check_episode_spec",
    "default_cache_dir",
    "load_omniglot",
    "omniglot_split_indices",
    "resolve_data_dir",
    "sample_episode",
    "sample_sinusoid_task",
]
