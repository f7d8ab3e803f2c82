"""``imgmod report JOB --html FILE``: one self-contained HTML file of a job's figures.

Why one file with everything inlined (Chart.js, the chart code, the styles, the figures as
JSON): it is mailed, archived and opened offline, so it may load nothing from anywhere. The
figures are :mod:`worker.report_data`'s; the page is ``worker/templates/report.html``
(Jinja2, autoescaped: labels, error texts and input names come from the archive and the API,
not from us). Every chart's numbers are also in a table with ``data-`` attributes, for a
reader without JavaScript, a printout, and the browser test.
"""

from __future__ import annotations

import os
import re
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from worker.report_data import ReportData, chart_json

# Chart.js as published on npm (chart.js@4.6.2, dist/chart.umd.min.js, MIT; see
# worker/assets/README.md for its source and checksum).
CHART_JS = "chart.umd.min.js"
CHART_JS_VERSION = "4.6.2"
CHARTS_JS = "report_charts.js"
CSS = "report.css"
# A source map comment would make a browser's developer tools look for a file that isn't there.
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)
_BREAKS_OUT = re.compile(r"</(script|style)|<!--", re.IGNORECASE)


class ReportNotWritten(OSError):
    """The HTML file could not be written where asked (a missing directory, no permission, a
    full disk); nothing was left behind. Choose another path or fix the directory."""


@cache
def asset(name: str) -> str:
    """A file of ``worker/assets`` as text (shipped in the wheel as package data)."""
    return resources.files("worker").joinpath("assets", name).read_text(encoding="utf-8")


def _inline(source: str) -> Markup:
    """``source`` safe to place inside ``<script>`` or ``<style>``: no source map comment, and
    no ``</script``/``</style`` or ``<!--`` that would end or confuse the element early (refused,
    not rewritten: a rewrite inside minified code could change its meaning)."""
    if _BREAKS_OUT.search(source):
        raise ValueError("an inlined asset contains </script, </style or <!--")
    # Our own shipped files, checked above: trusted markup, not user text.
    return Markup(_SOURCE_MAP.sub("", source))  # noqa: S704


@cache
def environment() -> Environment:
    """Jinja2 over ``worker/templates``, autoescaping everything, failing on a typo'd name."""
    return Environment(
        loader=PackageLoader("worker", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def render_html(data: ReportData) -> str:
    """The report page for ``data``, with every script and style inlined."""
    template = environment().get_template("report.html")
    return template.render(
        d=data,
        figures=chart_json(data),
        css=_inline(asset(CSS)),
        chart_js=_inline(asset(CHART_JS)),
        charts_js=_inline(asset(CHARTS_JS)),
        chart_version=CHART_JS_VERSION,
    )


def write_html(html: str, path: Path) -> int:
    """Write ``html`` to ``path`` whole or not at all (a temporary file beside it, then a
    rename); returns the bytes written. Raises :class:`ReportNotWritten` naming the path."""
    data = html.encode("utf-8")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ReportNotWritten(f"cannot write the HTML report to {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ReportNotWritten(f"cannot write the HTML report to {path}: {exc.strerror}") from None
    return len(data)
