"""experiments/study.py, study_report.py and seed_spread.py: the study's conditions, its
recorder and seed spread on a tiny real run of two vmapped seeds, and its verdicts and page on
hand-made results."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from experiments import seed_spread, study, study_report

TINY_OVERRIDES = [
    "data.source=synthetic", "data.name=cifar10", "data.synthetic_train_size=64",
    "data.synthetic_test_size=32", "train.batch_size=16", "train.eval_batch_size=32",
    "train.epochs=2", "train.log_every_steps=1", "model.T=2", "model.width_multiplier=0.125",
    "parallel.num_devices=1", "train.progress_bar=False", "train.num_replicas=2",
    "train.checkpoint_every_steps=4", "seed=3", "train.max_steps=0", "data.train_subset=0",
    "data.test_subset=0",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A finished run of the quick-start config: 2 vmapped seeds, 2 epochs of 4 steps."""
  from configs import default
  from ei_snn_jax.training import config as config_lib, train
  config = config_lib.apply_overrides(default.get_config("runlocal"), TINY_OVERRIDES)
  workdir = tmp_path_factory.mktemp("study") / "ei_vgg8"
  train.train_and_evaluate(config, workdir)
  study.status_path(workdir).write_text(json.dumps({"status": "finished", "line": "done"}))
  return workdir


def test_every_condition_is_a_valid_config_at_both_scales():
  from ei_snn_jax.training import config as config_lib
  assert len({c.name for c in study.CONDITIONS}) == len(study.CONDITIONS)
  for scale in study.SCALES.values():
    for cond in study.CONDITIONS:
      overrides = study.condition_overrides(cond, scale)
      cfg = config_lib.load_config(cond.config, [f"{k}={v}" for k, v in overrides.items()])
      config_lib.validate_config(cfg, 1)
      for key, value in dict(cond.overrides).items():
        group, field = key.split(".")
        assert cfg[group][field] == overrides[key] and (value == overrides[key]
                                                        or key == "optim.warmup_epochs")
      assert cfg.train.num_replicas == scale["train.num_replicas"]
      # A warm-up epoch only where the variant's recipe warms up (BN-SNN does not), unless the
      # condition sets its own.
      want = dict(cond.overrides).get("optim.warmup_epochs",
                                      0 if cfg.model.variant == "bn" else 1)
      assert cfg.optim.warmup_epochs == min(want, scale["train.epochs"] - 1)


def test_ablations_change_only_their_component():
  from ei_snn_jax.training import config as config_lib
  def load(name):
    cond = study.BY_NAME[name]
    return config_lib.load_config(cond.config, [f"{k}={v}" for k, v in
                                                study.condition_overrides(cond).items()])
  full = load("ei_vgg16").to_dict()
  for name, key, value in (("no_ei_init", "ei_init", False),
                           ("no_stabilization", "ei_stabilization", "none"),
                           ("no_ste", "ei_ste", False),
                           ("no_wei_grad_scaling", "ei_scale_wei_grad", False)):
    changed = load(name).to_dict()
    assert changed["model"][key] == value != full["model"][key]
    changed["model"][key] = full["model"][key]
    assert changed == full, name


def test_classify_exit():
  assert study.classify_exit(0, "x\ndone: step 8/8\n")["status"] == "finished"
  d = study.classify_exit(2, "step 3\nerror: non-finite loss/gradient at step 40: ...\n")
  assert d == {"status": "diverged", "line": "error: non-finite loss/gradient at step 40: ..."}
  assert study.classify_exit(2, "error: layer conv3 is dead: ...")["status"] == "diverged"
  assert study.classify_exit(-15, "")["status"] == "stopped"
  failed = study.classify_exit(2, "error: config file 'x.py' not found")
  assert failed["status"] == "failed" and failed["returncode"] == 2


