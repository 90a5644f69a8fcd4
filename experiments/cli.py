"""The absl + ``ml_collections.config_flags`` plumbing every command-line tool shares.

A tool defines its flags in ``define_flags(flag_values, argv)`` (absl flags and, for the config,
``config_flags.DEFINE_config_file`` / ``DEFINE_config_dict``), does its work in
``body(flag_values, args)``, and ends with ``cli.run_app(main)``, which hands over to ``absl.app``:

  def main(argv=None) -> int:
    return cli.main(define_flags, body, argv, required=REQUIRED)

  if __name__ == "__main__":
    cli.run_app(main)

Each call parses into a fresh ``flags.FlagValues``, so ``main([...])`` can run in-process any
number of times (the tests do). Every usage mistake (unknown flag, unknown config key with close
matches, a value of the wrong type, a missing config file or required flag, an override without a
value) ends with one ``error: ...`` line naming the fix and exit status 2, as does any
``errors.UserError`` raised by the work itself.
"""

from __future__ import annotations

import difflib
import pathlib
import re
import sys
from typing import Callable, Mapping, Sequence

import ml_collections
from absl import app, flags, logging as absl_logging

from ei_snn_jax import errors
from ei_snn_jax.training import config as config_lib

DefineFn = Callable[[flags.FlagValues, list[str]], None]
BodyFn = Callable[[flags.FlagValues, list[str]], None]

CONFIG_HINT = "pass --config=configs/NAME.py[:ARG], e.g. --config=configs/default.py"


def _config_flag_names(fv: flags.FlagValues) -> list[str]:
  """Names of the ml_collections config flags defined on ``fv`` (not their override flags)."""
  names = []
  for name, flag in fv._flags().items():  # pylint: disable=protected-access
    if "." not in name and type(flag).__module__.startswith("ml_collections.config_flags"):
      names.append(name)
  return sorted(set(names))


def _overrides(argv: Sequence[str], name: str) -> list[tuple[str, str | None]]:
  """``--NAME.key=value`` / ``--NAME.key value`` pairs of ``argv`` (value None when missing)."""
  out = []
  for i, arg in enumerate(argv):
    m = re.match(rf"^--?{name}\.([^=]*)(=(.*))?$", arg)
    if not m:
      continue
    value = m.group(3)
    if m.group(2) is None:
      nxt = argv[i + 1] if i + 1 < len(argv) else None
      value = None if nxt is None or nxt.startswith("--") else nxt
    out.append((m.group(1), value))
  return out


def _config_spec(argv: Sequence[str], name: str) -> str | None:
  """The value given to ``--NAME`` in ``argv`` (either ``--NAME=X`` or ``--NAME X``)."""
  for i, arg in enumerate(argv):
    if arg in (f"--{name}", f"-{name}"):
      return argv[i + 1] if i + 1 < len(argv) else ""
    if arg.startswith(f"--{name}=") or arg.startswith(f"-{name}="):
      return arg.split("=", 1)[1]
  return None


def _missing_file_error(spec: str) -> config_lib.ConfigError:
  """A config file that does not exist (or a directory), with close matches among
  ./configs/**.py."""
  path = spec.partition(".py:")[0] + ".py" if ".py:" in spec else spec
  if pathlib.Path(path).is_dir():
    return config_lib.ConfigError(f"config path {path!r} is a directory, not a config file: "
                                  f"{CONFIG_HINT}")
  candidates = sorted(str(p) for p in pathlib.Path("configs").rglob("*.py")
                      if p.name not in ("__init__.py", "common.py", "sweeps.py"))
  close = difflib.get_close_matches(path, candidates, n=3)
  hint = f" (did you mean {', '.join(close)}?)" if close else ""
  return config_lib.ConfigError(f"config file {path!r} not found{hint}: {CONFIG_HINT}, "
                                f"relative to the current directory")


