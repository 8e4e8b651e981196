"""Raghu et al. (2020) Table 1, Omniglot 20-way 1-shot, ANIL: MAML's protocol
(``raghu_table1_omniglot20w1s_maml``) with the inner loop on the head only. NIL is this run
evaluated with ``metajax eval RUN --head nil``."""
from metajax.configs import raghu_table1_omniglot20w1s_maml


def get_config():
    return raghu_table1_omniglot20w1s_maml.get_config().replace(algo="anil")
