"""worker.cli.errors.explain: the one line (and exit code) for whatever escapes a command. Pure."""

from __future__ import annotations

import errno

import kombu.exceptions
import psycopg2
import pytest
from sqlalchemy.exc import OperationalError

from worker.cli.errors import (
    BrokerUnreachable,
    DatabaseUnreachable,
    InputRefused,
    UnexpectedError,
    explain,
    mask_url,
)
from worker.settings import load_settings
from worker.sources import InputUnreadable

SETTINGS = load_settings(
    {
        "IMGMOD_DATABASE_URL": "postgresql://imgmod:hunter2@db.internal:5432/imgmod",
        "IMGMOD_BROKER_URL": "redis://:r3dis-pw@redis.internal:6379/0",
    }
)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("redis://:p@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///imgmod.db", "sqlite:///imgmod.db"),
    ],
)
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_a_database_error_names_the_masked_url_and_what_to_check() -> None:
    orig = psycopg2.OperationalError(
        'connection to server at "db.internal" failed: password hunter2 refused\n\tmore'
    )
    error = explain(OperationalError("SELECT 1", {}, orig), SETTINGS)
    assert isinstance(error, DatabaseUnreachable) and error.exit_code == 2
    assert "postgresql://imgmod:***@db.internal:5432/imgmod" in error.message
    assert "hunter2" not in error.message and "\n" not in error.message
    assert "check IMGMOD_DATABASE_URL" in error.message


def test_a_broker_error_names_the_masked_url_and_what_to_check() -> None:
    error = explain(kombu.exceptions.OperationalError("Error 111 connecting."), SETTINGS)
    assert isinstance(error, BrokerUnreachable) and error.exit_code == 2
    assert "redis://:***@redis.internal:6379/0" in error.message
    assert "r3dis-pw" not in error.message and "imgmod resume" in error.message


def test_an_input_error_is_refused_with_exit_2() -> None:
    error = explain(InputUnreadable("in.txt", "cannot be read (permission denied)"), SETTINGS)
    assert isinstance(error, InputRefused) and error.exit_code == 2
    assert error.message.startswith("in.txt: cannot be read")


def test_anything_else_is_one_line_exit_1_pointing_at_debug() -> None:
    error = explain(OSError(errno.EIO, "disk on fire\nsecond line"), None)
    assert isinstance(error, UnexpectedError) and error.exit_code == 1
    assert "\n" not in error.message and "--debug" in error.message