def test_bimodality_coefficient_separates_one_mode_from_two():
  rng = np.random.default_rng(0)
  one = rng.normal(size=20000)
  two = np.concatenate([rng.normal(-3, 1, 10000), rng.normal(3, 1, 10000)])
  assert study.bimodality_coefficient(one) == pytest.approx(1 / 3, abs=0.02)
  assert study.bimodality_coefficient(two) > 5 / 9 + 0.1
  assert math.isnan(study.bimodality_coefficient(np.ones(10)))
  h = study.histogram(two, bins=10)
  assert len(h["counts"]) == 10 and len(h["edges"]) == 11 and sum(h["counts"]) == two.size


def test_record_of_a_tiny_run(tiny_run, tmp_path):
  cond = study.BY_NAME["ei_vgg8"]
  result = study.record(cond, tiny_run, batch_size=16)
  assert result["status"] == "finished" and result["final_step"] == 8
  assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?|unknown", result["code"])   # the code it ran
  # The training's own wall time, summed over resumed parts (not the study's last part).
  summary = json.loads((tiny_run / "summary.json").read_text())
  assert result["wall_time_s"] == round(summary["wall_time"], 1) > 0
  assert [s["seed"] for s in result["seeds"]] == [3, 4]
  for i, s in enumerate(result["seeds"]):
    assert len(s["test_accuracy"]) == 2 and all(0 <= a <= 100 for a in s["test_accuracy"])
    for when in ("init", "final"):
      snap = s[when]
      assert sorted(snap["firing_rate"]) == [f"lif{k}" for k in range(5)]
      assert all(0 <= r <= 1 for r in snap["firing_rate"].values())
      zeros = snap["zero_shunting_fraction"]   # one per hidden E-I layer (the head has none)
      assert sorted(zeros) == [f"conv{k}" for k in range(5)]
      assert all(0 <= z <= 1 for z in zeros.values())
      g = snap["gradient_norm"]
      assert g["w_ei"] > 0 and g["other"] > 0
      assert ("histogram" in snap) == (i == 0)
  # Different seeds start from different E-I Inits.
  assert result["seeds"][0]["init"]["firing_rate"] != result["seeds"][1]["init"]["firing_rate"]
  path = study.write_result(result, tmp_path)
  assert study.load_results(tmp_path)["ei_vgg8"]["seeds"][0]["seed"] == 3
  assert path.stat().st_size < 20_000


def test_record_of_a_run_that_diverged_at_its_first_step(tiny_run, tmp_path):
  """What such a run leaves (seen in the study: no_stabilization went non-finite at step 0):
  its config, no metrics and no checkpoint. Its record is the status and the init snapshot."""
  import shutil
  workdir = tmp_path / "no_stabilization"
  for folder in ("", "replica_0", "replica_1"):
    (workdir / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_run / folder / "config.json", workdir / folder / "config.json")
  (workdir / "checkpoints").mkdir()
  line = "error: non-finite loss/gradient at step 0 in replica 0 (seed 3)"
  study.status_path(workdir).write_text(json.dumps({"status": "diverged", "line": line}))
  with pytest.raises(Exception, match="no metrics yet"):   # the seed-spread tool still says so
    seed_spread.load_seeds(workdir)
  result = study.record(study.BY_NAME["ei_vgg8"], workdir, batch_size=16)
  assert result["status"] == "diverged" and result["status_line"] == line
  assert result["nonfinite_event"] and result["final_step"] is None
  assert [s["test_accuracy"] for s in result["seeds"]] == [[], []]
  assert all("init" in s and "final" not in s for s in result["seeds"])
  assert study_report.final_accuracies(result) == [10.0, 10.0]   # counted as chance


def test_no_ste_record_compares_its_gradient_with_the_ste(tiny_run, tmp_path):
  """The no-STE ablation's record holds, per seed, the cosine between its gradient and the
  gradient with the STE at the same parameters; the full method's record has none."""
  import shutil
  workdir = tmp_path / "no_ste"
  shutil.copytree(tiny_run, workdir)
  for folder in ("", "replica_0", "replica_1"):
    path = workdir / folder / "config.json"
    saved = json.loads(path.read_text())
    saved["config"]["model"]["ei_ste"] = False
    path.write_text(json.dumps(saved))
  result = study.record(study.BY_NAME["no_ste"], workdir, batch_size=16)
  for s in result["seeds"]:
    for when in ("init", "final"):
      agreement = s[when]["ste_gradient"]
      assert abs(agreement["cosine"]) <= 1 + 1e-5 and agreement["relative_difference"] >= 0
  assert all("ste_gradient" not in s["init"]
             for s in study.record(study.BY_NAME["ei_vgg8"], tiny_run, batch_size=16)["seeds"])


