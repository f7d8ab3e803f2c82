"""The ``imgmod emulator`` and ``imgmod sample-images`` commands (``python -m worker.emulator``).

The lead registers both in the CLI group; this module only defines them.
"""

from __future__ import annotations

from pathlib import Path

import click

from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET
from worker.emulator.auth import AccessKey, parse_key_option
from worker.emulator.faults import Knobs
from worker.emulator.rules import load_rules

_PROBABILITY = click.FloatRange(0.0, 1.0)


def _parse_keys(values: tuple[str, ...]) -> tuple[AccessKey, ...]:
    if not values:
        return (AccessKey(TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET),)
    try:
        return tuple(parse_key_option(value) for value in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option(
    "--qps",
    default=100.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Calls per second per AccessKey before Code 403.",
)
@click.option(
    "--latency-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Added before every answer.",
)
@click.option(
    "--jitter-ms",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Uniform random extra latency, 0..N ms.",
)
@click.option(
    "--download-timeout",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds before an image download gives Code 405 (the vendor's is 3).",
)
@click.option(
    "--oss-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory standing in for OSS: DIR/<region>/<bucket>/<object>.",
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file pinning answers for chosen images.",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="ID:SECRET[:noperm]",
    help="An accepted AccessKey (repeatable); :noperm makes calls answer Code 408. "
    f"Default: the test pair {TEST_ACCESS_KEY_ID}:<documented test secret>.",
)
@click.option("--fault-405", default=0.0, type=_PROBABILITY, help="Probability of Code 405.")
@click.option("--fault-500", default=0.0, type=_PROBABILITY, help="Probability of Code 500.")
@click.option(
    "--fault-reset",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of aborting the connection without an answer.",
)
@click.option(
    "--fault-slow",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of answering only after --slow-ms.",
)
@click.option(
    "--slow-ms",
    default=15_000.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Delay of a slow answer.",
)
@click.option(
    "--fault-malformed",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of HTTP 200 with a non-JSON or truncated body.",
)
@click.option(
    "--fault-gateway-5xx",
    default=0.0,
    type=_PROBABILITY,
    help="Probability of HTTP 502/503 with an HTML or empty body.",
)
@click.option("--seed", type=int, default=None, help="Seed for faults and jitter.")
@click.option(
    "--oss-port",
    default=0,
    show_default=True,
    type=int,
    help="Port of the OSS endpoint (path-style); 0 picks a free one, printed at start.",
)
@click.option(
    "--oss-region",
    default="ap-southeast-1",
    show_default=True,
    help="The region the OSS endpoint serves (DIR/<region>/ under --oss-root).",
)
@click.option(
    "--oss-synthetic",
    multiple=True,
    metavar="BUCKET=N",
    help="A generated bucket of N small PNGs img/000000000.png... (repeatable).",
)
@click.option(
    "--oss-deny-list",
    multiple=True,
    metavar="BUCKET",
    help="Deny oss:ListObjects on BUCKET (repeatable): listing it answers 403 AccessDenied.",
)
@click.option(
    "--upload-token-ttl",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a DescribeUploadToken credential stays valid.",
)
def emulator_command(
    host: str,
    port: int,
    qps: float,
    latency_ms: float,
    jitter_ms: float,
    download_timeout: float,
    oss_root: Path | None,
    rules_file: Path | None,
    keys: tuple[str, ...],
    fault_405: float,
    fault_500: float,
    fault_reset: float,
    fault_slow: float,
    slow_ms: float,
    fault_malformed: float,
    fault_gateway_5xx: float,
    seed: int | None,
    oss_port: int,
    oss_region: str,
    oss_synthetic: tuple[str, ...],
    oss_deny_list: tuple[str, ...],
    upload_token_ttl: float,
) -> None:
    """Run the local stand-in for the ImageModeration API (a test double, not a classifier)."""
    from worker.emulator.oss import OssKnobs
    from worker.emulator.oss_store import parse_synthetic
    from worker.emulator.server import EmulatorOptions, run_emulator

    try:
        rules = load_rules(rules_file) if rules_file is not None else ()
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--rules") from None
    try:
        synthetic = tuple(parse_synthetic(value) for value in oss_synthetic)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--oss-synthetic") from None
    knobs = Knobs(
        qps=qps,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        slow_ms=slow_ms,
        fault_405=fault_405,
        fault_500=fault_500,
        fault_reset=fault_reset,
        fault_slow=fault_slow,
        fault_malformed=fault_malformed,
        fault_gateway_5xx=fault_gateway_5xx,
    )
    options = EmulatorOptions(
        keys=_parse_keys(keys),
        host=host,
        port=port,
        knobs=knobs,
        download_timeout=download_timeout,
        oss_root=oss_root,
        rules=rules,
        seed=seed,
        oss_port=oss_port,
        oss_region=oss_region,
        oss_synthetic=synthetic,
        oss_knobs=OssKnobs(oss_deny_list=oss_deny_list),
        upload_token_ttl=upload_token_ttl,
    )
    run_emulator(options)


@click.command("sample-images")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8081, show_default=True, type=int, help="Port; 0 picks a free one.")
def images_command(host: str, port: int) -> None:
    """Serve deterministic sample images (and broken ones) for demos and tests."""
    from worker.emulator.sample_server import run_sample_server

    run_sample_server(host, port)
