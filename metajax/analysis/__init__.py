"""Representation analysis: similarity metrics and the feature-reuse studies."""
from metajax._lazy import lazy_exports

_EXPORTS = {name: "metajax.analysis.similarity"
            for name in ("cca", "cca_coefficients", "linear_cka", "pwcca", "rbf_cka", "rsa",
                         "rsa_matrix", "svcca")}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
