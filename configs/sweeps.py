"""Named groups of runs for a sweep launcher: ``SWEEPS[name]`` is a list of (config spec, seeds).

A config spec is what ``--config`` takes (a path relative to the repository root, optionally with
``:ARG``); each seed becomes one run, ``--config.seed=SEED`` in its own workdir. ``runs(name)``
expands a sweep into that form:

  from configs import sweeps
  for run in sweeps.runs("paper_cifar10"):
    print(f"python -m experiments.train --config {run['config']} --workdir runs/{run['name']} "
          + " ".join(f"--config.{o}" for o in run["overrides"]))

Seeds: the reference trains every config once with seed 2025 (spec §7.4), so the paper sweeps do
the same; ``seed_variance`` repeats two runs over three seeds to put the single-seed numbers in
context.
"""

from __future__ import annotations

from typing import Any

PAPER_SEED = (2025,)
THREE_SEEDS = (2025, 2026, 2027)

SWEEPS: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    # E-I SNN, CIFAR-10 (spec §7.1; README targets 87.03 / 88.43 / 91.01 / 91.36 / 92.06).
    "paper_cifar10": [
        ("configs/ei_cifar10_vgg8.py", PAPER_SEED),
        ("configs/ei_cifar10_vgg11.py", PAPER_SEED),
        ("configs/ei_cifar10_vgg16.py", PAPER_SEED),
        ("configs/ei_cifar10_vgg19.py", PAPER_SEED),
        ("configs/ei_cifar10_resnet18.py", PAPER_SEED),
    ],
    # E-I SNN, CIFAR-100 (README targets 65.90 / 64.06).
    "paper_cifar100": [
        ("configs/ei_cifar100_vgg16.py", PAPER_SEED),
        ("configs/ei_cifar100_vgg19.py", PAPER_SEED),
    ],
    # E-I SNN, DVS sets at 48x48 (README targets 78.40 / 78.40 / 95.83) and Tiny-ImageNet (50.29).
    "paper_dvs": [
        ("configs/ei_cifar10dvs_vgg8.py", PAPER_SEED),
        ("configs/ei_cifar10dvs_vgg11.py", PAPER_SEED),
        ("configs/ei_dvsgesture_vgg8.py", PAPER_SEED),
    ],
    "paper_tinyimagenet": [
        ("configs/ei_tinyimagenet_resnet18.py", PAPER_SEED),
    ],
    # The spiking MLPs (spec §6.4) on MNIST: no paper number, a check that they train.
    "mlp_mnist": [
        ("configs/ei_mnist_mlp8.py", PAPER_SEED),
        ("configs/bn_mnist_mlp8.py", PAPER_SEED),
    ],
    # BN-SNN and spiking-DANN baselines.
    "baselines": [
        ("configs/bn_cifar10_vgg16.py", PAPER_SEED),
        ("configs/bn_cifar10_vgg19.py", PAPER_SEED),
        ("configs/bn_cifar10_resnet18.py", PAPER_SEED),
        ("configs/bn_cifar100_vgg16.py", PAPER_SEED),
        ("configs/bn_cifar100_vgg19.py", PAPER_SEED),
        ("configs/bn_cifar100_resnet18.py", PAPER_SEED),
        ("configs/bn_cifar10dvs_vgg8.py", PAPER_SEED),
        ("configs/bn_cifar10dvs_vgg11.py", PAPER_SEED),
        ("configs/bn_dvsgesture_vgg8.py", PAPER_SEED),
        ("configs/bn_tinyimagenet_resnet18.py", PAPER_SEED),
        ("configs/dann_cifar10_vgg16.py", PAPER_SEED),
        ("configs/dann_cifar10_vgg19.py", PAPER_SEED),
        ("configs/dann_cifar10_resnet18.py", PAPER_SEED),
    ],
    # Spec §8.3: each E-I component removed from EI CIFAR10-VGG16 (plus the full model).
    "ablations": [
        ("configs/ei_cifar10_vgg16.py", PAPER_SEED),
        ("configs/ablations/no_ei_init.py", PAPER_SEED),
        ("configs/ablations/no_stabilization.py", PAPER_SEED),
        ("configs/ablations/no_ste.py", PAPER_SEED),
        ("configs/ablations/no_wei_grad_scaling.py", PAPER_SEED),
    ],
    # Seed-to-seed spread of the headline runs.
    "seed_variance": [
        ("configs/ei_cifar10_vgg16.py", THREE_SEEDS),
        ("configs/ei_cifar10_resnet18.py", THREE_SEEDS),
    ],
    # The quick-start run.
    "quick": [
        ("configs/default.py", PAPER_SEED),
    ],
}

# Every run config in its tiny mode (a few steps each): a smoke test of the whole sweep set.
SWEEPS["smoke"] = [
    (path + ":runlocal", PAPER_SEED)
    for path in dict.fromkeys(p for name in ("paper_cifar10", "paper_cifar100", "baselines",
                                             "ablations", "quick") for p, _ in SWEEPS[name])
]


def run_name(config_spec: str, seed: int) -> str:
  """Workdir name of a run, e.g. ("configs/ablations/no_ste.py:runlocal", 7) -> the name
  "ablations_no_ste_runlocal_s7"."""
  path, _, arg = config_spec.partition(".py")
  stem = path.removeprefix("configs/").replace("/", "_")
  arg = arg.lstrip(":").replace(",", "_").replace("=", "-")
  return f"{stem}_{arg}_s{seed}" if arg else f"{stem}_s{seed}"


def runs(name: str) -> list[dict[str, Any]]:
  """The runs of sweep ``name``: dicts with "config" (spec), "seed", "overrides" and "name"."""
  if name not in SWEEPS:
    raise KeyError(f"unknown sweep {name!r}: choose one of {', '.join(SWEEPS)}")
  return [dict(config=spec, seed=seed, overrides=[f"seed={seed}"], name=run_name(spec, seed))
          for spec, seeds in SWEEPS[name] for seed in seeds]
