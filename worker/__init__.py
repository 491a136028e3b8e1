"""Celery side of postroom: the app, its configuration, the retry policy and thin tasks."""

import os

# One BLAS thread per worker process, set before numpy loads: a prefork child is one core's
# worth of work, and BLAS threads spinning beside it made a tenant's model refit cost 5.6 s
# of CPU instead of 1.0 s (docs/classifier.md). An operator's own setting wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
