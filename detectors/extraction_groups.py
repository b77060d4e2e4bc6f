"""Groups of accounts whose queries get unsure answers far more often than their peers'.

The first stage of distributed (Sybil) extraction detection, keyed by what a
campaign's accounts share, so that it runs wherever the group's events land:

- :class:`PrefixGroupDetector`, by **infrastructure**: the IP prefix (/24 for
  IPv4, /48 for IPv6);
- :class:`CohortGroupDetector`, by **cohort**: the client (user agent) together
  with the day the account was created, since Sybil accounts are made in
  batches with one tool.

A group counts its answered queries and the unsure ones (margin between the
top score and the runner-up below ``unsure_margin``). When it has
``min_accounts`` accounts and ``min_events`` answered queries, its unsure share
is tested against its peers' (the model's other groups on the same partition, a
sample of its population, minus the group itself, so that a large campaign does
not hide in its own reference): a binomial surprise of ``min_surprise``
(``-log10 p``) and a share at least ``min_shift`` above the peers' flag the
group. NAT addresses and sign-up waves share infrastructure or a cohort too, but
their queries are natural, so they are not flagged.

A group learns from tallies (:class:`GroupTally`): where the events arrive,
each answered query is folded into a partial of its group on that ingest
partition (counts of answered and unsure queries, accounts and samples new
since the last tally), and the worker routes the partial's tally to the
group's partition now and then, one message per group rather than one per
event (``stream.digests``). A tally's counts are its partial's since it began,
so one sent again after a crash or a rebalance is counted once.

These detectors are building blocks: they raise no alerts. A flagged group
signals its accounts to ``extraction_campaign``, which merges the groups that
share accounts into one campaign alert, and signals again as new accounts join
it (a sixteenth more) or its queries double.

Memory: a group remembers ``max_members`` accounts until it is flagged and
``max_named`` after; the engine bounds the number of groups (``max_keys`` per
partition) and expires idle ones.

>>> from detectors.base import partition_value
>>> from detectors.testing import inference
>>> det = PrefixGroupDetector(min_events=60, min_accounts=5)
>>> peers, sybils, partial = det.new_peers(), det.new_state(), det.new_partial()
>>> def seen(event, partial):  # one event folded, then its partial's tally
...     det.fold(partial, event, partition_value("ip_prefix", event))
...     return det.tally(partial, "0")
>>> for i in range(400):  # the peers: natural users, each on a network of its own, sure answers
...     _ = list(det.update(det.new_state(), seen(inference(f"n{i}", i, principal=f"u{i}",
...         output={"confidence": 0.97}, principal_fields={"ip": f"10.{i % 250}.{i // 250}.1"}),
...         det.new_partial()), peers))
>>> findings = [f for i in range(100) for f in det.update(sybils, seen(inference(f"s{i}", 400 + i,
...     principal=f"bot-{i % 10}", output={"confidence": 0.6}, principal_fields={"ip": f"203.0.113.{i % 10}"}),
...     partial), peers)]
>>> findings[0].subject, len(findings[0].users), findings[0].evidence["flagged_unsure_share"]
('203.0.113.0/24', 10, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timezone
from functools import lru_cache
from itertools import islice
from typing import Annotated

from msgspec import Meta
from pydantic import Field

from detectors.atlas import EXFILTRATION, EXFILTRATION_VIA_API, EXTRACT_MODEL
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.sketches import add_sample, answer_margin, binomial_surprise, content_of
from detectors.testing import inference
from stream.alerts import clean
from stream.digests import Digest
from stream.events import Ident, InferenceEvent, Model

__all__ = ["CohortGroupDetector", "GroupTally", "PrefixGroupDetector"]

_SAMPLES = 10
# Accounts named per signal, and new accounts per tally, at most (the rest in the next ones, as they query
# again), to keep a routed message small.
_MAX_PER_SIGNAL = 1024
# Ingest partitions a group keeps the counts of (a route topic's writer could name any number).
_MAX_SOURCES = 4096
_REFERENCES = (
    "https://atlas.mitre.org/techniques/AML.T0024.002",
    "https://atlas.mitre.org/studies/AML.CS0056",
    "https://arxiv.org/abs/1805.02628",
)
_TRIAGE = ("A building block: its signals reach analysts only through extraction_campaign alerts, "
           "whose triage note applies.")


_Count = Annotated[int, Meta(ge=0)]


class GroupTally(Digest):
    """What a group learns from the answered queries of one ingest partition (``source``): their counts
    since the partial began (``start``, event time), and the accounts and samples new since the last
    tally. ``timestamp`` is the latest query's time."""

    source: Annotated[str, Meta(max_length=64)]
    start: float
    n: _Count
    unsure: _Count
    members: Annotated[list[Ident], Meta(max_length=_MAX_PER_SIGNAL)]
    ids: Annotated[list[Ident], Meta(max_length=_SAMPLES)]
    ips: Annotated[list[Ident], Meta(max_length=_SAMPLES)]
    label: Annotated[str, Meta(max_length=200)]


