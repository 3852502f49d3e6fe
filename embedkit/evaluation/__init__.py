"""Chinese STS evaluation: data loading, metrics, the evaluator and grid runner, and reports.

Nothing heavy is imported here (no torch, faiss or matplotlib) so ``embedkit eval --help`` stays fast;
import from the submodules:

* :mod:`embedkit.evaluation.data`      -- the senteval_cn pair files (``<root>/<TASK>/<TASK>.<split>.data``);
* :mod:`embedkit.evaluation.metrics`   -- cosine scores, Spearman / Pearson, task averages;
* :mod:`embedkit.evaluation.evaluator` -- :class:`STSEvaluator`, the encoding cache and :func:`run_grid`;
* :mod:`embedkit.evaluation.scoring`   -- per-task scoring: protocols, ``auto``, calibration metrics;
* :mod:`embedkit.evaluation.report`    -- ``results.json``, ``report.md`` and ``report.html``.
"""

from ..constants import EVAL_PROTOCOLS as PROTOCOLS  # noqa: F401  (re-exported)
