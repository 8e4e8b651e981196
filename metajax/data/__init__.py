"""Datasets and few-shot episode sampling."""
from metajax._lazy import lazy_exports


_EXPORTS = {
    "DataError": "metajax.data.errors",
    "Episode": "metajax.data.episodes",
    "FewShotSplits": "metajax.data.files",
    "HostEpisodeStream": "metajax.data.host_stream",
    "IMAGE_DATASETS": "metajax.data.sources",
    "OmniglotRuns": "metajax.data.omniglot_runs",
    "OmniglotSplits": "metajax.data.omniglot",
    "RaggedImages": "metajax.data.ragged",
    "check_episode_spec": "metajax.data.episodes",
    "default_cache_dir": "metajax.data.files",
    "episode_indices": "metajax.data.ragged",
    "host_batch": "metajax.data.host_stream",
    "load_cifar_fs": "metajax.data.cifar",
    "load_fc100": "metajax.data.cifar",
    "load_folder": "metajax.data.folder",
    "load_miniimagenet": "metajax.data.miniimagenet",
    "load_omniglot": "metajax.data.omniglot",
    "load_omniglot_runs": "metajax.data.omniglot_runs",
    "load_splits": "metajax.data.sources",
    "omniglot_split_indices": "metajax.data.omniglot",
    "resolve_data_dir": "metajax.data.files",
    "safe_extract": "metajax.data.archives",
    "sample_class_batch": "metajax.data.batches",
    "sample_episode": "metajax.data.episodes",
    "sample_ragged_episode": "metajax.data.ragged",
    "sample_sinusoid_task": "metajax.data.sinusoid",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
