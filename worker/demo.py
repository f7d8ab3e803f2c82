"""``imgmod demo``: a real job end to end on this machine, in one command.

Starts the emulator, a server of generated sample images and a Celery worker, writes a mixed
input (good images, missing ones, not-an-image, too slow, duplicates, bad lines), runs
``imgmod run`` over it as a user would, prints the report and checks the billing. Then a small
bucket in the emulator's OSS is run twice as two nightly jobs over the same prefix: the first
bills each image once, the second bills 0 (every object unchanged, its answer reused). Last, a
local folder of sample images (one a byte-identical copy) is run: each file is uploaded to the
emulator's OSS under a DescribeUploadToken's STS credentials and moderated by its OSS triple,
and the copy waits for its twin's answer instead of being billed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import click

from worker.processes import (
    private_redis,
    redis_reachable,
    running_emulator,
    running_image_server,
    start_worker,
)

LOCAL_REDIS = "redis://127.0.0.1:6379/13"
OSS_REGION = "ap-southeast-1"
OSS_BUCKET, OSS_PREFIX, OSS_IMAGES = "demo-archive", "uploads/", 12
FOLDER_IMAGES = 6  # distinct files in the folder job, plus one byte-identical copy


def choose_broker(stack: ExitStack, workdir: Path) -> tuple[str, str]:
    """Redis on localhost, else a private redis-server, else kombu's SQLAlchemy transport."""
    if redis_reachable(LOCAL_REDIS):
        return LOCAL_REDIS, f"Redis on localhost ({LOCAL_REDIS})"
    try:
        server = stack.enter_context(private_redis())
        return server.url, f"a private redis-server on port {server.port}"
    except FileNotFoundError:
        url = f"sqla+sqlite:///{workdir / 'broker.db'}"
        return url, "an embedded broker (kombu SQLAlchemy transport on SQLite; no Redis found)"


def write_inputs(workdir: Path, url: Callable[..., str], count: int) -> tuple[list[Path], int]:
    """The demo's input files; returns them and how many distinct images should be billed.
    ``url(n, ext)`` is the sample server's URL of image ``n``."""
    exts = ["png", "jpg", "gif", "bmp", "webp"]
    base = url(0).rsplit("/img/", 1)[0]
    good = max(1, count - 40)
    lines = ["# imgmod demo input", ""]
    lines += [url(i, exts[i % len(exts)]) for i in range(good)]
    lines += [url(i, exts[i % len(exts)]) for i in range(10)]  # duplicates
    lines += [f"{base}/missing/{i}.png" for i in range(6)]  # 404
    lines += [f"{base}/text/{i}.txt" for i in range(6)]  # 407
    lines += [f"{base}/slow/{i}.png?ms=4500" for i in range(2)]  # 405, retried, then failed
    lines += [
        "ftp://example.com/a.png",
        "not a url",
        "javascript:alert(1)",
        base + "/img/" + "x" * 2100 + ".png",
    ]
    txt = workdir / "urls.txt"
    txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["url,data_id,referer"]
    rows += [f"{url(1000 + i, 'png')},demo-{i},demo.example" for i in range(10)]
    rows += [f"{url(2000, 'png')},bad id with spaces,", f"{url(2001, 'png')},{'x' * 70},"]
    csv = workdir / "extra.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [txt, csv], good + 10


def write_bucket(oss_root: Path) -> int:
    """A small bucket in the emulator's ``--oss-root``: sample images under :data:`OSS_PREFIX`
    (plus a text file the default filters skip); returns how many images a run should bill."""
    from worker.emulator.samples import png_bytes

    folder = oss_root / OSS_REGION / OSS_BUCKET / OSS_PREFIX
    folder.mkdir(parents=True)
    for n in range(OSS_IMAGES):
        (folder / f"{n:03d}.png").write_bytes(png_bytes(5000 + n))
    (folder / "notes.txt").write_text("not an image\n", encoding="utf-8")
    return OSS_IMAGES


FOLDER_SERVICES = "baselineCheck_global,aigcDetector_global"  # both, in one job


def write_folder(workdir: Path) -> tuple[Path, int]:
    """A local folder of sample images in subfolders, one of them copied byte for byte under
    another name, and a text file the default filters skip; returns it and how many calls
    it should bill (distinct contents: the copy takes its twin's answer)."""
    from worker.emulator.samples import png_bytes

    folder = workdir / "photos"
    for n in range(FOLDER_IMAGES):
        path = folder / ("2024" if n % 2 else "2025") / f"photo-{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(7000 + n))
    (folder / "copy-of-photo-0.png").write_bytes(png_bytes(7000))
    (folder / "index.txt").write_text("not an image\n", encoding="utf-8")
    return folder, FOLDER_IMAGES


def run_folder(cli: list[str], env: dict[str, str], folder: Path, billed: Callable[[], int]) -> int:
    """The folder job (uploads through DescribeUploadToken, then moderation by the OSS
    triple) asking both services of every file; returns what it billed, or -1 when the run
    did not end with every file done."""
    before = billed()
    click.echo(f"\n$ imgmod run {folder} --job demo-folder --service {FOLDER_SERVICES}")
    run = subprocess.run(
        [*cli, "run", str(folder), "--job", "demo-folder", "--service", FOLDER_SERVICES],
        env=env,
        check=False,
    )
    return billed() - before if run.returncode == 0 else -1


