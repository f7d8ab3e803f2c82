"""``python -m worker.cli``: the same as the ``imgmod`` script."""

from worker.cli import main

main()
