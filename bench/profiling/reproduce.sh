#!/bin/sh
# Reproduce the profiles summarised in bench/profiling/README.md (writes after.txt, parts.txt).
# One worker process (plain Celery, 96 threads) so that one profile file holds it all.
set -e
cd "$(dirname "$0")/../.."
PROFILE=${TMPDIR:-/tmp}/imgmod-worker.prof
.venv/bin/python bench/throughput.py --n 2000 --db sqlite --celery --concurrency 96 --bare 0 \
    --profile "$PROFILE" | tee bench/profiling/after-run.txt
RUN=$(ls -S "$PROFILE".sqlite.* | head -1)  # one file per process: the worker's is the largest
{
    head -1 bench/profiling/after-run.txt
    .venv/bin/python bench/profiling/summary.py "$RUN" --top 25
    echo
    echo "## inclusive (CPU of each subtree, blocking excluded)"
    .venv/bin/python bench/profiling/inclusive.py "$RUN" --top 60
} > bench/profiling/after.txt
rm -f bench/profiling/after-run.txt
.venv/bin/python bench/profiling/parts.py --n 2000 | tee bench/profiling/parts.txt
