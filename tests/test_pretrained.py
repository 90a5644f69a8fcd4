"""The authors' released checkpoints (spec §8.2, §12): import -> export is the identity, the
imported models run, every misfit is one error line, and ``experiments.evaluate --pretrained``.

The real files could not be downloaded here, so the state dicts are built from random arrays with
the reference's key names and shapes, spelled out below from spec §12 (independently of the key
map in ``ei_snn_jax.models.pretrained``).
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import types

import jax
import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")

from ei_snn_jax import models  # noqa: E402
from ei_snn_jax.models import pretrained  # noqa: E402
from ei_snn_jax.data import registry as data_registry  # noqa: E402
from ei_snn_jax.training import config as config_lib  # noqa: E402
from ei_snn_jax.training import pretrained as released_lib  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Reference state dicts, from the text of spec §12.

VGG = {8: (64, "P", 128, "P", 256, "P", 512, "P", 512, "P"),
       16: (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P",
            512, 512, 512, "P")}
DATASETS = {"CIFAR10": (3, 10, False), "CIFAR100": (3, 100, False), "CIFAR10DVS": (2, 10, True)}


def ei_conv(out, conv, norm, n_e, c_in, k):
  out[f"{conv}.conv_ee.weight"] = (n_e, c_in, k, k)
  out[f"{conv}.conv_ie.weight"] = (n_e // 4, c_in, k, k)
  out[f"{norm}.weight_ei"] = (n_e, n_e // 4)
  out[f"{norm}.gain_i"] = (n_e // 4, 1, 1)
  out[f"{norm}.gain_e"] = (n_e, 1, 1)
  out[f"{norm}.bias"] = (n_e, 1, 1)


def ei_head(out, linear, norm, classes):
  out[f"{linear}.weight_ee"] = (classes, 512)
  out[f"{linear}.weight_ie"] = (classes // 4, 512)
  out[f"{norm}.weight_ei"] = (classes, classes // 4)
  out[f"{norm}.gain_i"] = (1, classes // 4)
  out[f"{norm}.gain_e"] = (1, classes)
  out[f"{norm}.bias"] = (1, classes)


def bn_conv(out, conv, bn, n, c_in, k):
  out[f"{conv}.conv.weight"] = (n, c_in, k, k)
  for name in ("weight", "bias", "running_mean", "running_var"):
    out[f"{bn}.bn.{name}"] = (n,)
  out[f"{bn}.bn.num_batches_tracked"] = ()


def vgg_shapes(kind: str, depth: int, dataset: str) -> dict[str, tuple]:
  """{key: shape} of a reference VGG: index 0 AddTemporalDim (static only), then Merge; a conv
  entry takes 6 modules (E-I) or 5 (BN), a pool 1, then Flatten and the head."""
  c, classes, sequence = DATASETS[dataset]
  out, i = {}, 1 if sequence else 2
  for v in VGG[depth]:
    if v == "P":
      i += 1
      continue
    if kind == "EI-SNN":
      ei_conv(out, f"layers.{i}", f"layers.{i + 1}", v, c, 3)
      i += 6
    else:
      bn_conv(out, f"layers.{i}", f"layers.{i + 1}", v, c, 3)
      i += 5
    c = v
  i += 1
  if kind == "EI-SNN":
    ei_head(out, f"layers.{i}", f"layers.{i + 1}", classes)
  else:
    out[f"layers.{i}.linear.weight"] = (classes, 512)
    out[f"layers.{i}.linear.bias"] = (classes,)
  return out


def resnet_shapes(kind: str, dataset: str) -> dict[str, tuple]:
  """{key: shape} of a reference SEW-ResNet-18 (spec §12)."""
  c, classes, _ = DATASETS[dataset]
  out = {}
  ei = kind == "EI-SNN"
  conv = ei_conv if ei else bn_conv
  norm = "norm" if ei else "bn"
  conv(out, "conv1", f"{norm}1", 64, c, 3)
  c = 64
  for s, width in enumerate((64, 128, 256, 512), start=1):
    for b in range(2):
      p = f"layer{s}.{b}"
      conv(out, f"{p}.conv1", f"{p}.{norm}1", width, c, 3)
      conv(out, f"{p}.conv2", f"{p}.{norm}2", width, width, 3)
      if s > 1 and b == 0:
        conv(out, f"{p}.downsample.0", f"{p}.downsample.1", width, c, 1)
      c = width
  if ei:
    ei_head(out, "fc", "final_ei_norm", classes)
  else:
    out["fc.linear.weight"] = (classes, 512)
    out["fc.linear.bias"] = (classes,)
  return out


def reference_config(kind: str, arch: str, depth: int, dataset: str, T: int = 4) -> dict:
  """config.json as the reference's training YAML (configs/EI-SNN/*.yaml, as JSON)."""
  cfg = {"dataset": dataset, "data_path": "/path/to/datasets", "type": kind, "arch": arch,
         "num_layers": depth, "T": T}
  if kind == "EI-SNN":
    cfg["ei_ratio"] = 4
  if arch == "VGG":
    cfg.update(light_classifier=True, dropout=0.0)
  else:
    cfg["zero_init_residual"] = False
  cfg["neuron"] = {"tau": 2.0}
  cfg.update(epochs=300, batch_size=128 if "DVS" not in dataset else 32,
             learning_rate=0.001 if kind == "EI-SNN" else 0.1, optimizer="SGD", momentum=0.9,
             weight_decay=0.0005 if kind == "EI-SNN" else 0.0001, scheduler="CosALR", loss="CE",
             output_dir="/path/to/output")
  if kind == "EI-SNN":
    cfg["warmup_epochs"] = 10
  return cfg


