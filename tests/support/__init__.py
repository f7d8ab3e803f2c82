"""What the integration and fault tests share: one stack of real processes (:class:`Stack`),
one way to run ``imgmod`` as a user does (:func:`run_imgmod`, :func:`start_imgmod`), one
polling helper with a deadline (:func:`wait_until`, the one the production helpers use too),
and the emulator with a signed test client (:class:`Emulator`).

Importable as ``tests.support`` because pyproject's pytest options put the repository root on
``sys.path``; fixtures stay in the ``conftest.py`` files.
"""

from tests.support.commands import run_imgmod, start_imgmod
from tests.support.emulator import Emulator, Reply, running_emulator
from tests.support.stack import Stack, open_stack, stack_env
from worker.processes import wait_until

__all__ = [
    "Emulator",
    "Reply",
    "Stack",
    "open_stack",
    "run_imgmod",
    "running_emulator",
    "stack_env",
    "start_imgmod",
    "wait_until",
]