class PrefixTally(GroupTally, tag="extraction_prefix"):
    pass


class CohortTally(GroupTally, tag="extraction_cohort"):
    pass


class _GroupDetector(Detector):
    """One grouping of accounts; subclasses say which (``group``) and how an event names its group."""

    group: str
    compares_peers = True
    tallies = True

    class Params(Detector.Params):
        min_accounts: int = Field(default=8, ge=2)
        min_events: int = Field(default=64, ge=10, description="Answered queries of a group before it is tested.")
        unsure_margin: float = Field(default=0.5, gt=0.0, le=1.0)
        min_surprise: float = Field(default=20.0, gt=0.0, description="-log10 of the binomial tail probability.")
        min_shift: float = Field(default=0.25, gt=0.0, lt=1.0, description="Unsure share above the peers'.")
        max_members: int = Field(default=32, ge=8, description="Accounts remembered per group until it is "
                                 "flagged.")
        max_named: int = Field(default=4096, ge=8, description="Accounts a flagged group names.")

    def new_state(self) -> State:
        # next: the query count at which the group is tested again; flagged: [share, baseline, surprise]
        # once flagged; sent: members signalled so far; told: queries at the last signal; from: by source,
        # the [start, n, unsure] of the latest tally counted.
        return {"n": 0, "unsure": 0, "members": {}, "next": self.params.min_events, "flagged": None,
                "sent": 0, "told": 0, "ids": [], "ips": [], "from": {}}

    def new_partial(self) -> State:
        # new: accounts since the last tally (a dict, to keep their order); t: the latest query's time.
        return {"start": None, "t": 0.0, "n": 0, "unsure": 0, "new": {}, "ids": [], "ips": []}

    def new_peers(self) -> State:
        return {"n": 0, "unsure": 0}

    # The examples: their names (the group attacking, the group using the model normally) and what
    # the i-th event of the group's 20 accounts shares.
    examples_named: tuple[str, str]

    @staticmethod
    def shared(i: int) -> dict[str, str]:
        """Principal fields of the i-th event of the examples' group."""
        raise NotImplementedError

    @classmethod
    def examples(cls) -> list[Example]:
        def group(n: int, confidence: float) -> list[AnyEvent]:
            return [inference(f"s{i}", 300 + i, principal=f"acct-{i % 20}", output={"confidence": confidence},
                              principal_fields=cls.shared(i)) for i in range(n)]

        attacking, normal = cls.examples_named
        return [Example(attacking, True, lambda: _merge(_population(600), group(200, 0.6))),
                Example(normal, False, lambda: _merge(_population(600), group(600, 0.94)))]

    def label(self, event: InferenceEvent, value: str) -> str:
        """What an analyst reads for the group of an event whose partition value is ``value``."""
        raise NotImplementedError

    def fold(self, partial: State, event: AnyEvent, value: str) -> bool:
        assert isinstance(event, InferenceEvent)
        margin = answer_margin(event) if content_of(event) else None
        if margin is None:
            return False
        now = event.epoch
        if partial["start"] is None:
            partial.update(start=now, value=value, label=self.label(event, value), model=[event.model.name, None])
        if now > partial["t"]:
            partial["t"] = now
        if partial["model"][1] != event.model.version:  # the latest, as a digest would carry
            partial["model"] = [event.model.name, event.model.version]
        partial["n"] += 1
        partial["unsure"] += margin < self.params.unsure_margin
        new, principal = partial["new"], event.principal.id
        if principal not in new and len(new) < _MAX_PER_SIGNAL:
            new[principal] = 1
        add_sample(partial["ids"], event.event_id, _SAMPLES)
        if event.principal.ip:
            add_sample(partial["ips"], event.principal.ip, _SAMPLES)
        return True

    def tally(self, partial: State, source: str) -> GroupTally:
        assert self.digest_type is not None
        name, version = partial["model"]
        made = self.digest_type(
            value=partial["value"], timestamp=datetime.fromtimestamp(partial["t"], timezone.utc),
            model=Model(name=name, version=version), source=source, start=partial["start"], n=partial["n"],
            unsure=partial["unsure"], members=list(partial["new"]), ids=partial["ids"], ips=partial["ips"],
            label=partial["label"])
        partial["new"], partial["ids"], partial["ips"] = {}, [], []
        return made  # type: ignore[return-value]

    def update(self, state: State, seen: AnyEvent, peers: State | None = None) -> Iterable[Finding]:  # type: ignore[override]
        assert isinstance(seen, GroupTally) and peers is not None
        counted = state["from"]
        start, n, unsure = counted.get(seen.source) or (None, 0, 0)
        if start != seen.start:  # a partial begun afresh (the previous one was idle past its ttl)
            n = unsure = 0
        # Counted once: a tally sent again adds nothing, and one sent before a later one arrives adds nothing.
        seen_unsure = min(seen.unsure, seen.n)
        added, added_unsure = max(0, seen.n - n), max(0, seen_unsure - unsure)
        if added or start != seen.start:
            if seen.source not in counted and len(counted) >= _MAX_SOURCES:
                del counted[next(iter(counted))]
            counted[seen.source] = [seen.start, seen.n, seen_unsure]
        peers["n"] += added
        peers["unsure"] += added_unsure
        state["n"] += added
        state["unsure"] += added_unsure
        members = state["members"]
        limit = self.params.max_named if state["flagged"] else self.params.max_members
        for principal in seen.members:
            if principal not in members and len(members) < limit:
                members[principal] = 1  # a dict: it keeps the order, so the first unsignalled one is known
        if state["flagged"] is None:
            if state["n"] < state["next"] or not self._test(state, peers):
                return ()
            state["label"] = clean(seen.label, 200)  # made clean where folded; a route topic's writer may not
        for event_id in seen.ids:
            add_sample(state["ids"], event_id, _SAMPLES)
        for ip in seen.ips:
            add_sample(state["ips"], ip, _SAMPLES)
        new = len(members) - state["sent"]
        if state["sent"] and new < max(1, state["sent"] // 16) and state["n"] < 2 * state["told"]:
            return ()
        return (self._signal(state, seen),)

    def _test(self, state: State, peers: State) -> bool:
        p = self.params
        # Test again after a quarter more evidence: a handful of tests per group over its life.
        state["next"] = state["n"] + max(16, state["n"] // 4)
        rest_n, rest_unsure = peers["n"] - state["n"], peers["unsure"] - state["unsure"]
        if len(state["members"]) < p.min_accounts or rest_n < p.min_events:
            return False
        baseline = max(rest_unsure / rest_n, 0.01)
        share = state["unsure"] / state["n"]
        surprise = binomial_surprise(state["unsure"], state["n"], baseline)
        if surprise < p.min_surprise or share < baseline + p.min_shift:
            return False
        state["flagged"] = [round(share, 4), round(baseline, 4), round(min(surprise, 1e6), 2)]
        return True

    def _signal(self, state: State, seen: GroupTally) -> Finding:
        """The group's accounts not signalled yet, and its evidence so far."""
        p = self.params
        new = tuple(islice(state["members"], state["sent"], state["sent"] + _MAX_PER_SIGNAL))
        state["sent"] += len(new)
        state["told"] = state["n"]
        share, baseline, surprise = state["flagged"]
        return Finding(
            subject=seen.value,
            severity=self.meta.severity,
            risk_score=self.meta.risk_score,
            summary=f"{len(state['members'])} accounts got unsure answers {share:.0%} of the time",
            magnitude=state["n"],
            evidence={
                "group": self.group, "label": state["label"], "queries": state["n"], "unsure": state["unsure"],
                "flagged_unsure_share": share, "population_unsure_share": baseline, "binomial_surprise": surprise,
                "min_surprise": p.min_surprise, "min_shift": p.min_shift, "unsure_margin": p.unsure_margin,
            },
            users=new,
            ips=tuple(state["ips"]),
            event_ids=tuple(state["ids"]),
        )


def _meta(group: str, shares: str, false_positive: str) -> DetectorMeta:
    return DetectorMeta(
        id=f"extraction_{group}",
        name=f"Extraction group by {shares}",
        version=1,
        description=(f"Accounts sharing {shares}, each querying at an ordinary rate, whose answers are unsure far "
                     "more often than their peers': one part of a distributed extraction campaign."),
        tactic=EXFILTRATION,
        technique=EXFILTRATION_VIA_API,
        subtechnique=EXTRACT_MODEL,
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"inference"}),
        references=_REFERENCES,
        false_positives=(false_positive, "A research or red-team programme run from many test accounts."),
        triage=_TRIAGE,
        building_block=True,
    )


