"""IMGMOD_INFO_TYPE: unset means customImage,textInImage; set to empty means none, and
Docker Compose and .env.example keep that distinction."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from worker.settings import DEFAULTS, load_settings

ROOT = Path(__file__).parents[2]
DEFAULT = "customImage,textInImage"


def compose_value(environment: dict[str, str]) -> str:
    """What compose passes for IMGMOD_INFO_TYPE given the shell/.env ``environment``, by the
    interpolation rules: ``${V-d}`` uses d only when V is unset, ``${V:-d}`` also when empty."""
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-imgmod-env"][
        "IMGMOD_INFO_TYPE"
    ]
    match = re.fullmatch(r"\$\{IMGMOD_INFO_TYPE(:?-)([^}]*)\}", spec)
    assert match, spec
    colon, default = match.groups()
    value = environment.get("IMGMOD_INFO_TYPE")
    if value is None or (colon == ":-" and value == ""):
        return default
    return value


def test_unset_asks_for_custom_image_and_text_in_image() -> None:
    assert load_settings({}).info_type == DEFAULT == DEFAULTS["IMGMOD_INFO_TYPE"]


def test_explicitly_empty_asks_for_nothing() -> None:
    assert load_settings({"IMGMOD_INFO_TYPE": ""}).info_type == ""
    assert load_settings({"IMGMOD_INFO_TYPE": " , "}).info_type == ""


def test_compose_keeps_the_default_unless_the_user_sets_one() -> None:
    assert load_settings({"IMGMOD_INFO_TYPE": compose_value({})}).info_type == DEFAULT
    chosen = {"IMGMOD_INFO_TYPE": "customImage,logoData"}
    assert compose_value(chosen) == "customImage,logoData"
    assert compose_value({"IMGMOD_INFO_TYPE": ""}) == ""  # empty still means none


def test_env_example_as_copied_keeps_the_default() -> None:
    values = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert load_settings({"IMGMOD_INFO_TYPE": compose_value(values)}).info_type == DEFAULT