def test_seed_spread_of_a_tiny_run(tiny_run, capsys):
  s = seed_spread.summarize(tiny_run, stall_below=101.0, reference=(20.0, 1.0, 6))
  assert [row["seed"] for row in s["seeds"]] == [3, 4]
  accs = [row["test_accuracy"] for row in s["seeds"]]
  e1 = s["epochs"][0]
  assert e1["mean"] == pytest.approx(np.mean([a[0] for a in accs]))
  assert e1["stalled"] == 2 and e1["vs_reference"]["F_df"] == [1, 5]
  assert seed_spread.main([f"--workdir={tiny_run}", "--stall_below=0"]) == 0
  out = capsys.readouterr().out
  assert "epoch 2:" in out and "stalled (< 0 %) 0" in out
  assert seed_spread.main([f"--workdir={tiny_run / 'nothing'}"]) == 2


def _result(name, accs, *, group="ablation", status="finished", silent=(0, 0), wei=(0.01, 0.01),
            bimodal=(0.5, 0.5)):
  snap = lambda k: {"firing_rate": {"lif0": 0.1}, "silent_layers": silent[k],
                    "gradient_norm": {"w_ei": wei[k], "other": 1.0},
                    "bimodality": {"w_ee": bimodal[k], "integrated_current": 0.3}}
  return {"condition": name, "label": name, "group": group, "status": status,
          "status_line": "error: non-finite" if status == "diverged" else "",
          "nonfinite_event": status == "diverged", "overrides": {},
          "seeds": [{"seed": i, "test_accuracy": [a - 5, a], "init": snap(0), "final": snap(1)}
                    for i, a in enumerate(accs)]}


def _verdict(results, prefix):
  return next(v for v in study_report.verdicts(results) if v["claim"].startswith(prefix))