def random_state_dict(shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
  """Random float32 tensors of these shapes, scaled so that the spiking layers stay active."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in shapes.items():
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
      out[key] = np.array(391 * 300, np.int64)
      continue
    if name in ("gain_i", "gain_e", "running_var") or key.endswith("bn.weight"):
      a = rng.uniform(0.5, 1.5, shape)
    elif name == "bias" and ".bn." not in key and ".linear." not in key:
      a = rng.normal(0.5, 0.5, shape)                     # b_E
    elif name == "weight_ei":
      a = rng.uniform(0.0, 2.0 / shape[1], shape)
    elif len(shape) >= 2:                                 # W_EE, W_IE, conv and linear weights
      a = rng.exponential(1.0 / np.prod(shape[1:]), shape)
    else:
      a = rng.normal(0.0, 0.1, shape)
    out[key] = a.astype(np.float32)
  return out


CASES = {  # name: (config.json, {key: shape}, number of keys stated in spec §12 or None)
    "ei_vgg8": (reference_config("EI-SNN", "VGG", 8, "CIFAR10"), vgg_shapes("EI-SNN", 8, "CIFAR10"),
                36),
    "ei_vgg16_cifar100": (reference_config("EI-SNN", "VGG", 16, "CIFAR100"),
                          vgg_shapes("EI-SNN", 16, "CIFAR100"), None),
    "ei_vgg8_dvs": (reference_config("EI-SNN", "VGG", 8, "CIFAR10DVS", T=10),
                    vgg_shapes("EI-SNN", 8, "CIFAR10DVS"), 36),
    "bn_vgg16": (reference_config("BN-SNN", "VGG", 16, "CIFAR10"),
                 vgg_shapes("BN-SNN", 16, "CIFAR10"), 80),
    "ei_resnet18": (reference_config("EI-SNN", "ResNet", 18, "CIFAR10"),
                    resnet_shapes("EI-SNN", "CIFAR10"), 126),
    "bn_resnet18": (reference_config("BN-SNN", "ResNet", 18, "CIFAR10"),
                    resnet_shapes("BN-SNN", "CIFAR10"), 122),
}


def write_released(folder: pathlib.Path, case: str, seed: int = 0,
                   state_dict: dict | None = None, config: dict | None = None) -> pathlib.Path:
  """A released-model folder (model.safetensors as PyTorch writes it, config.json)."""
  cfg, shapes, _ = CASES[case]
  folder.mkdir(parents=True, exist_ok=True)
  sd = random_state_dict(shapes, seed) if state_dict is None else state_dict
  safetensors_numpy.save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
  (folder / "config.json").write_text(json.dumps(cfg if config is None else config, indent=2))
  return folder


# ------------------------------------------------------------------------------------------------
# The key map.


def test_key_counts_and_indices_are_those_of_spec_section_12():
  assert {case: len(shapes) for case, (_, shapes, n) in CASES.items() if n} == {
      case: n for case, (_, _, n) in CASES.items() if n}
  ei8, dvs8, bn16 = (CASES[c][1] for c in ("ei_vgg8", "ei_vgg8_dvs", "bn_vgg16"))
  assert "layers.2.conv_ee.weight" in ei8 and ei8["layers.38.weight_ee"] == (10, 512)
  assert ei8["layers.39.gain_i"] == (1, 2)
  assert "layers.1.conv_ee.weight" in dvs8 and dvs8["layers.1.conv_ee.weight"] == (64, 2, 3, 3)
  assert "layers.37.weight_ee" in dvs8 and "layers.38.bias" in dvs8
  assert bn16["layers.73.linear.weight"] == (10, 512)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_key_map_is_the_reference_state_dict(case):
  cfg, shapes, _ = CASES[case]
  layout = pretrained.reference_layout(cfg)
  assert [t.key for t in layout] == list(shapes)   # same keys, in the reference's order
  assert {t.key: t.torch_shape for t in layout} == shapes


def test_parameter_counts_equal_the_reference():
  """Spec §11.3 (BatchNorm running statistics are buffers, not parameters)."""
  def count(case):
    return sum(int(np.prod(s)) for k, s in CASES[case][1].items()
               if "running" not in k and "num_batches" not in k)
  assert count("bn_vgg16") == 14_724_042
  assert count("ei_resnet18") == 14_401_226
  assert count("bn_resnet18") == 11_173_962
  assert count("ei_vgg16_cifar100") == 18_916_917


# ------------------------------------------------------------------------------------------------
# Import -> export.


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_then_export_is_the_identity(case, tmp_path):
  source = write_released(tmp_path / "CIFAR10-X", case)
  released = pretrained.load_pretrained(source)          # checks against the Flax model too
  out = pretrained.save_pretrained(tmp_path / "exported", released)
  a = safetensors_numpy.load_file(str(source / "model.safetensors"))
  b = safetensors_numpy.load_file(str(out / "model.safetensors"))
  assert list(a) == list(b)
  for key in a:
    assert (a[key].shape, a[key].dtype) == (b[key].shape, b[key].dtype), key
    assert a[key].tobytes() == b[key].tobytes(), key
  assert (source / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
  assert json.loads((out / "config.json").read_text()) == CASES[case][0]


def test_layouts_are_converted_torch_to_flax(tmp_path):
  sd = random_state_dict(CASES["ei_vgg8"][1])
  released = pretrained.load_pretrained(write_released(tmp_path / "m", "ei_vgg8", state_dict=sd))
  p = released.variables["params"]
  np.testing.assert_array_equal(p["conv0"]["ei"]["w_ee"],
                                sd["layers.2.conv_ee.weight"].transpose(2, 3, 1, 0))  # OIHW->HWIO
  assert p["conv1"]["ei"]["w_ee"][2, 0, 5, 7] == sd["layers.9.conv_ee.weight"][7, 5, 2, 0]
  np.testing.assert_array_equal(p["head"]["ei"]["w_ee"], sd["layers.38.weight_ee"].T)
  np.testing.assert_array_equal(p["conv0"]["ei"]["w_ei"], sd["layers.3.weight_ei"])
  np.testing.assert_array_equal(p["conv0"]["ei"]["g_i"], sd["layers.3.gain_i"][:, 0, 0])
  np.testing.assert_array_equal(p["head"]["ei"]["bias"], sd["layers.39.bias"][0])
  assert set(released.variables) == {"params"} and released.buffers == {}


def torch_conv(x, w):
  """PyTorch Conv2d(stride 1, padding k//2, no bias) in numpy: NCHW input, OIHW weight."""
  k = w.shape[-1]
  xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
  h, v = x.shape[2], x.shape[3]
  return sum(np.einsum("oi,nihw->nohw", w[:, :, a, b], xp[:, :, a:a + h, b:b + v])
             for a in range(k) for b in range(k))


def test_imported_layers_compute_the_reference_currents(tmp_path):
  """An E-I conv and the output layer on the imported parameters give the currents of the
  reference's EiConv2d + EiNorm2d and EiLinear + EiNorm1d (spec §1.2-1.3), computed here in
  numpy from the file's tensors in PyTorch layouts."""
  from ei_snn_jax import layers
  sd = random_state_dict(CASES["ei_vgg8"][1])
  p = pretrained.load_pretrained(write_released(tmp_path / "m", "ei_vgg8", state_dict=sd))
  p = p.variables["params"]
  x = np.random.default_rng(2).uniform(size=(2, 3, 8, 8)).astype(np.float64)   # NCHW
  i_ee = torch_conv(x, sd["layers.2.conv_ee.weight"])
  i_ie = torch_conv(x, sd["layers.2.conv_ie.weight"])
  w_ei = sd["layers.3.weight_ei"]
  i_bal = i_ee - np.einsum("ei,nihw->nehw", w_ei, i_ie)
  i_shunt = np.einsum("ei,nihw->nehw", w_ei, sd["layers.3.gain_i"] * i_ie)
  want = sd["layers.3.gain_e"] * i_bal / i_shunt + sd["layers.3.bias"]
  got = layers.EIConv(64).apply({"params": p["conv0"]["ei"]}, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=2e-4, atol=1e-5)
  h = np.random.default_rng(3).integers(0, 2, size=(2, 512)).astype(np.float64)  # spikes
  i_ie = h @ sd["layers.38.weight_ie"].T
  want = h @ sd["layers.38.weight_ee"].T - i_ie @ sd["layers.39.weight_ei"].T
  got = layers.EIHead(10).apply({"params": p["head"]["ei"]}, h)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-5)


def test_batchnorm_statistics_go_to_batch_stats(tmp_path):
  sd = random_state_dict(CASES["bn_resnet18"][1])
  released = pretrained.load_pretrained(write_released(tmp_path / "m", "bn_resnet18",
                                                       state_dict=sd))
  v = released.variables
  bn = v["params"]["stage1_block0"]["downsample"]["bn_conv"]
  np.testing.assert_array_equal(bn["kernel"], sd["layer2.0.downsample.0.conv.weight"]
                                .transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(bn["bn"]["scale"], sd["layer2.0.downsample.1.bn.weight"])
  np.testing.assert_array_equal(v["batch_stats"]["stem"]["bn_conv"]["bn"]["var"],
                                sd["bn1.bn.running_var"])
  np.testing.assert_array_equal(v["params"]["head"]["dense"]["kernel"], sd["fc.linear.weight"].T)
  assert released.buffers["bn1.bn.num_batches_tracked"] == 391 * 300


# ------------------------------------------------------------------------------------------------
# The imported models run.


@pytest.mark.parametrize("case", ["ei_vgg8", "ei_vgg8_dvs", "bn_vgg16", "ei_resnet18",
                                  "bn_resnet18"])
def test_imported_logits_are_finite_and_deterministic(case, tmp_path):
  folder = write_released(tmp_path / "m", case)
  released = pretrained.load_pretrained(folder)
  x = np.random.default_rng(1).uniform(size=released.input_shape(2)).astype(np.float32)
  if released.dataset.sequence:
    x = np.floor(4 * x)                                   # event counts (T, B, 48, 48, 2)
    assert x.shape == (10, 2, 48, 48, 2)
  logits = np.asarray(released.predict(x))
  assert logits.shape == (2, released.num_classes)
  assert np.all(np.isfinite(logits)) and np.any(logits != 0)
  again = np.asarray(pretrained.load_pretrained(folder).predict(x))
  assert logits.tobytes() == again.tobytes()


@pytest.mark.parametrize("case", ["ei_vgg16_cifar100", "bn_resnet18"])
def test_the_project_config_builds_the_same_model(case, tmp_path):
  released = pretrained.load_pretrained(write_released(tmp_path / "m", case))
  config = released_lib.pretrained_config(released)
  config_lib.validate_config(config)
  model = models.create_model(config.model, released.num_classes)
  x = jax.ShapeDtypeStruct(released.input_shape(2), np.float32)
  init = lambda m: jax.eval_shape(lambda x: m.init(jax.random.key(0), x), x)
  shapes = lambda v: jax.tree.map(lambda l: l.shape, {k: v[k] for k in ("params", "batch_stats")
                                                      if k in v})
  assert shapes(init(model)) == shapes(init(released.model))
  assert shapes(init(model)) == jax.tree.map(np.shape, released.variables)


def test_config_fields_follow_config_json(tmp_path):
  cfg = released_lib.pretrained_config(
      pretrained.load_pretrained(write_released(tmp_path / "m", "ei_vgg16_cifar100")))
  assert (cfg.data.name, cfg.model.arch, cfg.model.variant, cfg.model.T, cfg.model.ei_ratio) == (
      "cifar100", "vgg16", "ei", 4, 4)
  assert (cfg.optim.lr, cfg.optim.warmup_epochs, cfg.optim.weight_decay, cfg.train.epochs) == (
      0.001, 10, 0.0005, 300)
  bn = released_lib.pretrained_config(
      pretrained.load_pretrained(write_released(tmp_path / "b", "bn_resnet18")),
      ["data.path=/data/cifar10.npz"])
  assert (bn.model.variant, bn.optim.lr, bn.optim.warmup_epochs, bn.data.path) == (
      "bn", 0.1, 0, "/data/cifar10.npz")
  dvs = pretrained.config_fields(CASES["ei_vgg8_dvs"][0])
  assert (dvs["data.name"], dvs["model.T"]) == ("cifar10_dvs", 10)


# ------------------------------------------------------------------------------------------------
# Every misfit is one line naming it.


def one_line_error(folder) -> str:
  with pytest.raises(pretrained.PretrainedError) as info:
    pretrained.load_pretrained(folder)
  message = str(info.value)
  assert "\n" not in message
  return message


def test_a_missing_key_is_named(tmp_path):
  sd = random_state_dict(CASES["ei_vgg8"][1])
  del sd["layers.16.conv_ie.weight"]
  message = one_line_error(write_released(tmp_path / "m", "ei_vgg8", state_dict=sd))
  assert "missing key layers.16.conv_ie.weight (expected shape (64, 128, 3, 3);" in message


def test_an_extra_key_is_named(tmp_path):
  sd = random_state_dict(CASES["bn_resnet18"][1])
  sd["layer4.1.bn3.bn.weight"] = np.ones(512, np.float32)
  message = one_line_error(write_released(tmp_path / "m", "bn_resnet18", state_dict=sd))
  assert "unexpected key layer4.1.bn3.bn.weight (shape (512,))" in message
  assert "122 keys" in message


def test_a_wrong_shape_is_named_with_both_shapes(tmp_path):
  sd = random_state_dict(CASES["ei_resnet18"][1])
  sd["layer3.0.downsample.0.conv_ee.weight"] = np.ones((256, 128, 3, 3), np.float32)
  message = one_line_error(write_released(tmp_path / "m", "ei_resnet18", state_dict=sd))
  assert ("layer3.0.downsample.0.conv_ee.weight has shape (256, 128, 3, 3), expected "
          "(256, 128, 1, 1)") in message


def test_a_checkpoint_of_another_dataset_is_named(tmp_path):
  """A CIFAR-100 file under a CIFAR-10 config.json: the head is the first key that misfits."""
  sd = random_state_dict(vgg_shapes("EI-SNN", 16, "CIFAR100"))
  config = reference_config("EI-SNN", "VGG", 16, "CIFAR10")
  message = one_line_error(write_released(tmp_path / "m", "ei_vgg16_cifar100", state_dict=sd,
                                          config=config))
  assert ("layers.86.weight_ee has shape (100, 512), expected (10, 512) (config.json: E-I VGG-16 "
          "for CIFAR10, T=4)") in message


def test_dtype_and_config_problems_are_one_line(tmp_path):
  sd = random_state_dict(CASES["ei_vgg8"][1])
  sd["layers.3.gain_e"] = sd["layers.3.gain_e"].astype(np.float16)
  assert "layers.3.gain_e has dtype float16, expected float32" in one_line_error(
      write_released(tmp_path / "a", "ei_vgg8", state_dict=sd))
  for change, words in [({"arch": "ResNet", "num_layers": 34}, "arch ResNet34"),
                        ({"light_classifier": False}, "light_classifier=false"),
                        ({"dataset": "MNIST"}, "dataset 'MNIST'"),
                        ({"neuron": {"tau": 2.0, "v_reset": 0.0}}, "neuron.v_reset=0.0"),
                        ({"type": "ANN"}, "type 'ANN'")]:
    config = {**CASES["ei_vgg8"][0], **change}
    message = one_line_error(write_released(tmp_path / "b", "ei_vgg8", config=config))
    assert "config.json" in message and words in message, message
  config = {k: v for k, v in CASES["ei_vgg8"][0].items() if k != "T"}
  assert "lacks 'T'" in one_line_error(write_released(tmp_path / "c", "ei_vgg8", config=config))
  (tmp_path / "c" / "model.safetensors").unlink()
  assert "has no model.safetensors" in one_line_error(tmp_path / "c")


# ------------------------------------------------------------------------------------------------
# Loading by name from the Hugging Face Hub (never downloads here).


def test_a_hub_name_without_huggingface_hub_is_one_clear_line(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)    # import fails
  message = one_line_error("vwOvOwv/DeepEISNN/CIFAR10-VGG16")
  assert "needs huggingface_hub: pip install huggingface_hub" in message
  assert "needs huggingface_hub" in one_line_error("CIFAR10-VGG8")       # a bare model card
  assert "neither a folder" in one_line_error(tmp_path / "no-such-folder")


def test_a_hub_name_downloads_both_files(tmp_path, monkeypatch):
  hub = tmp_path / "hub"
  write_released(hub / "CIFAR10-VGG8", "ei_vgg8")
  calls = []

  def hf_hub_download(repo_id, filename, subfolder=None, cache_dir=None):
    calls.append((repo_id, subfolder, filename))
    if subfolder != "CIFAR10-VGG8":
      raise FileNotFoundError(f"404 {repo_id}/{subfolder}/{filename}")
    return str(hub / subfolder / filename)

  monkeypatch.setitem(sys.modules, "huggingface_hub",
                      types.SimpleNamespace(hf_hub_download=hf_hub_download))
  released = pretrained.load_pretrained("vwOvOwv/DeepEISNN/CIFAR10-VGG8")
  assert released.name == "CIFAR10-VGG8" and released.reported_top1 == 87.03
  assert calls == [("vwOvOwv/DeepEISNN", "CIFAR10-VGG8", "model.safetensors"),
                   ("vwOvOwv/DeepEISNN", "CIFAR10-VGG8", "config.json")]
  message = one_line_error("vwOvOwv/DeepEISNN/CIFAR10-VGG99")
  assert message.startswith("downloading vwOvOwv/DeepEISNN/CIFAR10-VGG99 from the Hugging Face "
                            "Hub failed (FileNotFoundError: 404")


# ------------------------------------------------------------------------------------------------
# A run of this project in the released format.


def test_a_run_exports_to_the_released_format_and_back(tmp_path):
  config = config_lib.load_config(str(pathlib.Path(__file__).parents[1] /
                                      "configs/bn_cifar10_resnet18.py"))
  model = models.create_model(config.model, 10)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                          jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                           {k: shapes[k] for k in ("params", "batch_stats")})
  run = released_lib.pretrained_from_run(config, variables, num_batches_tracked=1234)
  assert run.reference_config["type"] == "BN-SNN" and run.name == "CIFAR10-ResNet18"
  back = pretrained.load_pretrained(pretrained.save_pretrained(tmp_path / "run", run))
  assert jax.tree.all(jax.tree.map(np.array_equal, back.variables, variables))
  assert back.buffers["layer4.1.bn2.bn.num_batches_tracked"] == 1234
  fields = back.config_fields
  get = lambda key: functools.reduce(lambda node, part: node[part], key.split("."), config)
  assert all(get(key) == value for key, value in fields.items()), fields
  config.model.ei_stabilization = "epsilon"
  with pytest.raises(pretrained.PretrainedError,
                     match="model.ei_stabilization='epsilon' has no counterpart"):
    released_lib.reference_config(config)


def random_run_variables(config, num_classes: int = 10, seed: int = 0) -> dict:
  """{"params", ["batch_stats"]} of the model of ``config``, random float32 values."""
  model = models.create_model(config.model, num_classes)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                      {k: shapes[k] for k in ("params", "batch_stats") if k in shapes})


