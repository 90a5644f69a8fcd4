"""The CIFAR training system: configs, optimizer, the jitted step and loop, checkpoints, metrics.

* ``config``: the config schema (``base_config``), the ``:arg`` of config files, validation,
  the saved ``config.json`` and the run fingerprint.
* ``optim``: SGD with warmup + cosine and the weight-decay / unused-parameter masks (spec §7.2–7.3).
* ``train``: ``train_and_evaluate(config, workdir)``, the sharded jitted train and eval steps.
* ``rng``: the named PRNG streams of a run (init, augment, dropout) and per-step keys.
* ``checkpointing``: orbax latest-N and best checkpoints with shape-checked restore.
* ``metrics``: the JSONL / TensorBoard metrics log and its reader.
* ``replicas``: several seeds vmapped in one run.
"""
