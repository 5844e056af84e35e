"""The shared training loop: one train step for every family, its optimizer, losses,
parallel modes (pmap / mesh), checkpoints, metrics and initialisation from a pretrained run."""