def test_verdicts_follow_the_numbers():
  full = _result("ei_vgg16", [40, 41, 42], group="method", bimodal=(0.55, 0.7))
  results = {
      "ei_vgg16": full,
      "no_ei_init": _result("no_ei_init", [10, 10.5, 9.5], silent=(3, 4)),
      "no_stabilization": _result("no_stabilization", [10, 10, 10], status="diverged"),
      "no_ste": _result("no_ste", [40.5, 41, 41.5]),
      "no_wei_grad_scaling": _result("no_wei_grad_scaling", [41, 41, 41], wei=(0.5, 0.2)),
      "bn_vgg16": _result("bn_vgg16", [44, 45, 46], group="baseline"),
      "dann_vgg16": _result("dann_vgg16", [30, 31, 32], group="baseline"),
  }
  assert _verdict(results, "Without E-I Init")["verdict"] == "reproduced"
  assert "3.0 at init" in _verdict(results, "Without E-I Init")["evidence"]
  assert _verdict(results, "Without adaptive")["verdict"] == "reproduced"
  assert _verdict(results, "Without the straight")["verdict"] == "not reproduced"
  wei = _verdict(results, "Without the W_EI")
  assert wei["verdict"] == "reproduced for the gradients; no accuracy cost at this scale"
  assert "(50x)" in wei["evidence"]
  assert _verdict(results, "Weights and activity")["verdict"] == "reproduced"
  assert _verdict(results, "E-I reaches")["verdict"] == "reproduced"
  assert _verdict(results, "E-I beats")["verdict"] == "reproduced"
  assert _verdict(results, "Depth")["verdict"] == "not run yet"
  assert study_report.summary(study_report.verdicts(results), results) == (
      "In short, of 8 claims: 6 reproduced (some only for their mechanism), 1 not reproduced, "
      "0 inconclusive, 1 not run yet.")
  assert study_report.summary([{"verdict": "direction changed, not reversed; worse training"},
                               {"verdict": "not reproduced for the gradient direction"}], {}) == (
      "In short, of 2 claims: 0 reproduced (some only for their mechanism), 1 not reproduced, "
      "0 inconclusive, 1 in between.")
  # Within noise: no collapse, no explosion, no DANN gap.
  results["no_ei_init"] = _result("no_ei_init", [40, 41, 42])
  results["no_stabilization"] = _result("no_stabilization", [41, 41, 41])
  results["dann_vgg16"] = _result("dann_vgg16", [40, 42, 41])
  assert _verdict(results, "Without E-I Init")["verdict"] == "not reproduced"
  assert _verdict(results, "Without adaptive")["verdict"] == "not reproduced"
  assert _verdict(results, "E-I beats")["verdict"] == "not reproduced"
  # A full method that does not learn decides no accuracy claim; what is measured directly (the
  # collapse at init, a non-finite step, the gradient ratio) is judged still.
  results["ei_vgg16"] = _result("ei_vgg16", [11, 12, 13], group="method")
  assert _verdict(results, "Without E-I Init")["verdict"] == (
      "not reproduced for the firing rates; training inconclusive")
  results["no_ei_init"] = _result("no_ei_init", [10, 10.5, 9.5], silent=(3, 4))
  assert _verdict(results, "Without E-I Init")["verdict"] == (
      "reproduced for the firing-rate collapse; training inconclusive")
  assert _verdict(results, "Without adaptive")["verdict"] == "inconclusive"
  results["no_stabilization"] = _result("no_stabilization", [10, 10, 10], status="diverged")
  assert _verdict(results, "Without adaptive")["verdict"] == "reproduced"
  assert _verdict(results, "Without the W_EI")["verdict"] == (
      "reproduced for the gradients; accuracy inconclusive")
  for claim in ("Without the straight", "E-I reaches", "E-I beats", "Weights and activity"):
    assert _verdict(results, claim)["verdict"] == "inconclusive"
  # ... but it still shows the accuracies of the conditions it would compare.
  assert _verdict(results, "E-I reaches")["evidence"].startswith("bn_vgg16 45.0 ± 1.0 %; ")
  results["ei_vgg16"] = _result("ei_vgg16", [11, 12, 13], group="method", bimodal=(0.55, 0.7))
  assert _verdict(results, "Weights and activity")["verdict"] == "reproduced"


def _depth_results(ei_accs, no_accs, full=(40, 41, 42)):
  results = {"ei_vgg16": _result("ei_vgg16", full, group="method")}
  for arch, ei, no in zip(study.DEPTHS, ei_accs, no_accs):
    results[study.depth_condition("ei", arch)] = _result(f"ei_{arch}", ei, group="depth")
    results[study.depth_condition("no_ei_init", arch)] = _result(f"no_{arch}", no, group="depth")
  return results


def test_depth_verdict_is_judged_on_the_series():
  """The depth claim needs E-I to learn at every depth and the gap to widen; a depth where the
  network without E-I Init learns better beyond the noise refutes it, whatever VGG-16 does; the
  evidence names E-I seeds that end at chance and what their layers do."""
  learn = ([30, 31, 32], [29, 30, 31], [28, 29, 30])
  widening = _depth_results(learn, ([30, 31, 32], [25, 26, 27], [12, 13, 14]))
  assert _verdict(widening, "Depth")["verdict"] == "reproduced"
  assert _verdict(_depth_results(learn, learn), "Depth")["verdict"] == "not reproduced"
  refuted = _depth_results(([27, 28, 29], [20, 11, 10.5], [24, 13, 21]),
                           ([27, 28, 29], [28, 26, 30], [19, 17, 23]), full=(24, 13, 21))
  seed = refuted["ei_vgg11"]["seeds"][2]
  seed["final"]["firing_rate"] = {"lif0": 0.3, "lif1": 0.9992, "lif2": 0.0, "lif3": 0.0001}
  v = _verdict(refuted, "Depth")
  assert v["verdict"] == "not reproduced: without E-I Init trains better at vgg11"
  assert ("vgg11 seed 1 (11.0 %), vgg11 seed 2 (10.5 %; lif1 saturated (0.999), 2 silent layers "
          "(lif2–lif3))") in v["evidence"]
  refuted["ei_vgg11_warmup3"] = _result("ei_vgg11_warmup3", [27, 26, 11], group="diagnostic")
  refuted["ei_vgg11_warmup3"]["label"] = "E-I VGG-11, 3 warm-up epochs"
  assert ("diagnostic, E-I VGG-11, 3 warm-up epochs: 21.3 ± 9.0 %, 1 of 3 seeds near chance"
          in _verdict(refuted, "Depth")["evidence"])
  # The shallower networks also decide whether training fails without E-I Init.
  assert _verdict(refuted, "Without E-I Init")["verdict"] == (
      "not reproduced for the firing rates; training inconclusive at VGG-16; without E-I Init "
      "it trains as well or better at vgg8, vgg11")
  # E-I at chance at one depth, nobody better: nothing to tell.
  unclear = _depth_results(([27, 28, 29], [10, 11, 10.5], [24, 13, 21]),
                           ([27, 28, 29], [10, 11, 12], [19, 17, 23]))
  assert _verdict(unclear, "Depth")["verdict"] == "inconclusive"


