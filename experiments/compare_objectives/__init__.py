r"""MLM vs causal LM vs span corruption at matched compute, then transfer to sentiment.

  ./launch.sh                                                  # = the command below
  python -m experiments.compare_objectives --workdir=runs/compare [--seeds=N] \
      [--corpus=news|shakespeare] [--budget_flops=2.4e12] [--finetune_steps=300]

Tiny BERT (masked LM), GPT (causal LM) and T5 (span corruption) are pretrained with one
tokenizer, one document order and the same training FLOPs (plan.py says how they are
matched); each is then fine-tuned on rotten_tomatoes, and so is an identical model from
random weights (runner.py).  The job writes `<workdir>/report.md` with the table
(objective, params, tokens seen, training FLOPs, validation loss / accuracy /
perplexity, downstream accuracy pretrained vs from scratch, wall time) and two plots
(report.py).  With `--seeds=N` everything runs N times and the report gives mean ±
standard deviation.
"""
