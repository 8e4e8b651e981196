"""Datasets and few-shot episode sampling."""
from metajax.data.archives import safe_extract
from metajax.data.cifar import load_cifar_fs, load_fc100
from metajax.data.episodes import Episode, check_episode_spec, sample_episode
from metajax.data.errors import DataError
from metajax.data.files import FewShotSplits, default_cache_dir, resolve_data_dir
from metajax.data.folder import load_folder
from metajax.data.host_stream import HostEpisodeStream, host_batch
from metajax.data.miniimagenet import load_miniimagenet
from metajax.data.omniglot import OmniglotSplits, load_omniglot, omniglot_split_indices
from metajax.data.omniglot_runs import OmniglotRuns, load_omniglot_runs
from metajax.data.ragged import RaggedImages, episode_indices, sample_ragged_episode
from metajax.data.sinusoid import sample_sinusoid_task
from metajax.data.sources import IMAGE_DATASETS, load_splits

__all__ = [
    "DataError",
    "Episode",
    "FewShotSplits",
    "HostEpisodeStream",
    "IMAGE_DATASETS",
    "OmniglotRuns",
    "OmniglotSplits",
    "RaggedImages",
    "check_episode_spec",
    "default_cache_dir",
    "episode_indices",
    "host_batch",
    "load_cifar_fs",
    "load_fc100",
    "load_folder",
    "load_miniimagenet",
    "load_omniglot",
    "load_omniglot_runs",
    "load_splits",
    "omniglot_split_indices",
    "resolve_data_dir",
    "safe_extract",
    "sample_ragged_episode",
    "sample_episode",
    "sample_sinusoid_task",
]
