"""One process of test_data_multiprocess.py: packed batches and a checkpointed data cursor.

  python tests/pipeline_processes.py OUT MODE NUM_PROCESSES PROCESS_ID PORT

MODE `save`: 3 batches, a checkpoint (real Checkpointer, per-process data state), then 4
more; `resume`: restore the latest checkpoint in OUT/work and take 4 batches.  Each
process writes its rows as OUT/<mode>_p<id>of<count>.npy: int32[steps, 3, B_local, L]
(tokens, segment ids, positions).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAVE_AT, AFTER = 3, 4
MIXTURE = 'shakespeare:0.6,news:0.4'  # two sources: both cursors go through the checkpoint


def main(argv):
  out, mode, count, index, port = argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5]
  import jax  # pylint: disable=g-import-not-at-top
  if count > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{port}', num_processes=count, process_id=index)
  sys.path.insert(0, HERE)
  # pylint: disable=g-import-not-at-top
  import data_testlib as lib
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  from ptlm_jax.data import pipeline
  from ptlm_jax.training import checkpoint
  config, tok = lib.small_config(mixture=MIXTURE), lib.small_tokenizer()
  config.train.update(steps=SAVE_AT, keep_checkpoints=2, keep_best_by='')
  it = pipeline.make_pretrain_iterator(config, tok)  # this process of jax's layout
  replicated = NamedSharding(Mesh(np.array(jax.devices()), ('d',)), PartitionSpec())
  ckpt = checkpoint.Checkpointer(os.path.join(out, 'work'), config)
  if mode == 'save':
    batches = [next(it) for _ in range(SAVE_AT)]
    state = {'x': jax.make_array_from_callback((2,), replicated, lambda i: np.ones(2)[i])}
    ckpt.save(SAVE_AT, state, it.get_state(), config)
    ckpt.wait()
    batches += [next(it) for _ in range(AFTER)]
  else:
    abstract = {'x': jax.ShapeDtypeStruct((2,), np.float64 if jax.config.x64_enabled
                                          else np.float32, sharding=replicated)}
    step, _, data_state = ckpt.restore_latest(abstract)
    assert step == SAVE_AT, step
    it.set_state(data_state)
    batches = [next(it) for _ in range(AFTER)]
  ckpt.close()
  it.close()
  rows = np.stack([np.stack([b['tokens'], b['segment_ids'], b['positions']]) for b in batches])
  np.save(os.path.join(out, f'{mode}_p{index}of{count}.npy'), rows)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
