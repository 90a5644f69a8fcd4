"""The CIFAR training system: configs, optimizer, the jitted steps and loop, checkpoints, metrics.

* ``config``: the config schema (``base_config``), the ``:arg`` of config files, validation.
* ``run_config``: the run fingerprint and the config a workdir keeps in ``config.json``.
* ``optim``: SGD with warmup + cosine and the weight-decay / unused-parameter masks (spec §7.2–7.3).
* ``train``: ``train_and_evaluate(config, workdir)``: open the run, the loop, the summary.
* ``experiment``: config, model, optimizer, dataset placement and device mesh of a run.
* ``distributed``: the multi-host start and its watchdog.
* ``steps``: the training state and the one train, probe and eval step.
* ``batches``: the batch sources (epoch table on the devices, host feed) the steps take.
* ``actions``: the loop's periodic actions (probes, NaN guard, logs, evaluation, checkpoints,
  stop signals) and the run's records.
* ``evaluation``: test loss and accuracy.
* ``guards``: the NaN guard's message and the divergence guard.
* ``rng``: the named PRNG streams of a run (init, augment, dropout) and per-step keys.
* ``checkpointing``: orbax latest-N and best checkpoints with shape-checked restore.
* ``metrics``: the JSONL / TensorBoard metrics log, its reader and the progress bar.
* ``replicas``: several seeds vmapped in one run; the replica axis.
"""
