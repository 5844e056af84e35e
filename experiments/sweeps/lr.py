r"""Peak learning rate of the tiny GPT (causal LM on the news corpus): 3e-4 to 3e-3.

  ./launch.sh sweep experiments/sweeps/lr.py --workdir=runs/sweep-lr        # ~6 min on 2 CPU cores
  ./launch.sh sweep experiments/sweeps/lr.py --workdir=runs/sweep-lr --dry_run
  python -m experiments.collect --workdir=runs/sweep-lr

Each entry of RUNS is (name, config file:arg, overrides); the name is the run's
directory under --workdir.  Everything but the learning rate is shared.
"""
CONFIG = 'configs/gpt.py:tiny'
COMMON = {'train.steps': 150, 'train.eval_every': 50, 'train.eval_steps': 4,
          'optim.warmup_steps': 15, 'data.sp_vocab_size': 2000, 'model.vocab_size': 2176}
RUNS = [(f'lr={lr:g}', CONFIG, {**COMMON, 'optim.lr': lr}) for lr in (3e-4, 1e-3, 3e-3)]
