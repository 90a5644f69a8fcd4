"""Published top-1 accuracies to compare runs against (spec §8.1 paper table, §8.2 README).

Copied as data from ../shared/spec/paper_spec.md §8; every entry names its source. Keys follow the
configs: ``dataset`` is ``config.data.name`` ("cifar10", "cifar100", "cifar10_dvs",
"dvs128_gesture", "tiny_imagenet", "mnist"), ``arch`` is
``config.model.arch`` ("vgg8" ... "resnet18"; "resnet19"/"cnn5" for other papers' networks),
``variant`` is ``config.model.variant`` ("ei" = DeepEISNN, "bn" = BN-SNN, "dann"; "tebn" and
"backeisnn" for other methods) and ``T`` the number of time steps (None where the source does not
state it; such an entry matches a run of any T, and ``lookup`` flags it).

How far to trust them (spec "How far to trust each source"): the PAPER numbers are second-hand
(AI-written paper-note pages; the paper's Table 1 was not obtainable), the README numbers are
the reference repository's released checkpoints, i.e. the best test accuracy over 300 epochs of
one run with seed 2025 (spec §7.4).
"""

from __future__ import annotations

import dataclasses

PAPER_SOURCE = (
    "paper_spec.md §8.1 [PAPER*]: Liu, Ding, Yu, ICLR 2026 (arXiv 2509.23253) main-results "
    "table, second-hand via https://en.papernotes.org/ICLR2026/others/"
    "training_deep_normalization-free_spiking_neural_networks_with_lateral_inhibition/ "
    "(92.05 and 94.86 also in the sciencestack TL;DR); not checked against the PDF")
README_SOURCE = (
    "paper_spec.md §8.2 [README]: released checkpoints of github.com/vwOvOwv/DeepEISNN "
    "(README / Hugging Face model card huggingface.co/vwOvOwv/DeepEISNN)")


@dataclasses.dataclass(frozen=True)
class Result:
  """One published top-1 test accuracy (percent) and where it comes from."""
  dataset: str
  arch: str
  variant: str
  T: int | None
  top1: float
  source: str
  note: str = ""

  @property
  def key(self) -> tuple[str, str, str, int | None]:
    """(dataset, arch, variant, T), the matching key."""
    return (self.dataset, self.arch, self.variant, self.T)


def _paper(dataset, arch, variant, T, top1, note=""):
  return Result(dataset, arch, variant, T, top1, PAPER_SOURCE, note)


def _readme(dataset, arch, T, top1, note=""):
  return Result(dataset, arch, "ei", T, top1, README_SOURCE, note)


# spec §8.1: the paper's main-results table (second-hand).
PAPER: tuple[Result, ...] = (
    _paper("cifar10", "resnet18", "bn", None, 95.37,
           'listed as "Vanilla BN" (BN-SNN baseline, presumably); T not stated'),
    _paper("cifar10", "resnet19", "tebn", None, 94.70, "TEBN; T not stated"),
    _paper("cifar10", "resnet18", "ei", 4, 92.05, "DeepEISNN"),
    _paper("cifar10", "vgg16", "dann", None, 88.54,
           'DANN, labelled "ANN" in the table (maybe not spiking); T not applicable'),
    _paper("cifar10", "cnn5", "backeisnn", None, 90.93, "BackEISNN, 5-layer CNN; T not stated"),
    _paper("dvs128_gesture", "vgg8", "ei", 16, 94.86, "DeepEISNN"),
    _paper("cifar10_dvs", "vgg8", "ei", 10, 77.66, "DeepEISNN"),
    _paper("tiny_imagenet", "resnet18", "ei", 4, 50.29, "DeepEISNN"),
)

# spec §8.2: the reference README's released E-I checkpoints (best test accuracy).
README: tuple[Result, ...] = (
    _readme("cifar10", "resnet18", 4, 92.06),
    _readme("cifar10", "vgg8", 4, 87.03),
    _readme("cifar10", "vgg11", 4, 88.43),
    _readme("cifar10", "vgg16", 4, 91.01),
    _readme("cifar10", "vgg19", 4, 91.36),
    _readme("cifar100", "vgg16", 4, 65.90),
    _readme("cifar100", "vgg19", 4, 64.06),
    _readme("cifar10_dvs", "vgg8", 10, 78.40),
    _readme("cifar10_dvs", "vgg11", 10, 78.40),
    _readme("dvs128_gesture", "vgg8", 16, 95.83),
    _readme("tiny_imagenet", "resnet18", 4, 50.29),
)

RESULTS: dict[str, tuple[Result, ...]] = {"paper": PAPER, "readme": README}


def lookup(dataset: str, arch: str, variant: str, T: int | None) -> dict[str, Result]:
  """The published results matching a run: {"paper": Result, "readme": Result} (either absent).

  An exact (dataset, arch, variant, T) entry wins over one whose T is None (T not stated in the
  source); the latter's ``note`` says so.
  """
  out = {}
  for table, entries in RESULTS.items():
    exact = [r for r in entries if r.key == (dataset, arch, variant, T)]
    loose = [r for r in entries if r.T is None and r.key[:3] == (dataset, arch, variant)]
    if exact or loose:
      out[table] = (exact or loose)[0]
  return out
