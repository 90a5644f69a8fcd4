"""Config files, overrides, validation, fingerprints (ei_snn_jax/training/config.py) and the
command-line parsing every tool shares (experiments/cli.py).

Fast: nothing here builds a model or touches JAX.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections
import pytest

from ei_snn_jax.training import config as C, run_config as R

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(
    str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py")
    if p.name not in ("__init__.py", "common.py", "sweeps.py"))


def _load(name: str, *overrides: str) -> ml_collections.ConfigDict:
  """Load configs/<name>.py (absolute path, so the test does not depend on the cwd)."""
  return C.load_config(str(REPO / "configs" / f"{name}.py"), overrides)


def _flat(d: dict, prefix: str = "") -> dict:
  """{"a.b": value} from a nested dict."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


# ------------------------------------------------------------------------------------------------
# Every config file.


def test_config_files_found():
  """The glob sees every paper run, the ablations and the quick-start config."""
  expected = ({f"configs/{n}.py" for n in PAPER} | {f"configs/ablations/{n}.py" for n in ABLATIONS}
              | {"configs/default.py"})
  assert expected <= set(CONFIG_FILES), sorted(expected - set(CONFIG_FILES))


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_config_loads_and_validates(path):
  """Each file loads from its path, validates, and documents its command in its docstring."""
  cfg = C.load_config(str(REPO / path))
  assert C.validate_config(cfg) is cfg
  C.validate_config(cfg, num_devices=1)
  tiny = C.load_config(str(REPO / path) + ":runlocal")
  C.validate_config(tiny, num_devices=8)
  text = (REPO / path).read_text()
  assert f"--config {path}" in text, "docstring lacks the exact command"
  assert "from __future__ import annotations" in text
  assert "Target" in text or "Expected" in text