def run_oss_nights(cli: list[str], env: dict[str, str], billed: Callable[[], int]) -> list[int]:
    """The same OSS prefix run as two nightly jobs: what each billed (the second should be 0,
    every row reusing the first night's answer)."""
    target = f"oss://{OSS_BUCKET}/{OSS_PREFIX}"
    bills = []
    for night in (1, 2):
        before = billed()
        click.echo(f"\n$ imgmod run {target} --oss-region {OSS_REGION} --job demo-oss-{night}")
        subprocess.run(
            [*cli, "run", target, "--oss-region", OSS_REGION, "--job", f"demo-oss-{night}"],
            env=env,
            check=False,
        )
        bills.append(billed() - before)
    return bills


def run_demo(images: int) -> int:
    from worker.emulator import TEST_ACCESS_KEY_ID, TEST_ACCESS_KEY_SECRET

    workdir = Path(tempfile.mkdtemp(prefix="imgmod-demo-"))
    click.echo(f"demo directory: {workdir}")
    with ExitStack() as stack:
        broker_url, how = choose_broker(stack, workdir)
        click.echo(f"broker: {how}")
        samples = stack.enter_context(running_image_server())
        emulator = stack.enter_context(
            running_emulator(
                qps=100,
                latency_ms=40,
                jitter_ms=40,
                download_timeout=3.0,
                oss_root=workdir / "oss",
                oss_region=OSS_REGION,
            )
        )
        click.echo(f"emulator: {emulator.url} (cap 100/s); sample images: {samples.url}")
        env = {
            "IMGMOD_DATABASE_URL": f"sqlite:///{workdir / 'imgmod.db'}",
            "IMGMOD_BROKER_URL": broker_url,
            "IMGMOD_ENDPOINT": emulator.url,
            "IMGMOD_OSS_ENDPOINT": emulator.oss_url,
            "IMGMOD_QPS": "100",
            "IMGMOD_INFO_TYPE": "customImage,textInImage,publicFigure,logoData",
            "IMGMOD_WORKER_CONCURRENCY": "32",
            "IMGMOD_RETRY_PER_CODE": "405=2",
            "IMGMOD_BACKOFF_BASE": "0.2",
            "IMGMOD_BACKOFF_CAP": "2",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_ACCESS_KEY_SECRET,
        }
        full_env = {**os.environ, **env}
        inputs, distinct_good = write_inputs(workdir, samples.image_url, images)
        oss_images = write_bucket(workdir / "oss")
        folder, folder_images = write_folder(workdir)
        cli = [sys.executable, "-m", "worker.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=full_env, check=True)
        worker = start_worker(env, workdir / "worker.log", concurrency=32)
        stack.callback(worker.terminate)
        click.echo(f"worker started (log: {workdir / 'worker.log'})")
        run = subprocess.run([*cli, "run", *map(str, inputs), "--job", "demo"], env=full_env)
        subprocess.run([*cli, "report", "demo"], env=full_env, check=False)
        status = json.loads(
            subprocess.run(
                [*cli, "status", "demo", "--json"], env=full_env, capture_output=True, text=True
            ).stdout
        )
        stats = emulator.stats()
        nights = run_oss_nights(cli, full_env, lambda: int(emulator.stats()["billed"]))
        folder_billed = run_folder(cli, full_env, folder, lambda: int(emulator.stats()["billed"]))
        uploads = int(emulator.stats().get("oss", {}).get("put", 0))
    states = status["states"]
    billed, done = int(stats["billed"]), int(states.get("done", 0))
    max_per_image = max(stats.get("billed_by_image", {}).values() or [0])
    click.echo(
        f"emulator billed {billed} calls for {done} done references "
        f"(expected {distinct_good}); most billed for one image: {max_per_image}"
    )
    click.echo(
        f"export the results: IMGMOD_DATABASE_URL=sqlite:///{workdir / 'imgmod.db'} "
        "imgmod export demo --format jsonl"
    )
    click.echo(
        f"OSS prefix oss://{OSS_BUCKET}/{OSS_PREFIX}: first night billed {nights[0]} "
        f"(expected {oss_images}), second night billed {nights[1]} (expected 0: every object "
        "unchanged, its answer reused)"
    )
    ok = run.returncode in (0, 3) and billed == done == distinct_good and max_per_image <= 1
    click.echo(
        f"folder {folder}, two services: billed {folder_billed} (expected {2 * folder_images}: "
        "each image once per service, the copy reused its twin's answers), "
        f"{uploads} files uploaded through DescribeUploadToken's STS credentials"
    )
    ok = ok and nights == [oss_images, 0] and folder_billed == 2 * folder_images and uploads >= 1
    click.echo("demo: OK" if ok else "demo: something is off (see above)")
    return 0 if ok else 1
