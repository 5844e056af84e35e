r"""MLM vs causal LM vs span corruption at matched compute, then transfer to two tasks.

  ./launch.sh                                                  # = the command below
  python -m experiments.compare_objectives --workdir=runs/compare [--seeds=N] \
      [--finetune_seeds=2] [--corpus=news|shakespeare] [--budget_flops=6e12] \
      [--finetune_steps=300] [--ner_steps=200] [--tasks=rotten_tomatoes,shakespeare_ner]

Tiny BERT (masked LM), GPT (causal LM) and T5 (span corruption) are pretrained with one
tokenizer, one document order and the same training FLOPs (plan.py says how they are
matched); each is then fine-tuned on rotten_tomatoes (sentiment) and shakespeare_ner
(silver named entities), and so is an identical model from random weights, with
`--finetune_seeds` seeds each (runner.py).  Every fine-tuned model predicts every
validation example (downstream.py), so the report compares them paired: bootstrap
intervals over examples and seeds, paired permutation and McNemar tests, the ranking of
the objectives with its interval (analysis.py, experiments/stats.py), against baselines
trained on the same examples (baselines.py: majority class, bag of words, NER lexicon).
The job writes `<workdir>/report.md` with the verdict in words, the tables and two plots
(report.py).
"""
