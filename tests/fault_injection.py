"""Trains like `tests/stand_ins.py`, with a fault injected (the fault tests run it).

  python tests/fault_injection.py hang-save WORKDIR '{"train.steps": 8}' [--sleep 0.2]

hang-save: every checkpoint save blocks forever (a save waiting on a dead process or a
hung filesystem), so only the preemption deadline can end the run.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stand_ins  # pylint: disable=g-import-not-at-top,wrong-import-position
from ptlm_jax.training import checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position


def _hang(self, directory, args):
  del self, directory, args
  time.sleep(3600)


def main(argv: list[str]) -> int:
  fault = argv.pop(1)
  if fault != 'hang-save':
    raise SystemExit(f'unknown fault {fault!r}')
  checkpoint.ProcessStateHandler.save = _hang
  return stand_ins.main(argv)


if __name__ == '__main__':
  sys.exit(main(sys.argv))
