"""Command-line entry points; each parses absl flags and calls one importable function.

  python -m ptlm_jax.main           train / fine-tune (--config, --workdir)
  python -m ptlm_jax.main.prepare   build the corpus and tokenizer, print data statistics
  python -m ptlm_jax.main.generate  generate text / fill masks from a workdir or HF dir
  python -m ptlm_jax.main.estimate  time, memory, energy and cost of a config
  python -m ptlm_jax.main.hf        import / export HF checkpoints and model dirs
"""
from ptlm_jax import config_lib


def run(config, workdir: str, components_fn=None) -> dict[str, float]:
  """Validates the config and runs the job it describes (importable, e.g. from a notebook).

  components_fn: config -> train.Components for a pretraining config (default: the real
  `train.build_components`), e.g. to add an `extra_eval` such as a linear probe."""
  # pylint: disable=g-import-not-at-top  (heavy imports only once the config is checked)
  from ptlm_jax.data import local_files
  from ptlm_jax.main import cli
  local_files.resolve(config)  # your own files: checked, and classes / steps filled in
  config_lib.validate(config)
  cli.quiet_logs()  # after the cheap checks: it imports TensorFlow
  if config.task.name:  # fine-tuning: task data, head, objective, loss and task metrics
    from ptlm_jax.finetune import run as finetune
    return finetune.train_and_evaluate(config, workdir)
  from ptlm_jax.training import train
  return train.run(config, workdir, components_fn or train.build_components)