def _population(n: int) -> list[AnyEvent]:
    return [inference(f"n{i}", i, principal=f"user-{i % 40}", output={"confidence": 0.9 + (i % 10) / 100},
                      principal_fields={"ip": f"10.{i % 40}.{i % 7}.9",
                                        "created_at": f"202{i % 5}-03-0{1 + i % 9}T00:00:00Z"})
            for i in range(n)]


def _merge(*streams: list[AnyEvent]) -> list[AnyEvent]:
    return sorted((e for s in streams for e in s), key=lambda e: e.timestamp)


class PrefixGroupDetector(_GroupDetector):
    meta = _meta("prefix", "an IP prefix",
                 "A customer's fleet of service accounts behind one egress prefix sending out-of-domain data "
                 "(a new language or market) that the model answers without conviction.")
    partition_key = "ip_prefix"
    group = "prefix"
    digest_type = PrefixTally

    examples_named = ("accounts on one proxy network asking synthetic queries",
                      "many natural users behind one NAT address")

    def label(self, event: InferenceEvent, value: str) -> str:
        return value  # the prefix itself

    @staticmethod
    def shared(i: int) -> dict[str, str]:
        return {"ip": f"203.0.113.{1 + i % 20}"}


class CohortGroupDetector(_GroupDetector):
    meta = _meta("cohort", "a creation cohort (client and creation day)",
                 "Accounts an organisation created in one batch for one integration, sending out-of-domain "
                 "data that the model answers without conviction.")
    partition_key = "cohort"
    group = "cohort"
    digest_type = CohortTally

    def label(self, event: InferenceEvent, value: str) -> str:
        created = event.principal.created_at
        return _cohort_label(event.principal.user_agent or "", created.date() if created else None)

    examples_named = ("fresh cohort of accounts on many addresses asking synthetic queries",
                      "sign-up wave of accounts using the product normally")

    @staticmethod
    def shared(i: int) -> dict[str, str]:
        return {"ip": f"{1 + i % 20}.2.{i % 250}.3", "user_agent": "httpx/0.27", "created_at": "2025-12-30T10:00:00Z"}


@lru_cache(maxsize=4096)  # per event on the route path; a cohort's accounts share one
def _cohort_label(user_agent: str, created: date | None) -> str:
    return f"{clean(user_agent, 64)} ({created.isoformat() if created else ''})"