# (dataset, arch, variant, T, epochs, warmup, batch, lr, init_lr, wd); spec §7.1.
PAPER = {
    "ei_cifar10_vgg8": ("cifar10", "vgg8", "ei", 4, 300, 10, 128, 0.002, 1e-7, 5e-4),
    "ei_cifar10_vgg11": ("cifar10", "vgg11", "ei", 4, 300, 10, 128, 0.002, 1e-7, 5e-4),
    "ei_cifar10_vgg16": ("cifar10", "vgg16", "ei", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "ei_cifar10_vgg19": ("cifar10", "vgg19", "ei", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "ei_cifar10_resnet18": ("cifar10", "resnet18", "ei", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "ei_cifar100_vgg16": ("cifar100", "vgg16", "ei", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "ei_cifar100_vgg19": ("cifar100", "vgg19", "ei", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "bn_cifar10_vgg16": ("cifar10", "vgg16", "bn", 4, 300, 0, 128, 0.1, None, 1e-4),
    "bn_cifar10_vgg19": ("cifar10", "vgg19", "bn", 4, 300, 0, 128, 0.1, None, 1e-4),
    "bn_cifar10_resnet18": ("cifar10", "resnet18", "bn", 4, 300, 0, 128, 0.1, None, 1e-4),
    "bn_cifar100_vgg16": ("cifar100", "vgg16", "bn", 4, 300, 0, 128, 0.1, None, 1e-4),
    "bn_cifar100_vgg19": ("cifar100", "vgg19", "bn", 4, 300, 0, 128, 0.1, None, 1e-4),
    "bn_cifar100_resnet18": ("cifar100", "resnet18", "bn", 4, 300, 0, 128, 0.1, None, 1e-4),
    "dann_cifar10_vgg16": ("cifar10", "vgg16", "dann", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "dann_cifar10_vgg19": ("cifar10", "vgg19", "dann", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
    "dann_cifar10_resnet18": ("cifar10", "resnet18", "dann", 4, 300, 30, 128, 0.001, 1e-7, 5e-4),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_hyperparameters(name):
  """Every paper run has the spec §7.1 values and the shared recipe (momentum, seed, E-I method)."""
  dataset, arch, variant, T, epochs, warmup, batch, lr, init_lr, wd = PAPER[name]
  c = _load(name)
  assert (c.data.name, c.model.arch, c.model.variant) == (dataset, arch, variant)
  assert (c.model.T, c.train.epochs, c.optim.warmup_epochs, c.train.batch_size) == (
      T, epochs, warmup, batch)
  assert c.optim.lr == pytest.approx(lr, rel=1e-12)
  assert c.optim.weight_decay == pytest.approx(wd, rel=1e-12)
  if init_lr is not None:
    assert c.optim.init_lr == pytest.approx(init_lr, rel=1e-12)
  assert c.optim.momentum == 0.9 and c.seed == 2025 and c.model.tau == 2.0
  assert c.model.dropout == 0.0 and c.model.ei_ratio == 4 and c.model.width_multiplier == 1.0
  assert c.model.ei_init and c.model.ei_ste and c.model.ei_scale_wei_grad
  assert c.model.ei_stabilization == "adaptive"
  assert (c.data.train_subset, c.data.test_subset, c.train.max_steps) == (0, 0, 0)
  assert c.data.augment and c.data.cutout_fill == "red"


ABLATIONS = {
    "no_ei_init": {"model.ei_init": False},
    "no_stabilization": {"model.ei_stabilization": "none"},
    "no_ste": {"model.ei_ste": False},
    "no_wei_grad_scaling": {"model.ei_scale_wei_grad": False},
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_changes_exactly_one_field(name):
  """Each ablation is ei_cifar10_vgg16 with one switch flipped, and nothing else."""
  base = _flat(_load("ei_cifar10_vgg16").to_dict())
  abl = _flat(_load(f"ablations/{name}").to_dict())
  diff = {k: abl[k] for k in base if base[k] != abl[k]}
  assert diff == ABLATIONS[name]
  assert set(abl) == set(base)


def test_default_config_is_small():
  """The quick-start config: a small E-I VGG-8 with the E-I recipe, a few epochs, with warmup."""
  c = _load("default")
  assert (c.model.arch, c.model.variant, c.data.name) == ("vgg8", "ei", "cifar10")
  assert c.model.width_multiplier <= 0.25 and c.train.epochs <= 5
  assert 0 < c.optim.warmup_epochs < c.train.epochs
  assert c.data.train_subset == 0 and c.data.test_subset == 0  # all of CIFAR-10, 3 short epochs
  assert 10000 % c.train.eval_batch_size == 0
  assert c.optim.weight_decay == 5e-4 and c.optim.init_lr == 1e-7
  C.validate_config(c, num_devices=8)


def test_sweeps_reference_existing_configs():
  """Every sweep entry points at a config that loads and validates; run names are unique."""
  from configs import sweeps
  assert {"paper_cifar10", "paper_cifar100", "baselines", "ablations", "smoke"} <= set(sweeps.SWEEPS)
  for name, entries in sweeps.SWEEPS.items():
    assert entries, name
    for spec, seeds in entries:
      path = spec.partition(":")[0]
      assert (REPO / path).is_file(), (name, spec)
      assert seeds and all(isinstance(s, int) for s in seeds)
      C.validate_config(C.load_config(str(REPO / spec)))
    runs = sweeps.runs(name)
    assert len({r["name"] for r in runs}) == len(runs)
    assert all(r["overrides"] == [f"seed={r['seed']}"] for r in runs)
  listed = {s.partition(":")[0] for _, e in sweeps.SWEEPS.items() for s, _ in e}
  assert listed == set(CONFIG_FILES), "a config file is in no sweep (or vice versa)"
  with pytest.raises(KeyError, match="paper_cifar10"):
    sweeps.runs("paper")


# ------------------------------------------------------------------------------------------------
# The config argument (":runlocal", ":key=value").


def test_runlocal():
  """runlocal shrinks the run on real data and keeps the rest of the recipe."""
  c = _load("ei_cifar10_vgg16")
  t = C.load_config(str(REPO / "configs/ei_cifar10_vgg16.py:runlocal"))
  assert (t.train.epochs, t.train.max_steps, t.data.train_subset, t.data.test_subset) == (
      1, 4, 256, 256)
  assert (t.train.batch_size, t.train.eval_batch_size, t.model.width_multiplier) == (16, 64, 0.125)
  assert t.optim.warmup_epochs == 0
  assert t.data.name == "cifar10" and t.data.source == c.data.source  # not synthetic
  assert (t.model.arch, t.optim.lr, t.model.variant) == (c.model.arch, c.optim.lr, "ei")


def test_config_arg_pairs():
  """Pairs after the flags win; a short name ("lr") fails naming the full path to write."""
  c = C.load_config(str(REPO / "configs/ei_cifar10_vgg8.py:model.T=8,runlocal,"
                               "train.batch_size=32,optim.lr=0.01"))
  assert (c.model.T, c.train.batch_size, c.optim.lr, c.train.max_steps) == (8, 32, 0.01, 4)
  c = C.load_config(str(REPO / "configs/ei_cifar10_vgg8.py:runlocal=false"))
  assert c.train.max_steps == 0
  with pytest.raises(C.ConfigError, match="unknown config key 'lr': did you mean optim.lr"):
    C.apply_config_arg(_load("default"), "runlocal,lr=0.01")
  with pytest.raises(C.ConfigError, match="runlocl"):
    C.apply_config_arg(_load("default"), "runlocl")
  with pytest.raises(C.ConfigError, match=r"runlocal expects a bool \(true/false/1/0\)"):
    C.apply_config_arg(_load("default"), "runlocal=maybe")
  with pytest.raises(C.ConfigError, match="did you mean model.T"):
    C.apply_config_arg(_load("default"), "model.TT=3")


# ------------------------------------------------------------------------------------------------
# Overrides.


def test_overrides_parse_by_field_type():
  """Nested keys, int/float/bool/str, parsed by config_flags as on the command line."""
  c = _load("ei_cifar10_vgg16", "model.T=8", "optim.lr=1", "optim.weight_decay=1e-3",
            "model.ei_init=false", "model.ei_ste=0", "train.progress_bar=TRUE",
            "model.arch=resnet18", "data.name=cifar100", "train.batch_size=64")
  assert c.model.T == 8 and isinstance(c.model.T, int)
  assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
  assert c.optim.weight_decay == 1e-3
  assert c.model.ei_init is False and c.model.ei_ste is False and c.train.progress_bar is True
  assert c.model.arch == "resnet18" and c.data.name == "cifar100" and c.train.batch_size == 64
  C.validate_config(c)


def test_overrides_placeholder_and_tuple():
  """Placeholders take strings; "None" is text to config_flags, so validation names the fix;
  tuples parse "(16,32,64)"."""
  c = _load("default", "data.path=/data/cifar10.npz", "data.source=arrays")
  assert c.data.path == "/data/cifar10.npz"
  C.validate_config(c)
  C.apply_overrides(c, ["data.path=None"])
  with pytest.raises(C.ConfigError, match=r"data.path='None': .* leave it out or give it an "
                                          r"empty value \(data.path=\)"):
    C.validate_config(c)
  C.apply_overrides(c, ["data.tfds_data_dir=~/tfds", "data.path="])
  assert c.data.tfds_data_dir == "~/tfds" and c.data.path == ""
  d = ml_collections.ConfigDict({"widths": (32, 64)})
  C.apply_overrides(d, ["widths=(16,32,64)"])
  assert d.widths == (16, 32, 64)


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr': did you mean optim.lr"),
    ("T=8", "unknown config key 'T': did you mean model.T? (write the full field path"),
    ("model.T=abc", "model.T expects an int, got 'abc'"),
    ("model.T=2.5", "model.T expects an int, got '2.5'"),
    ("optim.lr=fast", "optim.lr expects a float, got 'fast'"),
    ("model.ei_init=maybe", "model.ei_init expects a bool"),
    ("model=3", "model is a group of fields"),
    ("model.T.x=3", "unknown config key 'model.T.x'"),
    ("model.T", "override 'model.T' has no value"),
    ("model.arch=None", None),  # text to config_flags: validation rejects the unknown arch
])
def test_bad_overrides(override, message):
  """Unknown keys get suggestions, unparsable values name the key and the expected type."""
  cfg = _load("default")
  if message is None:
    C.apply_overrides(cfg, [override])
    with pytest.raises(C.ConfigError, match="model.arch='None' is not a known architecture"):
      C.validate_config(cfg)
    cfg.model.arch = None
    with pytest.raises(C.ConfigError, match="model.arch is None: give it a str"):
      C.validate_config(cfg)
    return
  with pytest.raises(C.ConfigError) as e:
    C.apply_overrides(cfg, [override])
  assert message in str(e.value)
  assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------
# Validation.


def _set_raw(path: str, value):
  """A mutation that bypasses ml_collections' type checks (as a careless config file might)."""
  def mutate(c):
    group, leaf = path.split(".")
    fields = c[group].to_dict()
    fields[leaf] = value
    c[group] = ml_collections.ConfigDict(fields)
  return mutate


def _set(**kv):
  """A mutation assigning dotted keys (passed with "__" for ".") through apply_overrides."""
  return lambda c: C.apply_overrides(c, [f"{k.replace('__', '.')}={v}" for k, v in kv.items()])


def _add_field(c):
  """A typo'd (new) field."""
  c.optim.learning_rate = 0.1


def _drop_field(c):
  """A deleted field."""
  del c.train["keep_checkpoints"]


BAD = [
    # (id, mutation, num_devices, text the message must contain)
    ("unknown_field", _add_field, None, "optim.learning_rate"),
    ("missing_field", _drop_field, None, "train.keep_checkpoints"),
    ("lr_string", _set_raw("optim.lr", "0.1"), None, "optim.lr must be a float"),
    ("T_float", _set_raw("model.T", 4.0), None, "model.T must be an int"),
    ("ei_init_int", _set_raw("model.ei_init", 1), None, "model.ei_init must be a bool"),
    ("group_as_value", lambda c: dict(c.to_dict(), train=3), None, "train must be a group"),
    ("lr_negative", _set(optim__lr=-0.1), None, "optim.lr=-0.1"),
    ("lr_zero", _set(optim__lr=0), None, "optim.lr=0.0"),
    ("lr_nan", _set(optim__lr="nan"), None, "optim.lr"),
    ("init_lr_negative", _set(optim__init_lr=-1e-7), None, "optim.init_lr"),
    ("wd_negative", _set(optim__weight_decay=-1e-4), None, "optim.weight_decay"),
    ("momentum_one", _set(optim__momentum=1), None, "optim.momentum"),
    ("T_zero", _set(model__T=0), None, "model.T=0"),
    ("batch_zero", _set(train__batch_size=0), None, "train.batch_size=0"),
    ("eval_batch_zero", _set(train__eval_batch_size=0), None, "train.eval_batch_size=0"),
    ("epochs_zero", _set(train__epochs=0), None, "train.epochs=0"),
    ("warmup_negative", _set(optim__warmup_epochs=-1), None, "optim.warmup_epochs=-1"),
    ("warmup_ge_epochs", _set(optim__warmup_epochs=300), None, "optim.warmup_epochs=300"),
    ("unknown_dataset", _set(data__name="imagenet"), None, "data.name='imagenet'"),
    ("unknown_source", _set(data__source="s3"), None, "data.source='s3'"),
    ("arrays_without_path", _set(data__source="arrays"), None, "data.path"),
    ("synthetic_download", _set(data__name="synthetic", data__source="download"), None,
     "data.source='download'"),
    ("unknown_arch", _set(model__arch="vgg13"), None, "model.arch='vgg13'"),
    ("unknown_variant", _set(model__variant="ann"), None, "model.variant='ann'"),
    ("unknown_surrogate", _set(model__surrogate="relu"), None, "model.surrogate='relu'"),
    ("unknown_stabilization", _set(model__ei_stabilization="eps"), None, "model.ei_stabilization"),
    ("unknown_conv_dtype", _set(model__conv_dtype="float16"), None, "model.conv_dtype"),
    ("unknown_cutout_fill", _set(data__cutout_fill="black"), None, "data.cutout_fill"),
    ("dropout_one", _set(model__dropout=1.0), None, "model.dropout"),
    ("ei_ratio_zero", _set(model__ei_ratio=0), None, "model.ei_ratio=0"),
    ("ei_ratio_no_inhibition", _set(model__ei_ratio=8, model__width_multiplier=0.01), None,
     "model.ei_ratio=8"),
    ("width_zero", _set(model__width_multiplier=0), None, "model.width_multiplier"),
    ("replicas_zero", _set(train__num_replicas=0), None, "train.num_replicas"),
    ("subset_negative", _set(data__train_subset=-1), None, "data.train_subset"),
    ("seed_negative", _set(seed=-1), None, "seed=-1"),
    ("batch_not_divisible", _set(train__batch_size=100), 8,
     "train.batch_size=100 is not divisible by the 8 devices: use a multiple of 8"),
    ("eval_batch_not_divisible", _set(train__eval_batch_size=500), 8, "train.eval_batch_size=500"),
    ("batch_not_divisible_config_devices", _set(parallel__num_devices=3), 8,
     "train.batch_size=64 is not divisible by the 3 devices"),
    ("too_many_devices", _set(parallel__num_devices=16), 8, "parallel.num_devices=16"),
    ("unknown_placement", _set(data__placement="gpu"), None,
     "data.placement='gpu' is not a known data placement"),
    ("memory_fraction_zero", _set(data__device_memory_fraction=0), None,
     "data.device_memory_fraction=0.0 is out of range: it must be in (0, 1]"),
    ("memory_fraction_above_one", _set(data__device_memory_fraction=1.5), None,
     "data.device_memory_fraction=1.5"),
    ("assumed_memory_zero", _set(data__assumed_device_memory_gb=0), None,
     "data.assumed_device_memory_gb=0.0"),
    ("host_prefetch_zero", _set(data__host_prefetch=0), None, "data.host_prefetch=0"),
]


@pytest.mark.parametrize("mutate, num_devices, message", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_configs(mutate, num_devices, message):
  """Each mistake raises ConfigError with a one-line message naming the offending key."""
  cfg = _load("default")
  C.validate_config(cfg, num_devices=8)
  cfg = mutate(cfg) or cfg  # a mutation may return a replacement (e.g. a plain dict)
  with pytest.raises(C.ConfigError) as e:
    C.validate_config(cfg, num_devices=num_devices)
  assert message in str(e.value)
  assert "\n" not in str(e.value)


def test_validate_lists_every_problem_and_accepts_good_device_counts():
  """Several mistakes are reported together; the right device counts pass."""
  cfg = _load("default", "model.T=0", "optim.lr=-1")
  with pytest.raises(C.ConfigError, match="model.T=0.*optim.lr=-1.0"):
    C.validate_config(cfg)
  cfg = _load("default", "train.batch_size=96", "train.eval_batch_size=480")
  for n in (1, 2, 3, 4, 8, 16, 32):
    C.validate_config(cfg, num_devices=n)
  C.validate_config(_load("default", "parallel.num_devices=4", "train.batch_size=100",
                          "train.eval_batch_size=200"), num_devices=8)
  # Whole replicas on each device (replicas a multiple of the devices): no batch is split.
  whole = _load("default", "train.num_replicas=16", "train.batch_size=100",
                "train.eval_batch_size=250")
  C.validate_config(whole, num_devices=8)
  with pytest.raises(C.ConfigError, match="train.batch_size=100 is not divisible by the 8 "):
    C.validate_config(_load("default", "train.num_replicas=12", "train.batch_size=100"),
                      num_devices=8)


CONFIG_FILE_HEAD = """
from ei_snn_jax.training import config as config_lib


def get_config(arg=None):
  c = config_lib.base_config()
"""


@pytest.mark.parametrize("body, message", [
    ("  c.model.taus = 3.0\n  return c\n", "model.taus"),
    ("  c.optimizer = dict(lr=0.1)\n  return c\n", "optimizer"),
    ("  c.optim.lr = '0.1'\n  return c\n", "lr"),
    ("  c.data.nmae = 'cifar100'\n  return c\n", "data.nmae"),
])
def test_typo_in_config_file(tmp_path, body, message):
  """A config file (outside configs/) with a typo'd field or a wrong type fails with the key."""
  path = tmp_path / "my_config.py"
  path.write_text(CONFIG_FILE_HEAD + body)
  with pytest.raises(C.ConfigError) as e:
    C.validate_config(C.load_config(str(path)))
  assert message in str(e.value)


def test_load_config_errors(tmp_path):
  """Missing file (with a suggestion), no get_config, wrong return type; an argless get_config
  given an ARG (config_flags passes it on, so it fails as on the command line)."""
  with pytest.raises(C.ConfigError, match="config file 'configs/ei_cifar10_vgg61.py' not found"):
    C.load_config("configs/ei_cifar10_vgg61.py")
  (tmp_path / "none.py").write_text("X = 1\n")
  with pytest.raises(C.ConfigError, match="no get_config"):
    C.load_config(str(tmp_path / "none.py"))
  (tmp_path / "bad.py").write_text("def get_config():\n  return 3\n")
  with pytest.raises(C.ConfigError, match="returned int"):
    C.load_config(str(tmp_path / "bad.py"))
  (tmp_path / "argless.py").write_text(CONFIG_FILE_HEAD.replace("arg=None", "") + "  return c\n")
  c = C.load_config(str(tmp_path / "argless.py"), ["optim.lr=0.5"])
  assert (c.train.max_steps, c.optim.lr) == (0, 0.5)
  with pytest.raises(C.ConfigError, match=r"get_config\(\) failed: .*positional argument"):
    C.load_config(str(tmp_path / "argless.py") + ":runlocal")


def test_load_config_relative_to_cwd(monkeypatch):
  """A relative spec is resolved against the current directory, like on the command line."""
  monkeypatch.chdir(REPO)
  c = C.load_config("configs/ablations/no_ste.py:runlocal")
  assert c.model.ei_ste is False and c.train.max_steps == 4


# ------------------------------------------------------------------------------------------------
# JSON and fingerprints (ei_snn_jax/training/run_config.py).


def test_config_json_round_trip():
  """The config as config.json holds it is JSON with every field; it fingerprints like the config."""
  cfg = _load("ei_cifar10_resnet18")
  data = json.loads(json.dumps(cfg.to_dict(), default=str))
  assert data["model"]["arch"] == "resnet18" and data["data"]["path"] is None
  assert _flat(data) == _flat(cfg.to_dict())
  assert R.config_fingerprint(data) == R.config_fingerprint(cfg)


def test_fingerprint():
  """Stable under bookkeeping / hardware / location changes; different when the run differs."""
  base = R.config_fingerprint(_load("ei_cifar10_vgg16"))
  assert len(base) == 64 and base == R.config_fingerprint(_load("ei_cifar10_vgg16"))
  same = ["train.progress_bar=false", "train.log_every_steps=7", "train.max_steps=10",
          "train.checkpoint_every_steps=5", "train.keep_checkpoints=9", "parallel.num_devices=2",
          "parallel.distributed=true", "data.path=/x.npz", "data.cache_dir=/tmp/c",
          "data.tfds_data_dir=/tmp/t", "data.placement=device", "train.transfer_guard=allow", "data.device_memory_fraction=0.9",
          "data.assumed_device_memory_gb=2", "data.host_prefetch=4"]
  for override in same:
    assert R.config_fingerprint(_load("ei_cifar10_vgg16", override)) == base, override
  different = ["optim.lr=0.002", "seed=1", "model.T=8", "train.epochs=100", "data.train_subset=10",
               "model.ei_ste=false", "data.name=cifar100"]
  prints = {R.config_fingerprint(_load("ei_cifar10_vgg16", o)) for o in different}
  assert base not in prints and len(prints) == len(different)
  as_dict = _load("ei_cifar10_vgg16").to_dict()
  as_dict["optim"]["momentum"] = 0.9
  as_dict["optim"]["lr"] = 0.001
  assert R.config_fingerprint(as_dict) == base
  with_int = _load("ei_cifar10_vgg16", "optim.lr=1").to_dict()
  with_int["optim"]["lr"] = 1
  assert R.config_fingerprint(with_int) == R.config_fingerprint(_load("ei_cifar10_vgg16",
                                                                      "optim.lr=1.0"))


# ------------------------------------------------------------------------------------------------
# Command line.


def _parse(*argv: str):
  """experiments.train's flags parsed from ``argv`` (the config and the workdir)."""
  from experiments import cli, train
  fv, rest = cli.parse(train.define_flags, ["train", *argv], train.REQUIRED)
  return fv.config, fv.workdir, rest


def test_cli_forms():
  """``=`` and space-separated values, the :ARG, negative numbers, values holding ``=``."""
  cfg, workdir, rest = _parse(
      "--config", str(REPO / "configs/default.py") + ":runlocal", "--workdir", "runs/x",
      "--config.optim.lr=0.002", "--config.model.T", "8", "--config.optim.init_lr", "-1",
      "--config.data.path", "a=b.npz", "--config.data.augment=false")
  assert workdir == "runs/x" and rest == []
  assert (cfg.optim.lr, cfg.model.T, cfg.optim.init_lr) == (0.002, 8, -1.0)
  assert (cfg.data.path, cfg.data.augment, cfg.train.max_steps) == ("a=b.npz", False, 4)
  cfg, workdir, _ = _parse("--workdir=w", f"--config={REPO}/configs/ei_cifar10_vgg8.py:model.T=2")
  assert (workdir, cfg.model.T, cfg.train.max_steps) == ("w", 2, 0)
  with pytest.raises(AttributeError):     # locked: a typo cannot add a field
    cfg.optim.learning_rate = 0.1


def test_cli_then_validate():
  """The parsed config validates and fingerprints like the same config loaded from Python."""
  cfg, _, _ = _parse("--config", str(REPO / "configs/default.py") + ":runlocal", "--workdir", "w",
                     "--config.model.T", "2")
  assert C.validate_config(cfg).model.T == 2
  loaded = C.load_config(str(REPO / "configs/default.py") + ":runlocal", ["model.T=2"])
  assert cfg.to_dict() == loaded.to_dict()
  assert R.config_fingerprint(cfg) == R.config_fingerprint(loaded)


@pytest.mark.parametrize("argv, message", [
    (["--workdir", "w"], "missing --config: pass --config=configs/NAME.py"),
    (["--config", "configs/default.py"], "missing --workdir: pass --workdir=DIR"),
    ([], "missing --config"),
    (["--config", "configs/default.py", "--workdir", "w", "--config.model.T"],
     "--config.model.T needs a value: write --config.model.T=VALUE"),
    (["--config", "configs/default.py", "--workdir", "w", "--config.model.T", "--x"],
     "needs a value"),
    (["--config", "configs/default.py", "--workdir"], "missing --workdir"),
    (["--config", "configs/default.py", "--workdir", "w", "--config.optim.lrr=1"],
     "unknown config key 'optim.lrr': did you mean optim.lr"),
    (["--config", "configs/default.py", "--workdir", "w", "--config.data.augment=maybe"],
     "data.augment expects a bool (true/false/1/0), got 'maybe'"),
    (["--config", "configs/default.py:runlokal", "--workdir", "w"],
     "unknown config argument 'runlokal'"),
])
def test_cli_errors(argv, message, monkeypatch):
  """Missing required flags, valueless overrides, typos: one ConfigError line with the fix."""
  monkeypatch.chdir(REPO)
  with pytest.raises(C.ConfigError) as e:
    _parse(*argv)
  assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["ei_cifar10_vgg16", "ei_tinyimagenet_resnet18",
                                  "ei_cifar10dvs_vgg8"])
@pytest.mark.parametrize("where", ["auto", "device", "host"])
def test_every_placement_validates(name, where):
  """The training loop streams from the host (issue 13 item 5; tests/test_host_placement.py),
  so data.placement='host' is a valid choice, for the large datasets it exists for too."""
  cfg = _load(name, f"data.placement={where}")
  C.validate_config(cfg)
  assert cfg.data.placement == where


def test_transfer_guard_is_validated():
  """train.transfer_guard takes jax.transfer_guard's levels only."""
  cfg = _load("ei_cifar10_vgg16")
  cfg.train.transfer_guard = "disalow"
  with pytest.raises(C.ConfigError, match=r"train.transfer_guard.*did you mean disallow"):
    C.validate_config(cfg)


def test_fingerprint_of_unchanged_configs_is_pinned():
  """Run folders made before the options moved into their modules still resume (issue 22)."""
  assert R.config_fingerprint(_load("ei_cifar10_vgg16")) == (
      "b95b37b96be5cd02ec3a3811a04137b9d4451f0a3084fb99d86b3db402c20bfd")
  assert R.config_fingerprint(_load("default")) == (
      "6488ac78aad191c0a23b9b3519d1936811b9217f01818075af2429db33e72c73")


def test_every_option_is_declared_once_by_its_owner():
  """base_config is exactly the union of the declared options; no two owners declare a field."""
  import importlib
  declared = [p for name in C.OWNERS for p in importlib.import_module(name).CONFIG_OPTIONS]
  from ei_snn_jax.data import registry
  declared += [f"data.{key}" for key in registry.options()]          # the data registry's
  assert len(declared) == len(set(declared))
  def leaves(c, prefix=""):
    return [p for k, v in c.items() for p in (leaves(v, f"{prefix}{k}.") if isinstance(
        v, ml_collections.ConfigDict) else [prefix + k])]
  assert sorted(declared) == sorted(leaves(C.base_config()))