def test_a_dann_that_cannot_take_a_step_is_judged_by_that_event():
  """A spiking DANN whose first gradient is non-finite loses to an E-I network that learns on
  every seed, however little; the evidence names the exactly-zero shunting currents."""
  dann = _result("dann_vgg16", [10, 10, 10], group="baseline", status="diverged")
  for s, z in zip(dann["seeds"], (0.2, 0.3, 0.25)):
    s["init"]["zero_shunting_fraction"] = {"conv0": 0.0, "conv1": z, "conv2": z / 10}
  results = {"ei_vgg16": _result("ei_vgg16", [24, 13, 21], group="method"), "dann_vgg16": dann}
  v = _verdict(results, "E-I beats")
  assert v["verdict"] == "reproduced: the spiking DANN cannot take a step, E-I trains on every seed"
  assert "conv1 25.0 %, conv2 2.5 %" in v["evidence"] and "conv0" not in v["evidence"]
  # One E-I seed at chance: nothing decides it.
  results["ei_vgg16"] = _result("ei_vgg16", [24, 10.5, 21], group="method")
  assert _verdict(results, "E-I beats")["verdict"] == "inconclusive"
  # Recorded before the zero fractions were: the event alone.
  for s in dann["seeds"]:
    del s["init"]["zero_shunting_fraction"]
  results["ei_vgg16"] = _result("ei_vgg16", [24, 13, 21], group="method")
  v = _verdict(results, "E-I beats")
  assert v["verdict"].startswith("reproduced") and "zero shunting" not in v["evidence"]


