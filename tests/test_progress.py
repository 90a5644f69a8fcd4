"""The training progress bar (``metrics.Progress``): its ETA counts training steps only.

Seen by a new user (issue 22): after each evaluation the ETA jumped to hours, because tqdm's
smoothed step rate took the evaluation's minutes as the time of the next steps.
"""

import pytest

from ei_snn_jax.training import metrics


class Clock:
  """A settable clock for the bar."""

  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def bar_with_clock(clock):
  progress = metrics.Progress(total=1000, enabled=True)
  bar = progress._bar
  if bar is None:
    pytest.skip("tqdm is not installed")
  bar._time = clock
  bar.start_t = bar.last_print_t = clock.t
  bar.mininterval, bar.miniters, bar.dynamic_miniters = 0, 1, False
  return progress, bar


@pytest.mark.parametrize("excluded", [True, False])
def test_an_evaluation_does_not_poison_the_step_rate(excluded):
  clock = Clock()
  progress, bar = bar_with_clock(clock)
  for step in range(1, 21):              # 1 s per step
    clock.t += 1.0
    progress.update(step)
  clock.t += 600.0                        # a 10-minute evaluation and checkpoint
  if excluded:
    progress.exclude_pause()
  for step in range(21, 24):
    clock.t += 1.0
    progress.update(step)
  rate = bar.format_dict["rate"]          # steps per second (smoothed)
  progress.close()
  if excluded:
    assert rate == pytest.approx(1.0, rel=1e-6)
    assert bar.format_dict["elapsed"] == pytest.approx(623.0)   # wall time still counts it
  else:                                   # what the user saw: an ETA of hours
    assert 1 / rate > 50
