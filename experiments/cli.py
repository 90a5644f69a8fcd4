"""The absl + ``ml_collections.config_flags`` plumbing every command-line tool shares.

A tool defines its flags in ``define_flags(flag_values, argv)``, works in ``body(flag_values,
args)``, returns ``cli.main(define_flags, body, argv, ...)`` from ``main(argv=None)`` and ends with
``cli.run_app(main)``. Each parse uses a fresh ``flags.FlagValues`` (tests call ``main`` in
process); every tool takes absl's ``--verbosity`` / ``-v``. A usage mistake, or any
``errors.UserError``, ends with one ``error: ...`` line naming the fix and exit status 2.
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import Callable, Mapping, Sequence

import ml_collections
from absl import app, flags, logging as absl_logging
from ml_collections.config_flags import config_flags

from ei_snn_jax import errors
from ei_snn_jax.training import config as config_lib

DefineFn = Callable[[flags.FlagValues, list[str]], None]
BodyFn = Callable[[flags.FlagValues, list[str]], None]

def _define(define: DefineFn, argv: Sequence[str]) -> flags.FlagValues:
  """A fresh FlagValues with the tool's flags and ``--verbosity`` / ``-v``."""
  fv = flags.FlagValues()
  flags.DEFINE_string("verbosity", "-1", "logging level: -1 warnings (default), 0 (or info) "
                      "INFO lines of absl, orbax and JAX, 1 debug", short_name="v", flag_values=fv)
  define(fv, list(argv))
  return fv


def _has_config_flag(fv: flags.FlagValues) -> bool:
  return "config" in fv and config_flags.is_config_flag(fv["config"])


def _value(argv: Sequence[str], name: str) -> str | None:
  """The value given to ``--NAME`` in ``argv`` (``--NAME=X`` or ``--NAME X``), else None."""
  for i, (key, eq, value) in enumerate(arg.partition("=") for arg in argv):
    if key in (f"-{name}", f"--{name}"):
      return value if eq else argv[i + 1] if i + 1 < len(argv) else ""
  return None


def _explain(exc: Exception, fv: flags.FlagValues, args: Sequence[str],
             required: Mapping[str, str]) -> str:
  """One line for a failed parse of ``args``: the first mistake found, with its fix."""
  for name, fix in required.items():
    if _value(args, name) in (None, ""):
      return f"missing --{name}: {fix}"
  if _has_config_flag(fv):    # apply the --config overrides one at a time: the first that fails
    overrides, valueless = [], set()
    for i, arg in enumerate(args):
      if re.match(r"^--?config\.", arg):
        key, eq, value = arg.split(".", 1)[1].partition("=")
        nxt = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else None
        valueless |= {key} if not eq and nxt is None else set()
        overrides.append(f"{key}={value if eq else nxt or 'true'}")   # bare --config.flag: true
    from_file = isinstance(fv["config"].parser, config_flags.ConfigFileFlagParser)
    try:
      config_lib.load_config(_value(args, "config"), overrides) if from_file else (
          config_lib.apply_overrides(config_lib.base_config(), overrides))
    except config_lib.ConfigError as e:
      key = next((k for k in valueless if str(e).startswith(f"{k} expects")), None)
      return f"--config.{key} needs a value: write --config.{key}=VALUE" if key else str(e)
  if isinstance(exc, flags.UnrecognizedFlagError):
    close = difflib.get_close_matches(exc.flagname, [n for n in fv if "." not in n], n=2)
    hint = f"did you mean {' or '.join('--' + c for c in close)}? " if close else ""
    return f"unknown argument --{exc.flagname}: {hint}see --help"
  return f"{' '.join(str(exc).split())} (see --help)"


def parse(define: DefineFn, argv: Sequence[str],
          required: Mapping[str, str] = {}) -> tuple[flags.FlagValues, list[str]]:  # noqa: B006
  """Define the flags on a fresh FlagValues and parse ``argv`` (program name first); returns
  the flags and the positional arguments, or raises ConfigError naming the first mistake."""
  try:
    fv = _define(define, argv)     # a config_dict flag applies its overrides while defined
    rest = fv(list(argv))
    for name in required:
      if fv[name].value in (None, ""):
        raise flags.IllegalFlagValueError(f"--{name} is required")
    if _has_config_flag(fv) and not isinstance(fv.config, ml_collections.ConfigDict):
      raise flags.IllegalFlagValueError("--config did not load a ConfigDict")   # explained below
  except Exception as e:  # noqa: BLE001 - every parse failure becomes one line
    raise config_lib.ConfigError(_explain(e, _define(define, argv[:1]), argv[1:],
                                          required)) from e
  if fv["verbosity"].present:
    try:
      absl_logging.set_verbosity(fv.verbosity)
    except (KeyError, ValueError):
      raise config_lib.ConfigError(f"--verbosity={fv.verbosity} is not a logging level: give "
                                   f"-1 (warnings), 0 or info, 1 or debug") from None
  return fv, list(rest[1:])


def print_help(define: DefineFn, argv: Sequence[str], doc: str | None) -> None:
  """The tool's docstring and its flags (what ``--help`` prints)."""
  print((doc or "").strip() + "\n\nflags:\n" +
        _define(define, argv[:1]).get_help(include_special_flags=False))


def main(define: DefineFn, body: BodyFn, argv: Sequence[str] | None = None,
         required: Mapping[str, str] = {}, doc: str | None = None) -> int:  # noqa: B006
  """Parse ``argv`` (without the program name; default ``sys.argv[1:]``) and run ``body``;
  returns 0, or 2 after a usage mistake or another ``errors.UserError`` (one ``error:`` line)."""
  argv = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
  if any(a in ("--help", "-h", "--helpshort", "--helpfull") for a in argv[1:]):
    print_help(define, argv, doc)
    return 0
  with errors.clean_errors():
    fv, rest = parse(define, argv, required)
    body(fv, rest)
  return errors.exit_status()


def run_app(tool_main: Callable[[list[str]], int]) -> None:
  """Hand a tool's ``main`` to ``absl.app.run``; the tool parses its own flags (``--verbosity``
  included), so absl's global flags keep their defaults, and logging shows warnings only."""

  def parse_nothing(argv: list[str]) -> list[str]:
    flags.FLAGS.mark_as_parsed()
    absl_logging.set_verbosity(absl_logging.WARNING)   # no INFO lines from orbax and friends
    return argv

  app.run(lambda argv: sys.exit(tool_main(argv[1:])), flags_parser=parse_nothing)
