"""Named configs: ``metajax train --config NAME``; each module has ``get_config()``."""
from metajax.configs.registry import CONFIGS, get_named_config

__all__ = ["CONFIGS", "get_named_config"]
