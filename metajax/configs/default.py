"""The default configuration: MAML on sinusoid regression, which needs no data on disk.

Every named config in this package overrides fields of this one, flax-examples style.
"""
from metajax.training.config import Config


def get_config() -> Config:
    return Config()
