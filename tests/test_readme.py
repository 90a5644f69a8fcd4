"""The README's "Compose E-I cells in your own Flax model" examples run as written."""

import pathlib
import re

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


def test_readme_has_the_two_commands_and_ci_runs_the_test_command():
  text = README.read_text()
  test_cmd = "python -m pip install -q -r requirements.txt && python -m pytest -q tests"
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
