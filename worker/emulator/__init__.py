"""A local emulator of Alibaba Cloud's ImageModeration API (Green 2022-03-02), and a sample image
server, so the real client code paths run over real HTTP without the vendor.

Start it with ``imgmod emulator`` / ``python -m worker.emulator``; from Python (the demo, the
tests, the benchmarks) with :func:`worker.processes.running_emulator`. The test AccessKey pair
below is accepted by default; it is a documented dummy, never a real credential.
"""

from __future__ import annotations

from worker.emulator.answers import expected_answer
from worker.emulator.samples import sample_bytes_for_path, sample_image_bytes

TEST_ACCESS_KEY_ID = "emulator-test-key"
TEST_ACCESS_KEY_SECRET = "emulator-test-secret"  # noqa: S105 - a documented dummy for the emulator

__all__ = [
    "TEST_ACCESS_KEY_ID",
    "TEST_ACCESS_KEY_SECRET",
    "expected_answer",
    "sample_bytes_for_path",
    "sample_image_bytes",
]
