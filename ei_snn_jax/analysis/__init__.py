"""Looking inside a network: per-layer probes and the paper's reference numbers.

* ``probes``: firing rates and E-I current statistics of every layer for any batch.
* ``paper_results``: the paper's and the reference README's accuracies, with sources (spec §8).
"""
