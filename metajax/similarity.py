"""``metajax.similarity``: the representation-similarity metrics (see ``metajax.analysis.similarity``)."""
from metajax.analysis.similarity import (cca, cca_coefficients, linear_cka, pwcca, rbf_cka, rsa,
                                         rsa_matrix, svcca)

__all__ = ["cca", "cca_coefficients", "linear_cka", "pwcca", "rbf_cka", "rsa", "rsa_matrix",
           "svcca"]
