r"""Issue 6's results table: task x family x method from the tiny pretrained models.

  python -m experiments.finetune_table --workdir=runs/finetune-table \
      [--pretrained=runs/compare/seed0] [--seeds=3] [--steps=0] [--tasks=rotten_tomatoes,...] \
      [--families=bert,gpt,t5] [--methods=full,frozen,lora,prefix,adapter]

For every task config under configs/finetune/ that runs offline and every family it
suits (TASK_FAMILIES), each method fine-tunes the family's pretrained tiny model
(`<pretrained>/<family>-<objective>-pretrain`, the default job's runs; trained here with the same
settings when missing) with the objective comparison's recipe (its updates and train
split for rotten_tomatoes and shakespeare_ner, 150 updates on the whole train split
for the other tasks; `--steps` overrides), once per fine-tuning seed, in
`<workdir>/<task>/<family>-<method>[-s<seed>]`:

  full     every parameter trains                      (lr 1e-3)
  frozen   embeddings and the bottom layer frozen      (lr 1e-3)
  lora     LoRA r=8, alpha 16 on query/value kernels   (lr 3e-3)
  prefix   16 learned key/value slots per layer        (lr 1e-2)
  adapter  bottleneck adapters of width 32             (lr 3e-3)

(parameter-efficient methods train a little of the model, so they take larger learning
rates, as the handout's recipe says; the task head always trains; sequence classification
pools the mean of the final hidden states, as the objective comparison does).  The table
(`<workdir>/table.md`, also printed) gives each task's metric on its validation split
and the trainable share of the parameters (from the run's params_report.json); for the
comparison's tasks, with the comparison's statistics (experiments/stats.py): the mean over
the seeds with its 95% paired-bootstrap interval, and each method's difference to full
fine-tuning with its p (grid.format_table).
The table is rewritten after every run; reruns skip finished runs (`table_cell.json`),
and `--collect_only` only builds the table from the runs already finished.  Total CPU time for everything: see docs/finetuning-and-peft.md.
"""