def _explain(exc: Exception, define: DefineFn, argv: Sequence[str],
             required: Mapping[str, str]) -> str:
  """One line for a failed parse: the first mistake found in ``argv``, with its fix."""
  args = list(argv[1:])
  fv = flags.FlagValues()
  define(fv, list(argv[:1]))   # the tool's flags, without the overrides that failed
  for name, fix in required.items():
    if _config_spec(args, name) in (None, ""):
      return f"missing --{name}: {fix}"
  for name in _config_flag_names(fv):
    if type(fv[name].parser).__name__ == "ConfigFileFlagParser":     # DEFINE_config_file
      spec = _config_spec(args, name)
      if spec is not None and not pathlib.Path(spec.partition(".py:")[0] + ".py"
                                               if ".py:" in spec else spec).is_file():
        return str(_missing_file_error(spec))
      try:
        cfg = config_lib.load_config(spec) if spec else config_lib.base_config()
      except config_lib.ConfigError as e:
        return str(e)
      except Exception as e:  # noqa: BLE001 - a broken config file: say which and why
        return (f"{spec}: get_config() failed: {type(e).__name__}: {e}: fix the config file "
                f"(fields and types are those of ei_snn_jax.training.config.base_config)")
    else:                                              # DEFINE_config_dict
      cfg = config_lib.base_config()
    for key, value in _overrides(args, name):
      if value is None:
        return f"--{name}.{key} needs a value: write --{name}.{key}=VALUE"
      try:
        config_lib.set_field(cfg, key, value)
      except config_lib.ConfigError as e:
        return str(e)
  if isinstance(exc, flags.UnrecognizedFlagError):
    known = [n for n in fv._flags() if "." not in n]  # pylint: disable=protected-access
    close = difflib.get_close_matches(exc.flagname, known, n=2)
    hint = f"did you mean {' or '.join('--' + c for c in close)}? " if close else ""
    return f"unknown argument --{exc.flagname}: {hint}see --help"
  return f"{' '.join(str(exc).split())} (see --help)"


def parse(define: DefineFn, argv: Sequence[str],
          required: Mapping[str, str] = {}) -> tuple[flags.FlagValues, list[str]]:  # noqa: B006
  """Define the flags on a fresh FlagValues and parse ``argv`` (program name first).

  Returns the parsed flags and the remaining positional arguments. Raises ConfigError with one
  line naming the first mistake and its fix.
  """
  argv = list(argv)
  fv = flags.FlagValues()
  try:
    define(fv, argv)       # a config_dict flag applies the overrides already while defined
    rest = fv(argv)
    for name in required:
      if fv[name].value in (None, ""):
        raise flags.IllegalFlagValueError(f"--{name} is required")
    for name in _config_flag_names(fv):
      # A config file that failed to load (missing, a directory, broken) or whose get_config()
      # returned something else gives a placeholder that raises only when used.
      if not isinstance(fv[name].value, (ml_collections.ConfigDict,
                                         ml_collections.FrozenConfigDict)):
        raise flags.IllegalFlagValueError(f"--{name} did not load a ConfigDict")
  except Exception as e:  # noqa: BLE001 - every parse failure becomes one line
    raise config_lib.ConfigError(_explain(e, define, argv, required)) from e
  return fv, list(rest[1:])


def print_help(define: DefineFn, argv: Sequence[str], doc: str | None) -> None:
  """The tool's docstring and its flags (what ``--help`` prints)."""
  fv = flags.FlagValues()
  define(fv, [argv[0]])
  print((doc or "").strip() + "\n\nflags:\n" + fv.get_help(include_special_flags=False))


def main(define: DefineFn, body: BodyFn, argv: Sequence[str] | None = None,
         required: Mapping[str, str] = {}, doc: str | None = None) -> int:  # noqa: B006
  """Parse ``argv`` (without the program name; default ``sys.argv[1:]``) and run ``body``.

  Returns the exit status: 0, or 2 after a usage mistake or another ``errors.UserError`` (printed
  as one ``error:`` line on stderr).
  """
  argv = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
  if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv[1:]):
    print_help(define, argv, doc)
    return 0
  with errors.clean_errors():
    fv, rest = parse(define, argv, required)
    body(fv, rest)
  return errors.exit_status()


def run_app(tool_main: Callable[[list[str]], int]) -> None:
  """Hand a tool's ``main`` to ``absl.app.run`` (absl's logging and exception handling); the
  tool parses its own flags, so absl's global flags keep their defaults."""

  def parse_nothing(argv: list[str]) -> list[str]:
    flags.FLAGS.mark_as_parsed()
    absl_logging.set_verbosity(absl_logging.WARNING)   # no INFO lines from orbax and friends
    return argv

  app.run(lambda argv: sys.exit(tool_main(argv[1:])), flags_parser=parse_nothing)