@pytest.mark.parametrize("variant", ["ei", "bn"])
@pytest.mark.parametrize("arch", ["vgg8", "vgg11", "vgg16", "vgg19", "resnet18"])
def test_export_then_import_gives_the_params_back_bitwise(arch, variant, tmp_path):
  """One key table serves both ways: every supported architecture, at a small width (written as
  config.json's width_multiplier), exports and imports back bit for bit, config fields too."""
  config = config_lib.load_config(str(pathlib.Path(__file__).parents[1] / "configs/default.py"),
                                  [f"model.arch={arch}", f"model.variant={variant}",
                                   "model.width_multiplier=0.0625", "model.T=2"])
  variables = random_run_variables(config)
  run = released_lib.pretrained_from_run(config, variables)
  assert run.reference_config["width_multiplier"] == 0.0625
  back = pretrained.load_pretrained(pretrained.save_pretrained(tmp_path / "run", run))
  flat = lambda tree: {jax.tree_util.keystr(p): l for p, l in
                       jax.tree_util.tree_flatten_with_path(tree)[0]}
  a, b = flat(variables), flat(back.variables)
  assert list(a) == list(b)
  for key in a:
    assert (a[key].dtype, a[key].shape, a[key].tobytes()) == (
        b[key].dtype, b[key].shape, b[key].tobytes()), key
  get = lambda key: functools.reduce(lambda node, part: node[part], key.split("."), config)
  assert all(get(key) == value for key, value in back.config_fields.items()), back.config_fields


