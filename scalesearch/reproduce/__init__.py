"""The paper's headline experiment as a study: one dimension at a time against compound scaling.

An *experiment* is a declarative file (``scalesearch/configs/table3.yaml``,
``figure8.yaml``; ``experiments/`` links to them): bases, one row per (method, d, w, r) or
per phi, the paper's FLOPs and top-1 for each row, named budgets and the training recipe.
``reproduce(settings)`` is what `scalesearch reproduce` runs:

1. build every row from its base at the budget's proxy resolution with the scaler, and
   count it (``plan``).  Compound rows take explicit (d, w, r), or a phi of the base's
   coefficients (d = alpha^phi, w = beta^phi, resolution fitted so measured FLOPs are
   2^phi times the base's), or ``match: singles`` (phi raised until measured FLOPs match
   the mean of the base's single-dimension rows; ``match: paper``: of those with the
   paper's figures).  Coefficients the paper does not state
   come from a phi = 1 grid search at the same proxy (``run_grid``, into OUT/grid-BASE) or
   a finished grid run (``--coefficients RUN_DIR``);
2. make a study of rows x seeds and run it with a backend (``study.run_trials``, the one run setup): the same
   recipe and seeds for every row, resumable like ``grid``;
3. summarise per row (mean and seed-to-seed std of top-1), compare compound with every
   single-dimension row of its base at equal FLOPs (``study.compare``: separable only when
   the gap exceeds twice the pooled spread), and write NAME.csv, NAME.md and the curves.

It returns a ``ReproduceResult`` and reports progress as events; it prints nothing.  The
package's modules: ``experiment`` (the file and the settings), ``plan`` (step 1), ``run``
(step 2, on the one run setup of ``study/setup.py``), ``report`` (step 3).
"""

from .experiment import (BUDGET_FIELDS, CONFIGS, EXPERIMENTS, MATCHES, METHODS, SINGLES, Experiment,
                         ExperimentError, ReproduceSettings, Row, carries_paper_figures, experiment_path,
                         load_experiment, make_settings, parse_experiment)
from .plan import (MATCH_TOLERANCE, MODEL_COLUMNS, MODELS, PHI_TARGET, Coefficients, Model, plan,
                   proxy_base)
from .report import RESULT_COLUMNS, BaseVerdict, gains, markdown, result_rows, verdicts, write_outputs
from .run import ReproduceResult, SearchStarted, check_same_reproduction, reproduce

__all__ = ["BUDGET_FIELDS", "CONFIGS", "EXPERIMENTS", "MATCHES", "MATCH_TOLERANCE", "METHODS", "MODELS",
           "MODEL_COLUMNS", "PHI_TARGET", "RESULT_COLUMNS", "SINGLES", "BaseVerdict", "Coefficients", "Experiment",
           "ExperimentError", "Model", "ReproduceResult", "ReproduceSettings", "Row", "SearchStarted",
           "carries_paper_figures", "check_same_reproduction", "experiment_path", "gains", "load_experiment",
           "make_settings", "markdown",
           "parse_experiment", "plan", "proxy_base", "reproduce", "result_rows", "verdicts", "write_outputs"]
