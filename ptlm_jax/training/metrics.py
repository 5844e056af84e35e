"""What a run reports: TensorBoard scalars, a JSON-lines copy, stdout progress, MFU, traces.

  reporter = metrics.Reporter(workdir, config, tokens_per_step=B * L, flops=step_flops,
                              peak_flops=peak_per_device * devices)
  reporter.train(step, {'loss': 5.1, 'lr': 1e-3, ...}, steps_in_window=10)
  reporter.eval(step, {'loss': 5.0, 'accuracy': 0.2, 'perplexity': 148.4})
  reporter.close()

Only process 0 writes.  Scalars go to TensorBoard event files in the workdir (clu's
metric writers; tags `train/...` and `eval/...`; `tensorboard --logdir <workdir>`) and,
one JSON object per write, to `<workdir>/metrics.jsonl` (for scripts; after a resume,
the last line of a step wins).  Each train write also prints one line:

  step   120/200 | loss 5.4321 | lr 8.0e-04 | 12.3k tok/s | 85.1 ms/step | MFU 31.2% | ETA 0:00:07

Throughput is measured over the steps since the previous write, on the host clock
after the metrics are fetched (which waits for the device).  tokens/s counts the
packed-row positions the input pipeline delivered (global batch x row length).
MFU = FLOPs per step (flops.py, the output head included) / step time / peak of
all devices; `mfu_excl_head` leaves the projection out, like the peers' harness.

`Profiler` writes a jax profiler trace (TensorBoard's profile tab) of the updates
whose 0-based step s has start <= s < end (`train.profile_steps='start:end'`) to
`<workdir>/profile`.
"""
from __future__ import annotations

import datetime
import json
import os
import time

import jax


class Reporter:
  """Writes scalars (TensorBoard + JSON lines) and prints progress; a no-op off process 0."""

  def __init__(self, workdir: str, config, *, tokens_per_step: int, flops: dict[str, float],
               peak_flops: float):
    self.primary = jax.process_index() == 0
    self.total_steps = config.train.steps
    self.tokens_per_step = tokens_per_step
    self.flops = flops
    self.peak_flops = peak_flops
    self._clock = (time.perf_counter(), 0)
    self._writer = None
    self._jsonl = None
    if self.primary:
      from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
      self._writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')

  def print(self, message: str) -> None:
    if self.primary:
      print(message, flush=True)

  def restart_clock(self, step: int) -> None:
    """Throughput is measured from here (after compilation, evaluation or a checkpoint)."""
    self._clock = (time.perf_counter(), step)

  def _throughput(self, step: int) -> dict[str, float]:
    start, start_step = self._clock
    steps = step - start_step
    if steps <= 0:
      return {}
    seconds = (time.perf_counter() - start) / steps
    out = {'step_time_ms': 1e3 * seconds, 'tokens_per_s': self.tokens_per_step / seconds}
    if self.peak_flops > 0:
      out['mfu'] = (self.flops['model'] + self.flops['head']) / seconds / self.peak_flops
      out['mfu_excl_head'] = self.flops['model'] / seconds / self.peak_flops
    return out

  def _write(self, step: int, prefix: str, scalars: dict[str, float]) -> None:
    if not self.primary:
      return
    tagged = {f'{prefix}/{k}': float(v) for k, v in scalars.items()}
    self._writer.write_scalars(step, tagged)
    self._jsonl.write(json.dumps({'step': step, **tagged}) + '\n')
    self._jsonl.flush()

  def train(self, step: int, scalars: dict[str, float]) -> None:
    """Writes the window's train scalars with throughput; prints the progress line."""
    scalars = {**scalars, **self._throughput(step)}
    self.restart_clock(step)
    self._write(step, 'train', scalars)
    line = [f'step {step:>{len(str(self.total_steps))}}/{self.total_steps}',
            f'loss {scalars["loss"]:.4f}']
    if 'lr' in scalars:
      line.append(f'lr {scalars["lr"]:.1e}')
    if 'tokens_per_s' in scalars:
      remaining = (self.total_steps - step) * scalars['step_time_ms'] / 1e3
      line += [f'{scalars["tokens_per_s"] / 1e3:.1f}k tok/s', f'{scalars["step_time_ms"]:.1f} ms/step']
      if 'mfu' in scalars:
        line.append(f'MFU {100 * scalars["mfu"]:.1f}%')
      line.append(f'ETA {datetime.timedelta(seconds=round(remaining))}')
    if scalars.get('skipped'):
      line.append(f'skipped {int(scalars["skipped"])}')
    self.print(' | '.join(line))

  def eval(self, step: int, scalars: dict[str, float]) -> None:
    self._write(step, 'eval', scalars)
    self.print(f'eval at step {step}: ' + ' | '.join(
        f'{k} {v:.4f}' for k, v in scalars.items() if k != 'tokens'))

  def hparams(self, flat_config: dict) -> None:
    if self.primary:
      self._writer.write_hparams(flat_config)

  def close(self) -> None:
    if self.primary:
      self._writer.close()
      self._jsonl.close()


class Profiler:
  """A jax profiler trace of the steps in `train.profile_steps` ('start:end'), process 0 only."""

  def __init__(self, workdir: str, spec: str):
    self.range = tuple(int(s) for s in spec.split(':')) if spec else None
    self.directory = os.path.join(workdir, 'profile')
    self.active = False

  def before(self, step: int) -> None:
    if self.range and step == self.range[0] and jax.process_index() == 0:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Stops after the update from `step` once `outputs` are computed."""
    if self.active and step + 1 >= self.range[1]:
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.active = False
