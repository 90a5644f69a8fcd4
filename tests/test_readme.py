"""The README's "Compose E-I cells in your own Flax model" examples run as written."""

import pathlib
import re

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
