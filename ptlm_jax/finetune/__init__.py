"""Fine-tuning on downstream tasks: task configs (`tasks`), task datasets (`corpora`),
features (`data`, `qa`), losses (`objectives`), evaluation (`evaluate`, `metrics`), and the
components the shared training loop runs (`run`).  Importing this package loads no jax."""
