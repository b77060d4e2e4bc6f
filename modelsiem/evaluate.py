"""The backtest: replay a labelled trace and score the detectors against its ground truth.

For each attack in the truth: whether it was detected, how many of its events
came before the first alert about it, how many alerts it raised, and how many
of its accounts the alerts named (and how many named accounts were really
part of it). For each benign pattern: the alerts it drew and their highest
severity. Overall: alerts that match no attack, per million benign events.

An attack's events are those of its principals within its window (the truth's
``start`` and ``end``): an account's own use before it turns to attacking, or
after, is not part of the attack. An alert is about an attack when it names one
of the attack's principals (``related.user``) or item fingerprints
(``related.hash``) and comes no earlier than the attack's start; an alert
naming its principals before the attack is a false alert.

Each scenario also gets a timeline (its events per minute of event time, and
each alert revision about it), and alerts about no attack are kept with theirs:
``modelsiem.report`` draws them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from detectors.base import SEVERITY_RANK
from modelsiem.scenarios import Truth
from stream.decode import Rejected, decode
from stream.engine import Engine, MemoryStore

# Alert revisions kept per timeline (the rest are counted): a report stays readable, and bounded.
MAX_MARKS = 200


@dataclass(frozen=True)
class Mark:
    """One alert revision on a timeline, at the event time that raised it."""

    at: float
    rule: str
    severity: str
    revision: int
    subject: str
    named: int


@dataclass
class Timeline:
    """A scenario's events per minute of event time, and the alert revisions about it."""

    minutes: dict[int, int] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)
    marks_left_out: int = 0

    def count(self, epoch: float) -> None:
        minute = int(epoch // 60)
        self.minutes[minute] = self.minutes.get(minute, 0) + 1

    def mark(self, mark: Mark) -> None:
        if len(self.marks) < MAX_MARKS:
            self.marks.append(mark)
        else:
            self.marks_left_out += 1


@dataclass
class AttackScore:
    scenario: str
    technique: str | None
    attack_events: int = 0
    # Events of its principals outside its window: their own use, before or after the attack.
    events_outside_window: int = 0
    detected: bool = False
    events_before_alert: int | None = None
    alerts: int = 0
    max_severity: str | None = None
    accounts_involved: int = 0
    accounts_named: int = 0
    named_outside_attack: int = 0
    feedback_events: int = 0
    quarantined: int = 0
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def recall_of_accounts(self) -> float:
        return self.accounts_named / self.accounts_involved if self.accounts_involved else 0.0

    @property
    def precision_of_accounts(self) -> float:
        named = self.accounts_named + self.named_outside_attack
        return self.accounts_named / named if named else 0.0


@dataclass
class BenignScore:
    scenario: str
    events: int = 0
    alerts: int = 0
    max_severity: str | None = None
    timeline: Timeline = field(default_factory=Timeline)


@dataclass
class Evaluation:
    events: int = 0
    rejected: int = 0
    benign_events: int = 0
    alert_ids: int = 0
    false_alerts: int = 0
    quarantined_benign: int = 0
    attacks: list[AttackScore] = field(default_factory=list)
    benign: list[BenignScore] = field(default_factory=list)
    # Event time of the first and last events, and the alerts about no attack.
    start: float | None = None
    end: float | None = None
    false_marks: Timeline = field(default_factory=Timeline)

    @property
    def false_alerts_per_million(self) -> float:
        return self.false_alerts * 1e6 / self.benign_events if self.benign_events else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures, without the timelines."""
        out = asdict(self)
        for key in ("start", "end", "false_marks"):
            del out[key]
        for row in out["attacks"] + out["benign"]:
            del row["timeline"]
        out["false_alerts_per_million"] = round(self.false_alerts_per_million, 3)
        for score, row in zip(self.attacks, out["attacks"], strict=True):
            row["recall_of_accounts"] = round(score.recall_of_accounts, 4)
            row["precision_of_accounts"] = round(score.precision_of_accounts, 4)
        return out


def _max_severity(current: str | None, severity: str) -> str:
    return severity if current is None or SEVERITY_RANK[severity] > SEVERITY_RANK[current] else current


def evaluate(lines: Iterable[tuple[int, bytes]], truth: list[Truth], engine: Engine) -> Evaluation:
    """Replay ``lines`` through ``engine`` and score the alerts against ``truth``."""
    attacks = [t for t in truth if t.label == "attack"]
    benigns = [t for t in truth if t.label == "benign"]
    result = Evaluation(
        attacks=[AttackScore(t.scenario, t.technique, accounts_involved=len(set(t.principals))) for t in attacks],
        benign=[BenignScore(t.scenario) for t in benigns],
    )
    attack_members = [set(t.principals) for t in attacks]
    # Event times are rounded to the microsecond and the truth's too: a millisecond of slack is more than enough.
    windows = [(datetime.fromisoformat(t.start).timestamp() - 1e-3, datetime.fromisoformat(t.end).timestamp() + 1e-3)
               for t in attacks]
    attack_hashes = [set(t.fingerprints) for t in attacks]
    benign_members = [set(t.principals) for t in benigns]
    attacker = set().union(*attack_members) if attack_members else set()
    named: list[set[str]] = [set() for _ in attacks]
    alert_ids_by_attack: list[set[str]] = [set() for _ in attacks]
    alert_ids_by_benign: list[set[str]] = [set() for _ in benigns]
    false_ids: set[str] = set()
    all_ids: set[str] = set()
    quarantined: set[str] = set()
    attack_feedback: list[set[str]] = [set() for _ in attacks]
    store = MemoryStore()

    for _, raw in lines:
        event = decode(raw)
        if isinstance(event, Rejected):
            result.rejected += 1
            continue
        result.events += 1
        now = event.epoch
        result.start = now if result.start is None else min(result.start, now)
        result.end = now if result.end is None else max(result.end, now)
        who = event.principal.id
        if who not in attacker:
            result.benign_events += 1
        for i, members in enumerate(attack_members):
            if who not in members:
                continue
            if not windows[i][0] <= now <= windows[i][1]:
                result.attacks[i].events_outside_window += 1
            else:
                result.attacks[i].attack_events += 1
                result.attacks[i].timeline.count(now)
                if event.kind == "feedback":
                    attack_feedback[i].add(event.event_id)
        for i, members in enumerate(benign_members):
            if who in members:
                result.benign[i].events += 1
                result.benign[i].timeline.count(now)
        step = engine.settle(event, store)
        quarantined.update(r["event_id"] for r in step.quarantine)
        for alert in step.alerts:
            alert_id, severity = alert["event"]["id"], alert["modelsiem"]["alert"]["severity"]
            users, hashes = set(alert["related"]["user"]), set(alert["related"]["hash"])
            all_ids.add(alert_id)
            mark = Mark(now, alert["rule"]["id"], severity, alert["modelsiem"]["alert"]["revision"],
                        alert["modelsiem"]["alert"]["subject"], len(users))
            matched = False
            for i, score in enumerate(result.attacks):
                if (users & attack_members[i] or hashes & attack_hashes[i]) and now >= windows[i][0]:
                    matched = True
                    if not score.detected:
                        score.detected = True
                        score.events_before_alert = score.attack_events
                    alert_ids_by_attack[i].add(alert_id)
                    score.timeline.mark(mark)
                    score.max_severity = _max_severity(score.max_severity, severity)
                    named[i].update(users)
            if not matched:
                false_ids.add(alert_id)
                result.false_marks.mark(mark)
                for i, members in enumerate(benign_members):
                    if users & members:
                        alert_ids_by_benign[i].add(alert_id)
                        result.benign[i].timeline.mark(mark)
                        result.benign[i].max_severity = _max_severity(result.benign[i].max_severity, severity)

    for i, score in enumerate(result.attacks):
        score.alerts = len(alert_ids_by_attack[i])
        score.accounts_named = len(named[i] & attack_members[i])
        score.named_outside_attack = len(named[i] - attack_members[i])
        score.feedback_events = len(attack_feedback[i])
        score.quarantined = len(quarantined & attack_feedback[i])
    for i, benign_score in enumerate(result.benign):
        benign_score.alerts = len(alert_ids_by_benign[i])
    result.alert_ids = len(all_ids)
    result.false_alerts = len(false_ids)
    result.quarantined_benign = len(quarantined - set().union(*attack_feedback)) if attacks else len(quarantined)
    return result
