r"""MLM vs causal LM vs span corruption vs prefix LM at matched compute, objective separated
from architecture, then transfer to two tasks.

  ./launch.sh                                                  # = the command below
  python -m experiments.compare_objectives --workdir=runs/compare [--seeds=N] \
      [--arms=bert:mlm,gpt:causal_lm,gpt:prefix_lm,t5:span_corruption,t5:prefix_lm] \
      [--optimizer=adamw|adafactor|family] [--finetune_seeds=1] [--corpus=news|shakespeare] \
      [--budget_flops=3e12] [--finetune_steps=300] [--ner_steps=200] [--noprobe] \
      [--tasks=rotten_tomatoes,shakespeare_ner]
  python -m experiments.compare_objectives --preset=pod --workdir=/gcs/BUCKET/compare-pod \
      [--dry_run]                                              # base size on C4 + GLUE, a sweep

Each arm (architecture:objective, plan.py) is pretrained with one tokenizer, one document
order, one optimizer and schedule, and the same training FLOPs; a linear probe on frozen
features (ptlm_jax/finetune/probe.py) scores every arm on rotten_tomatoes at each
evaluation, one metric for all objectives.  Each pretrained model is then fine-tuned on
rotten_tomatoes (sentiment) and shakespeare_ner (silver named entities), and so is each
architecture from random weights (runner.py).  Every fine-tuned model predicts every
validation example (downstream.py), so the report compares them paired: bootstrap
intervals over examples and seeds, paired permutation and McNemar tests, the ranking of
the arms, the attribution pairs that hold one factor fixed (analysis.py,
experiments/stats.py), against baselines trained on the same examples (baselines.py).
The job writes `<workdir>/report.md` with the verdict in words, the tables and three plots
(report.py).  `--preset=pod` writes the same comparison at base size as a TPU sweep (pod.py).
"""