def test_the_quick_start_model_exports_and_what_cannot_is_one_line(tmp_path):
  """configs/default.py (width 0.25) exports; a parameter without a key (a learnable LIF time
  constant) or an option without one (DANN) is one error line, and nothing is written."""
  config = config_lib.load_config(str(pathlib.Path(__file__).parents[1] / "configs/default.py"))
  variables = random_run_variables(config)
  folder = pretrained.save_pretrained(tmp_path / "quick",
                                      released_lib.pretrained_from_run(config, variables))
  back = pretrained.load_pretrained(folder)
  assert back.name == "quick" and back.config_fields["model.width_multiplier"] == 0.25
  extra = {"params": {**variables["params"], "lif0": {"w": np.zeros((), np.float32)}}}
  with pytest.raises(pretrained.PretrainedError, match=r"params/lif0/w \(\) has no key in the "
                     "released format"):
    released_lib.pretrained_from_run(config, extra)
  config.model.variant = "dann"
  with pytest.raises(pretrained.PretrainedError,
                     match="model.variant='dann' has no counterpart in the released format"):
    released_lib.reference_config(config)


def test_export_cli_writes_a_run_that_loads_back(tmp_path, capsys):
  """experiments.export: a run folder's checkpoint -> the two released files, params bit for
  bit; a run of a format it cannot hold is one error line (exit 2) and writes nothing."""
  from ei_snn_jax.training import checkpointing, train
  from experiments import export
  tiny = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=16",
          "data.synthetic_test_size=16", "model.width_multiplier=0.0625", "model.T=1",
          "train.batch_size=8", "parallel.num_devices=1"]
  config = config_lib.load_config(str(pathlib.Path(__file__).parents[1] / "configs/default.py"),
                                  tiny)
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"fingerprint": "test",
                                               "config": config.to_dict()}))
  state = train.init_state(train.build_experiment(config))
  state = state.replace(step=state.step + 3)
  ckpt = checkpointing.Checkpointer(run)
  ckpt.save(3, state, {"step": 3})
  ckpt.close()
  out = tmp_path / "shared" / "my-run"
  assert export.main([f"--workdir={run}", f"--out={out}", "--dataset=CIFAR10",
                      "--config.train.log_every_steps=5"]) == 0     # an override of the run's
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line == {"exported": str(out), "step": 3, "checkpoint": "latest", "dataset": "CIFAR10",
                  "arch": "VGG8"}
  back = pretrained.load_pretrained(out)
  want = jax.device_get(state.params)
  assert jax.tree.all(jax.tree.map(lambda a, b: np.asarray(a).tobytes() == b.tobytes(), want,
                                   back.variables["params"]))
  assert export.main([f"--workdir={run}", f"--out={tmp_path / 'x'}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: data.name='synthetic' has no dataset of the reference"), err
  assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# experiments.evaluate --pretrained


SYNTHETIC = ["--config.data.name=synthetic", "--config.data.source=synthetic",
             "--config.data.synthetic_train_size=16", "--config.data.synthetic_test_size=16",
             "--config.train.eval_batch_size=16", "--config.parallel.num_devices=1"]


def test_evaluate_a_released_model_on_synthetic_data(tmp_path, capsys):
  from experiments import evaluate
  folder = write_released(tmp_path / "CIFAR10-VGG8", "ei_vgg8")
  assert evaluate.main([f"--pretrained={folder}", *SYNTHETIC]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["pretrained"] == "CIFAR10-VGG8" and result["reported_test_accuracy"] == 0.8703
  assert 0 <= result["test_accuracy"] <= 1 and np.isfinite(result["test_loss"])
  # The same through Python, and the same numbers again (evaluation is deterministic).
  again = evaluate.evaluate_pretrained(folder, {"data.name": "synthetic",
                                                "data.source": "synthetic",
                                                "data.synthetic_train_size": 16,
                                                "data.synthetic_test_size": 16,
                                                "train.eval_batch_size": 16,
                                                "parallel.num_devices": 1})
  assert again == result


def test_evaluate_pretrained_errors_are_one_line(tmp_path, capsys):
  from experiments import evaluate
  folder = write_released(tmp_path / "CIFAR100-VGG16", "ei_vgg16_cifar100")
  cases = [
      ([], "missing --workdir: pass --workdir=DIR"),
      ([f"--pretrained={folder}", f"--workdir={tmp_path}"], "not both"),
      ([f"--pretrained={folder}", "--which=latest"], "drop --which"),
      ([f"--pretrained={folder}", *SYNTHETIC], "has 100 classes but data.name='synthetic' has 10"),
      ([f"--pretrained={tmp_path / 'nothing'}"], "neither a folder"),
  ]
  if "cifar10_dvs" not in data_registry.dataset_names():    # this branch reads no DVS data yet
    dvs = write_released(tmp_path / "CIFAR10DVS-VGG8", "ei_vgg8_dvs")
    cases.append(([f"--pretrained={dvs}"], "(data.name='cifar10_dvs'), which this version"))
  for argv, words in cases:
    assert evaluate.main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, (argv, err)


# ------------------------------------------------------------------------------------------------
# The README section "Use the released checkpoints" runs as written (its text is kept here until
# it is pasted into README.md; then read it from there).

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
README_SECTION = README.read_text().split("## Use the released checkpoints", 1)[1].split(
    "\n## ", 1)[0]


def readme_blocks(language: str) -> list[str]:
  """The ``language`` code blocks of the README section."""
  import re
  return re.findall(rf"```{language}\n(.*?)```", README_SECTION, flags=re.S)


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
  (example,) = readme_blocks("python")
  write_released(tmp_path / "checkpoints" / "CIFAR10-VGG8", "ei_vgg8")
  monkeypatch.chdir(tmp_path)
  exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102
  out = capsys.readouterr().out.splitlines()
  assert out[0] == "CIFAR10-VGG8 vgg8 4 87.03"
  assert (tmp_path / "exported/CIFAR10-VGG8/model.safetensors").read_bytes() == (
      tmp_path / "checkpoints/CIFAR10-VGG8/model.safetensors").read_bytes()


def test_readme_command_parses():
  """The documented command is accepted by experiments.evaluate's flags (it runs end to end in
  ``test_evaluate_a_released_model_on_synthetic_data``)."""
  import shlex

  from experiments import cli, evaluate
  (block,) = readme_blocks("bash")
  words = shlex.split(block.replace("\\\n", " ").strip())
  assert words[:3] == ["python", "-m", "experiments.evaluate"]
  fv, rest = cli.parse(evaluate.define_flags, ["evaluate", *words[3:]])
  assert fv.pretrained == "checkpoints/CIFAR10-VGG8" and fv.config.data.path and rest == []