def test_gradient_agreement_sees_where_the_ste_matters():
  """With every weight positive, each zero of I_shunt comes with I_bal = 0 (nothing in the
  receptive field), so the STE changes nothing; a zero row of W_EI (as Dale's projection can
  leave) gives zeros of I_shunt under a nonzero I_bal, and the two gradients part."""
  import jax
  import jax.numpy as jnp
  from configs import default
  from ei_snn_jax import models
  from ei_snn_jax.training import config as config_lib
  cfg = config_lib.apply_overrides(default.get_config("runlocal"), TINY_OVERRIDES)
  cfg.model.ei_ste = False
  with_ste = config_lib.apply_overrides(default.get_config("runlocal"), TINY_OVERRIDES).model
  model, reference = models.create_model(cfg.model, 10), models.create_model(with_ste, 10)
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  y = jnp.arange(4) % 10
  params = jax.tree.map(jnp.abs, model.init(jax.random.key(1), x, train=False)["params"])
  agreement = study.make_gradient_agreement(model, reference)
  same = agreement({"params": params}, x, y)
  assert same["cosine"] > 1 - 1e-5 and same["relative_difference"] < 1e-4
  w_ei = params["conv1"]["ei"]["w_ei"]
  params["conv1"]["ei"]["w_ei"] = w_ei.at[: w_ei.shape[0] // 2].set(0.0)
  parted = agreement({"params": params}, x, y)
  assert parted["cosine"] < 0.999 and parted["relative_difference"] > 1e-2, parted


def test_gradient_norms_of_a_model_without_w_ei():
  """A BN-SNN has no W_EI: its record says None, not a norm of 0, and the report shows no
  ratio."""
  import jax
  import jax.numpy as jnp
  from configs import default
  from ei_snn_jax import models
  from ei_snn_jax.training import config as config_lib
  cfg = config_lib.apply_overrides(default.get_config("runlocal"), TINY_OVERRIDES)
  cfg.model.variant = "bn"
  model = models.create_model(cfg.model, 10)
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  norms = study.make_gradient_norms(model)(model.init(jax.random.key(1), x, train=False), x,
                                           jnp.arange(4) % 10)
  assert norms["w_ei"] is None and norms["other"] > 0
  bn = _result("bn_vgg8", [40, 41, 42], group="depth")
  for s in bn["seeds"]:
    s["init"]["gradient_norm"] = norms
  assert math.isnan(study_report.wei_gradient_ratio(bn))


def test_ste_verdict_follows_the_gradient_direction():
  """The no-STE claim is judged from cos(gradient without, with the STE) where it was recorded,
  learning or not; without it, from accuracy alone (results recorded before)."""
  def with_cosine(result, cosines):
    for seed, c in zip(result["seeds"], cosines):
      seed["init"]["ste_gradient"] = {"cosine": c, "relative_difference": 1.0}
    return result
  learning = _result("ei_vgg16", [40, 41, 42], group="method")
  stalled = _result("ei_vgg16", [11, 12, 13], group="method")
  cases = [(learning, [30, 31, 32], [-0.2, -0.1, -0.3], "reproduced for the gradient direction; "
            "worse training"),
           (learning, [40.5, 41, 41.5], [0.5, 0.6, 0.7], "direction changed, not reversed; no "
            "accuracy cost at this scale"),
           (stalled, [11, 12, 13], [0.95, 0.97, 0.99], "not reproduced for the gradient "
            "direction; accuracy inconclusive")]
  for full, accs, cosines, verdict in cases:
    results = {"ei_vgg16": full, "no_ste": with_cosine(_result("no_ste", accs), cosines)}
    v = _verdict(results, "Without the straight")
    assert v["verdict"] == verdict
    assert f"at init {np.mean(cosines):.3f}" in v["evidence"]


def test_page_lists_every_condition_and_claim(tmp_path):
  results = {"ei_vgg16": _result("ei_vgg16", [40, 41, 42], group="method"),
             "no_ei_init": _result("no_ei_init", [10, 10.5, 9.5], silent=(3, 4))}
  page = study_report.write_page(results, tmp_path / "study.md", tmp_path / "figures", tmp_path)
  text = page.read_text()
  for cond in study.CONDITIONS:
    assert f"(`{cond.name}`)" in text
  for v in study_report.verdicts(results):
    assert v["claim"] in text
  assert (tmp_path / "figures" / "study_accuracy.png").stat().st_size > 10_000
  assert "![Test accuracy](figures/study_accuracy.png)" in text
  assert "inference mode" not in text
  # A BN-SNN has no W_EI: its ratio cell is empty (its record holds a norm of 0), and the page
  # says what its silent layers at init measure.
  results["bn_vgg16"] = dict(_result("bn_vgg16", [44, 45, 46], group="baseline", wei=(0, 0)),
                             variant="bn")
  assert math.isnan(study_report.wei_gradient_ratio(results["bn_vgg16"]))
  text = study_report.write_page(results, tmp_path / "study.md", tmp_path / "figures",
                                 tmp_path).read_text()
  row = next(line for line in text.splitlines() if "(`bn_vgg16`)" in line)
  assert row.split(" | ")[5] == "–"
  assert "inference mode" in text


def test_study_cli_one_line_errors(capsys):
  assert study.main(["--only=no_such_condition", "--report_only"]) == 2
  assert "unknown condition(s) no_such_condition" in capsys.readouterr().err
  assert study.main(["--report_only", "stray"]) == 2
