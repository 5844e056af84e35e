"""ptlm_jax: pretrain, compare and fine-tune BERT-, GPT- and T5-style models in JAX/Flax.

Install for a CPU:      pip install -e .
                TPU:    pip install -e ".[tpu]"
                GPU:    pip install -e ".[cuda]"
                tests:  pip install -e ".[test]"   (with transformers and a CPU torch)
`./launch.sh` does this inside .venv, with the versions tested here (constraints.txt).
"""
from setuptools import find_packages, setup

setup(
    name='ptlm_jax',
    version='0.1.0',
    description='Pre-trained language models (BERT, GPT, T5) in JAX/Flax: pretraining, '
                'objective comparison, fine-tuning, PEFT and generation.',
    packages=find_packages(include=['ptlm_jax', 'ptlm_jax.*']),
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.9',
        'flax>=0.11',
        'optax>=0.2.5',
        'orbax-checkpoint>=0.11',
        'tensorflow-datasets>=4.9.7',
        'importlib_resources',          # tensorflow-datasets 4.9.10 imports it without declaring it
        'tensorflow-cpu>=2.18',         # tf.data under TFDS; the CPU build (no CUDA wheels)
        'tensorboard>=2.18',            # event files (via clu's writer)
        'clu>=0.0.12',
        'ml-collections>=1.0',
        'absl-py>=2.0',
        'sentencepiece>=0.2',
        'safetensors>=0.4',             # HF checkpoints without torch or pickle
        'tokenizers>=0.20',             # an HF checkpoint's own tokenizer (BERT WordPiece,
                                        # GPT-2 BPE, tokenizer.json): init.source=<HF dir>
                                        # needs it in every tokenising path, so it is core
        'numpy>=1.26',
        'matplotlib>=3.8',              # experiment plots
        'scipy>=1.11',                  # the comparison's bag-of-words baseline (jax needs it too)
        'rouge-score>=0.1.2',           # ROUGE for summarisation (Google's ROUGE-1.5.5 port)
        'sacrebleu>=2.4',               # BLEU for translation
    ],
    extras_require={
        'test': ['pytest>=8',
                 'seqeval>=1.2',    # reference for the entity-F1 test (not needed at run time)
                 # references for the HF tests: transformers' tokenizers and models (PyTorch);
                 # 4.57 keeps T5 v1.1's untied lm_head; torch 2.13.0 installs a CPU build
                 'transformers>=4.57,<5',
                 'torch>=2.5'],
        'hf': [],  # kept for old install commands: tokenizers is now a core dependency
        'tpu': ['jax[tpu]>=0.9'],
        'cuda': ['jax[cuda12]>=0.9'],
    },
)
