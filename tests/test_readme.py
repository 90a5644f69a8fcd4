"""The README runs as written: its "Compose E-I cells in your own Flax model" examples, the blocks
marked `<!-- readme-test: NAME -->` (released checkpoints, streaming) and its commands."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def compose_section_blocks():
  text = README.read_text()
  section = text.split("## Compose E-I cells in your own Flax model", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_compose_examples_execute():
  blocks = compose_section_blocks()
  assert len(blocks) == 2  # Linen and NNX
  for block in blocks:
    namespace = {"__name__": "readme_example"}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README


def marked_blocks() -> dict[str, str]:
  """The README's python blocks preceded by a ``<!-- readme-test: NAME -->`` line, by NAME."""
  text = README.read_text()
  return dict(re.findall(r"<!-- readme-test: ([\w-]+) -->\n```python\n(.*?)```", text, flags=re.S))


def run_block(name: str) -> dict:
  namespace = {"__name__": "readme_example"}
  exec(compile(marked_blocks()[name], f"{README}:{name}", "exec"), namespace)  # noqa: S102
  return namespace


def test_readme_marks_its_executed_blocks():
  assert set(marked_blocks()) == {"released-checkpoints", "streaming"}


def test_streaming_example_executes():
  namespace = run_block("streaming")
  assert len(namespace["outputs"]) == 4 and namespace["outputs"][0].shape == (2, 10)
  assert set(namespace["state"]) == {"LIF_0"}


def test_released_checkpoints_example_executes(tmp_path, monkeypatch):
  """The "Use the released checkpoints" block on a folder shaped like the authors' CIFAR10-VGG8
  (the reference's key names and shapes, random weights: the real files cannot be downloaded
  here); the exported folder holds the same state dict."""
  pytest.importorskip("safetensors.numpy")
  import test_pretrained

  folder = test_pretrained.write_released(tmp_path / "checkpoints" / "CIFAR10-VGG8", "ei_vgg8")
  monkeypatch.chdir(tmp_path)
  namespace = run_block("released-checkpoints")
  assert namespace["logits"].shape == (2, 10) and bool(np.all(np.isfinite(namespace["logits"])))
  original, _ = namespace["pretrained"].read_state_dict(folder / "model.safetensors")
  exported, _ = namespace["pretrained"].read_state_dict(
      tmp_path / "exported" / "CIFAR10-VGG8" / "model.safetensors")
  assert set(exported) == set(original)
  for key, value in original.items():
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_readme_has_the_two_commands_and_ci_runs_the_test_command():
  text = README.read_text()
  test_cmd = "python -m pip install -q -r requirements.txt && python -m pytest -q -n 2 tests"
  assert test_cmd in text
  assert "python -m experiments.train --config configs/default.py --workdir runs/default" in text
  ci = (README.parent / ".ci" / "run").read_text()
  assert test_cmd in ci


def readme_commands() -> list[str]:
  """Every ``python -m experiments.X ...`` command in the README's bash blocks (continuations
  joined, trailing comments dropped)."""
  text = README.read_text()
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      for part in line.split("&&"):
        part = re.sub(r"\s+#.*$", "", part).strip()
        if part.startswith("python -m experiments."):
          commands.append(part)
  for inline in re.findall(r"`(python -m experiments\.[^`]*)`", text):
    commands.append(inline.replace("<config>", "configs/default.py"))
  return commands


def test_readme_documents_every_tool():
  tools = {c.split()[2] for c in readme_commands()}
  assert {"experiments.train", "experiments.evaluate", "experiments.sweep",
          "experiments.analyze", "experiments.report", "experiments.benchmark"} <= tools


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, monkeypatch):
  """Each documented command is accepted by its tool's flags: flag names, value types, config
  files and their overrides, sweep names (the tools themselves run end to end elsewhere)."""
  import importlib
  import shlex

  from experiments import cli

  monkeypatch.chdir(README.parent)
  words = shlex.split(command.replace("$HOME", "/home/user"))
  module = importlib.import_module(words[2])
  argv = words[3:]
  if words[2] == "experiments.benchmark":
    module.parse_args(argv)
    return
  fv, rest = cli.parse(module.define_flags, [words[2], *argv], getattr(module, "REQUIRED", {}))
  if words[2] == "experiments.sweep":
    from configs import sweeps
    assert rest and rest[0] in sweeps.SWEEPS, command
  elif words[2] == "experiments.report":
    assert rest, command
  else:
    assert rest == [], command
