"""`imgmod worker`'s processes: how many, how many threads each, their names, and the command
lines the CLI builds for them. Pure; the processes: tests/integration/test_worker_group.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from worker.cli.admin import worker_group_launch
from worker.settings import ConfigError, load_settings
from worker.supervise import member_hostname, processes_for, threads_per_process


@pytest.mark.parametrize(
    ("setting", "cores", "expected"), [(0, 2, 2), (0, 1, 1), (0, 0, 1), (3, 2, 3), (1, 8, 1)]
)
def test_auto_is_one_process_per_core_and_a_count_wins(setting, cores, expected) -> None:
    assert processes_for(setting, cores) == expected


@pytest.mark.parametrize(
    ("threads", "processes", "each"), [(192, 2, 96), (192, 1, 192), (5, 2, 3), (1, 4, 1)]
)
def test_the_threads_are_split_over_the_processes_rounding_up(threads, processes, each) -> None:
    assert threads_per_process(threads, processes) == each


def test_each_process_gets_its_own_node_name() -> None:
    assert member_hostname(None, 2) == "imgmod2@%h"
    assert member_hostname("w@box", 1) == "w-1@box"
    assert member_hostname("w", 3) == "w-3"


def test_the_setting_takes_auto_or_a_count_and_refuses_anything_else() -> None:
    assert load_settings({}).worker_processes == 0
    assert load_settings({"IMGMOD_WORKER_PROCESSES": "AUTO"}).worker_processes == 0
    assert load_settings({"IMGMOD_WORKER_PROCESSES": "3"}).worker_processes == 3
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="IMGMOD_WORKER_PROCESSES"):
            load_settings({"IMGMOD_WORKER_PROCESSES": bad})


def test_a_group_launch_carries_each_process_its_share_of_the_threads() -> None:
    settings = replace(load_settings({}), worker_concurrency=192)
    launches = worker_group_launch(settings, 2, hostname="h@box")
    assert len(launches) == 2
    for i, (argv, carried) in enumerate(launches, start=1):
        assert argv[argv.index("--concurrency") + 1] == "96"
        assert argv[argv.index("--hostname") + 1] == f"h-{i}@box"
        assert load_settings(carried).worker_concurrency == 96


def test_with_metrics_on_each_process_serves_them_on_its_own_port() -> None:
    settings = load_settings({"IMGMOD_METRICS_PORT": "9464"})
    ports = [c["IMGMOD_METRICS_PORT"] for _, c in worker_group_launch(settings, 3)]
    assert ports == ["9464", "9465", "9466"]
    assert all("IMGMOD_METRICS_PORT" not in c for _, c in worker_group_launch(load_settings({}), 2))
