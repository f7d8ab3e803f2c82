"""``imgmod decide``: a policy applied to a job's stored answers. No API call, ever.

Reads the job in keyset pages (:func:`worker.store.decision_inputs`), decides each item with the
pure :func:`worker.policy.evaluate`, and appends, in multi-row batches, a decision (and its
event) for every item whose current decision this run changes
(:func:`worker.store.record_decisions`). What the run does to each item:

* an item that did not end ``done`` with a Code-200 answer (failed, rejected, still open) is
  decided ``unscanned``: a scan that did not happen is never a ``pass``;
* an item whose current decision came from this very policy file (same content hash), with the
  same outcome, is left alone: a rerun writes nothing;
* an item a person decided on the review page keeps that decision (counted, not overwritten);
* anything else gets a new row; the old ones stay (append-only), so a new policy version keeps
  the old decisions and the run reports the changes ("1,204 review → pass, 88 pass → block").

A file that calls itself a version already applied to the job with other content is refused
(:class:`VersionReused`): the stored version must always name one set of rules.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from worker import store
from worker.policy import Policy, Verdict, answer_facts, evaluate, parse_policy

DEFAULT_POLICY = Path(__file__).parent / "policies" / "default.toml"
UNSCANNED = "unscanned"
BATCH = 2000


class VersionReused(ValueError):
    """This policy's name and version were applied to the job with other rules: raise the
    version in the file (every decision names the version that made it)."""


def load_policy(path: Path | None) -> Policy:
    """The policy in ``path``, or the shipped default; :class:`~worker.policy.PolicyError`
    names the file, line and field of a bad one. ``OSError`` when it cannot be read."""
    source = path or DEFAULT_POLICY
    text = source.read_text(encoding="utf-8")
    return parse_policy(text, str(path) if path else "the default policy (default.toml)")


@dataclass
class DecideOutcome:
    """What one ``decide`` run did (or, with ``dry_run``, would do)."""

    job: str
    policy: str
    version: str
    policy_hash: str
    dry_run: bool
    items: int = 0
    decided: Counter[str] = field(default_factory=Counter)  # this policy's verdict, every item
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (before, after)
    first: int = 0  # items that had no decision before
    written: int = 0
    kept_reviews: int = 0
    seconds: float = 0.0
    version_reused: bool = False  # dry run: a real run would be refused (VersionReused)


def decide_item(policy: Policy, row: store.DecisionInput) -> Verdict:
    """The verdict for one item: ``unscanned`` without a Code-200 answer of a ``done`` row."""
    if row.state != "done" or row.code != "200":
        return Verdict(UNSCANNED, None, None)
    return evaluate(policy, answer_facts(row.risk_level, row.labels, row.ext))


def _unchanged(policy: Policy, current: store.CurrentDecision, verdict: Verdict) -> bool:
    return (
        current.policy_hash == policy.content_hash
        and current.decision == verdict.decision
        and current.rule == verdict.rule
        and current.priority == verdict.priority
    )


def _reason(row: store.DecisionInput, verdict: Verdict) -> str:
    if verdict.decision == UNSCANNED:
        last = row.code or row.last_code
        code = f", last code {last}" if last else ""
        return f"no answer to decide on (state {row.state}{code})"
    return f"rule {verdict.rule}" if verdict.rule else "no rule matched: the policy's default"


def check_version(engine: Engine, job: store.Job, policy: Policy) -> None:
    """Refuse a file that reuses a version already applied to ``job`` with other content."""
    hashes = store.policy_hashes(engine, job.id, policy.name, policy.version)
    if hashes - {policy.content_hash}:
        raise VersionReused(
            f"{policy.source}: policy {policy.name!r} version {policy.version} was already "
            f"applied to job {job.name!r} with other rules; raise `version` in the file so "
            "each version names one set of rules (nothing was written)"
        )


def decide_job(
    engine: Engine,
    job: store.Job,
    policy: Policy,
    actor: str,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
) -> DecideOutcome:
    """Apply ``policy`` to every item of ``job``; see the module's docstring for what is
    written. ``dry_run`` writes nothing and reports the same figures."""
    started = time.perf_counter()
    outcome = DecideOutcome(job.name, policy.name, policy.version, policy.content_hash, dry_run)
    try:
        check_version(engine, job, policy)
    except VersionReused:
        if not dry_run:
            raise
        outcome.version_reused = True
    pages = store.decision_inputs(
        engine, job.id, labels=policy.needs_labels, ext=policy.needs_ext, batch=batch
    )
    for page in pages:
        new: list[store.NewDecision] = []
        for row in page:
            outcome.items += 1
            current = row.current
            if current is not None and current.source == "review":
                outcome.kept_reviews += 1
                continue
            verdict = decide_item(policy, row)
            outcome.decided[verdict.decision] += 1
            if current is None:
                outcome.first += 1
            elif _unchanged(policy, current, verdict):
                continue
            elif current.decision != verdict.decision:
                outcome.changes[(current.decision, verdict.decision)] += 1
            new.append(
                store.NewDecision(
                    item_id=row.item_id,
                    job_id=job.id,
                    decision=verdict.decision,
                    source="policy",
                    actor=actor,
                    rule=verdict.rule,
                    priority=verdict.priority,
                    policy_name=policy.name,
                    policy_version=policy.version,
                    policy_hash=policy.content_hash,
                    reason=_reason(row, verdict),
                )
            )
        if new and not dry_run:
            store.record_decisions(engine, new)
        outcome.written += len(new)
    outcome.seconds = time.perf_counter() - started
    return outcome


ORDER = ("block", "review", "pass", UNSCANNED)


def _n(count: int) -> str:
    return f"{count:,}"


def render_changes(changes: Counter[tuple[str, str]]) -> str:
    """``1,204 review → pass, 88 pass → block``: most frequent first; ``none`` when empty."""
    ranked = sorted(changes.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{_n(n)} {before} → {after}" for (before, after), n in ranked) or "none"


def render_outcome(out: DecideOutcome) -> str:
    """What ``imgmod decide`` prints: the policy, the verdicts, the changes, what was written."""
    verdicts = ", ".join(f"{_n(out.decided[kind])} {kind}" for kind in ORDER if out.decided[kind])
    lines = [
        f"policy {out.policy} version {out.version} (sha256 {out.policy_hash[:12]}) "
        f"on job {out.job}: {_n(out.items)} items",
        f"  decisions: {verdicts or 'none'}",
        f"  changes:   {render_changes(out.changes)}",
    ]
    if out.first:
        lines.append(f"  first decisions: {_n(out.first)} items had none before")
    if out.kept_reviews:
        lines.append(f"  kept: {_n(out.kept_reviews)} items a reviewer decided")
    if out.version_reused:
        lines.append(
            f"  refused when run for real: version {out.version} was already applied to this "
            "job with other rules; raise `version` in the file"
        )
    if out.dry_run:
        lines.append(f"  dry run: nothing written ({_n(out.written)} decisions would be)")
    else:
        rate = out.items / out.seconds if out.seconds > 0 else 0.0
        lines.append(
            f"  written: {_n(out.written)} decisions in {out.seconds:.1f} s "
            f"({_n(round(rate))} items/s); 0 API calls"
        )
    return "\n".join(lines)


def outcome_json(out: DecideOutcome) -> dict[str, object]:
    """The outcome as plain JSON values (``--json``)."""
    return {
        "job": out.job,
        "policy": out.policy,
        "policy_version": out.version,
        "policy_hash": out.policy_hash,
        "dry_run": out.dry_run,
        "items": out.items,
        "decisions": {kind: out.decided[kind] for kind in ORDER},
        "changes": [
            {"from": before, "to": after, "items": n}
            for (before, after), n in sorted(out.changes.items(), key=lambda kv: -kv[1])
        ],
        "first": out.first,
        "written": out.written,
        "kept_reviews": out.kept_reviews,
        "version_reused": out.version_reused,
        "seconds": round(out.seconds, 3),
    }
