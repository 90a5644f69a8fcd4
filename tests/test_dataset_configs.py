"""Every config of the new datasets trains with ``:runlocal`` on synthetic data of its shape.

Spec §7.1 (DVS and Tiny-ImageNet rows, their BN counterparts) and §6.4 (MNIST MLPs). Time steps
are cut to 2 so the test stays fast on CPU; everything else is the config's own recipe shrunk by
``runlocal`` (batch 16, width 1/8, 4 steps).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib
from ei_snn_jax.training import train

REPO = pathlib.Path(__file__).resolve().parents[1]
NEW_CONFIGS = ("ei_cifar10dvs_vgg8", "ei_cifar10dvs_vgg11", "ei_dvsgesture_vgg8",
               "ei_tinyimagenet_resnet18", "bn_cifar10dvs_vgg8", "bn_cifar10dvs_vgg11",
               "bn_dvsgesture_vgg8", "bn_tinyimagenet_resnet18", "ei_mnist_mlp8",
               "bn_mnist_mlp8")
HYPER = {  # spec §7.1: (dataset, arch, variant, T, batch, lr, init_lr, warmup)
    "ei_cifar10dvs_vgg8": ("cifar10_dvs", "vgg8", "ei", 10, 32, 0.001, 1e-7, 10),
    "ei_cifar10dvs_vgg11": ("cifar10_dvs", "vgg11", "ei", 10, 32, 0.001, 1e-7, 10),
    "ei_dvsgesture_vgg8": ("dvs128_gesture", "vgg8", "ei", 16, 32, 0.001, 1e-7, 10),
    "ei_tinyimagenet_resnet18": ("tiny_imagenet", "resnet18", "ei", 4, 128, 0.003, 1e-3, 10),
    "bn_tinyimagenet_resnet18": ("tiny_imagenet", "resnet18", "bn", 4, 128, 0.1, 1e-7, 0),
}


@pytest.mark.parametrize("name", sorted(HYPER))
def test_reference_hyperparameters(name):
  c = config_lib.load_config(str(REPO / "configs" / f"{name}.py"))
  data, arch, variant, T, batch, lr, init_lr, warmup = HYPER[name]
  assert (c.data.name, c.model.arch, c.model.variant, c.model.T) == (data, arch, variant, T)
  assert (c.train.batch_size, c.optim.lr, c.optim.warmup_epochs) == (batch, lr, warmup)
  assert c.train.epochs == 300
  if warmup:
    assert c.optim.init_lr == init_lr
  assert c.optim.weight_decay == (5e-4 if variant == "ei" else 1e-4)


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_runlocal_trains_on_synthetic_data(name, tmp_path):
  spec = (f"{REPO}/configs/{name}.py:runlocal,data.source=synthetic,model.T=2,"
          f"data.synthetic_train_size=32,data.synthetic_test_size=16")
  c = config_lib.load_config(spec, ["train.progress_bar=False", "parallel.num_devices=1",
                                    "train.max_steps=2"])
  config_lib.validate_config(c, num_devices=1)
  summary = train.train_and_evaluate(c, tmp_path / "run")
  assert summary["step"] == 2
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
             .splitlines() if line.strip()]
  losses = [r["loss"] for r in records if "loss" in r]
  assert losses and np.isfinite(losses).all()
  assert 0.0 <= summary["final_test_accuracy"] <= 1.0
