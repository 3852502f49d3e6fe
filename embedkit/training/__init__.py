"""Fine-tuning a sentence encoder on the user's pairs (``embedkit finetune``), guarded by held-back eval.

* :mod:`embedkit.training.data`    -- reading and checking training / valid pairs, the seeded split;
* :mod:`embedkit.training.scoring` -- the held-back score with embedkit's evaluation (Spearman, MRR@10);
* :mod:`embedkit.training.negatives` -- hard negatives mined with an existing embedkit index;
* :mod:`embedkit.training.trainer` -- sentence-transformers' trainer, losses and callbacks (heavy imports);
* :mod:`embedkit.training.guard`   -- the guard: no model unless it beats the base on valid;
* :mod:`embedkit.training.card`    -- the training card beside the model;
* :mod:`embedkit.training.workdir` -- checkpoints, resume and the atomic hand-over;
* :mod:`embedkit.training.run`     -- :func:`finetune`, tying them together.

Importing this package loads neither torch nor sentence-transformers; :func:`finetune` does when it runs.
Training needs the optional extra ``embedkit[train]`` (``datasets``, ``accelerate``). The index package
never imports this one."""

from .guard import GuardError
from .run import DEFAULTS, FinetuneResult, finetune

__all__ = ["DEFAULTS", "FinetuneResult", "GuardError", "finetune"]
