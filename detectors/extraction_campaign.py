"""Distributed (Sybil) model extraction: many accounts, each at a benign rate, one campaign.

The second stage of distributed-extraction detection. The first,
``detectors.extraction_groups``, runs keyed by what a campaign's accounts share
(an IP prefix, a creation cohort) and signals the groups whose answers are
unsure far more often than their peers'. This detector, keyed by model, sees
only those signals, not the events behind them: it merges flagged groups that
share accounts into one campaign, whose subject is the first flagged group and
whose members are every account its groups have signalled, so there is one
alert per campaign, re-sent as its evidence doubles or it names more accounts.
Groups flagged before anything linked them are campaigns of their own (one
campaign's prefixes share no account); a group that shares accounts with
several campaigns (the cohort of them all) merges them into the earliest,
whose alert then names every account and lists the others it absorbed. Which
group is flagged first depends on the order signals arrive in, which across
partitions and workers is not event time, so the merge keeps the outcome
from depending on it beyond the first alerts.

A campaign's queries are counted per grouping (prefix, cohort) and the larger
count is reported: within one grouping an event belongs to one group, across
groupings it would be counted twice.

Memory is bounded: at most ``max_groups`` flagged groups (the least recently
signalled of those without a campaign go first), ``max_campaigns`` campaigns
(the least recently active is forgotten) of ``max_campaign_members`` accounts
each.

>>> from stream.signals import Signal
>>> det = ExtractionCampaignDetector()
>>> state = det.new_state()
>>> def signal(subject, seq, users):
...     return Signal.validate({"timestamp": "2026-01-01T00:00:00Z", "model": {"name": "m"},
...         "rule": "extraction_prefix", "subject": subject, "seq": seq, "magnitude": 100, "users": users,
...         "evidence": {"group": "prefix", "label": subject, "queries": 100, "unsure": 90}})
>>> first = list(det.update(state, signal("203.0.113.0/24", 1, [f"bot-{i}" for i in range(10)])))
>>> second = list(det.update(state, signal("198.51.100.0/24", 1, ["bot-3", "bot-11"])))
>>> first[0].subject == second[0].subject, second[0].evidence["accounts"], second[0].evidence["campaign_queries"]
(True, 11, 200)
>>> apart = list(det.update(state, signal("192.0.2.0/24", 1, ["bot-20", "bot-21"])))  # nothing links it yet
>>> bridge = list(det.update(state, signal("c:cohort", 1, ["bot-0", "bot-20"])))
>>> apart[0].subject == first[0].subject, bridge[0].subject == first[0].subject, bridge[0].evidence["accounts"]
(False, True, 13)
>>> bridge[0].evidence["merged_campaigns"] == [apart[0].subject]
True
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from detectors.atlas import EXFILTRATION, EXFILTRATION_VIA_API, EXTRACT_MODEL
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.sketches import add_sample
from stream.alerts import quote
from stream.signals import Signal

__all__ = ["ExtractionCampaignDetector"]

_SAMPLES = 10
_MAX_LISTED_GROUPS = 16


class ExtractionCampaignDetector(Detector):
    meta = DetectorMeta(
        id="extraction_campaign",
        name="Distributed model-extraction campaign",
        version=3,
        description=(
            "Groups of accounts sharing infrastructure (an IP prefix) or a creation cohort "
            "(client and creation day), each querying at an ordinary rate, get unsure answers "
            "far more often than the rest of the model's users: synthetic extraction queries "
            "spread over many accounts to stay under per-account limits."
        ),
        tactic=EXFILTRATION,
        technique=EXFILTRATION_VIA_API,
        subtechnique=EXTRACT_MODEL,
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"signal"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0024.002",
            "https://atlas.mitre.org/studies/AML.CS0056",
            "https://arxiv.org/abs/1805.02628",
            "https://arxiv.org/abs/1609.02943",
        ),
        false_positives=(
            ("A customer's fleet of service accounts behind one egress prefix sending out-of-domain "
             "data (a new language or market) that the model answers without conviction."),
            "A research or red-team programme run from many test accounts.",
        ),
        triage=(
            "Review the named accounts together: creation dates, payment instruments and "
            "e-mail domains, shared IP prefixes and user agents, and whether they started "
            "querying at the same time. Suspend or rate-limit them as a group, not one by one."
        ),
    )
    partition_key = "model"
    state_ttl = 24 * 3600.0

    class Params(Detector.Params):
        rules: frozenset[str] = Field(default=frozenset({"extraction_prefix", "extraction_cohort"}),
                                      description="The building blocks whose signals are merged.")
        high_accounts: int = Field(default=30, ge=2, description="Campaign accounts that make it high severity.")
        max_groups: int = Field(default=2048, ge=16)
        max_campaigns: int = Field(default=32, ge=1)
        max_campaign_members: int = Field(default=4096, ge=8)

    def new_state(self) -> State:
        return {"groups": {}, "campaigns": {}}

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        assert isinstance(event, Signal)
        if event.rule not in self.params.rules:
            return ()
        group_id = f"{event.rule}:{event.subject}"
        group = state["groups"].get(group_id)
        if group is not None and event.seq <= group["seq"]:
            return ()  # a signal delivered again after a crash upstream
        if group is None:
            if len(state["groups"]) >= self.params.max_groups:
                _evict(state["groups"])
            group = state["groups"][group_id] = {"seq": 0, "n": 0, "unsure": 0, "campaign": None}
        evidence = event.evidence
        kind = str(evidence.get("group", ""))
        n, unsure = _number(evidence, "queries"), _number(evidence, "unsure")
        campaign_id = group["campaign"]
        if campaign_id not in state["campaigns"]:
            campaign_id = group["campaign"] = self._campaign_for(state, group_id, event)
            group["n"] = group["unsure"] = 0  # not counted in this campaign yet
            campaign = state["campaigns"][campaign_id]
            campaign["groups"] = (campaign["groups"] + [[kind, str(evidence.get("label", ""))]])[:_MAX_LISTED_GROUPS]
        campaign = state["campaigns"][campaign_id]
        counts = campaign["counts"].setdefault(kind, [0, 0])
        counts[0] += n - group["n"]
        counts[1] += unsure - group["unsure"]
        group.update(seq=event.seq, n=n, unsure=unsure, last=event.epoch)
        campaign["last"] = event.epoch
        campaign["surprise"] = max(campaign["surprise"], _number(evidence, "binomial_surprise"))
        campaign["baseline"] = _number(evidence, "population_unsure_share", campaign["baseline"])
        campaign["thresholds"] = {k: _number(evidence, k) for k in ("min_surprise", "min_shift", "unsure_margin")
                                  if k in evidence}
        for member in event.users:
            if len(campaign["members"]) >= self.params.max_campaign_members:
                break
            campaign["members"][member] = 1
        for event_id in event.event_ids:
            add_sample(campaign["ids"], event_id, _SAMPLES)
        for ip in event.ips:
            add_sample(campaign["ips"], ip, _SAMPLES)
        campaign_id = self._merge_linked(state, campaign_id, event.users)
        return (self._finding(campaign_id, state["campaigns"][campaign_id]),)

    def _campaign_for(self, state: State, group_id: str, signal: Signal) -> str:
        """The campaign a newly flagged group belongs to: one that already has any of its accounts, or a new one."""
        sharing = _sharing(state["campaigns"], signal.users)
        if sharing:
            return sharing[0]
        campaign_id = f"campaign:{group_id}"
        if len(state["campaigns"]) >= self.params.max_campaigns:
            _retire_oldest(state)
        state["campaigns"][campaign_id] = {"members": {}, "groups": [], "counts": {}, "start": signal.epoch,
                                           "last": signal.epoch, "surprise": 0.0, "baseline": 0.0,
                                           "thresholds": {}, "ids": [], "ips": []}
        return campaign_id

    def _merge_linked(self, state: State, campaign_id: str, users: tuple[str, ...]) -> str:
        """Merge the campaigns that share an account with ``users`` into ``campaign_id``'s, all into the
        earliest started; the id of the one left."""
        campaigns = state["campaigns"]
        sharing = set(_sharing(campaigns, users))
        linked = [cid for cid in campaigns if cid == campaign_id or cid in sharing]
        if len(linked) == 1:
            return campaign_id
        survivor = min(linked, key=lambda cid: campaigns[cid]["start"])  # on a tie, the first made
        into = campaigns[survivor]
        for cid in linked:
            if cid == survivor:
                continue
            gone = campaigns.pop(cid)
            for kind, (n, unsure) in gone["counts"].items():
                counts = into["counts"].setdefault(kind, [0, 0])
                counts[0] += n
                counts[1] += unsure
            for member in gone["members"]:
                if len(into["members"]) >= self.params.max_campaign_members:
                    break
                into["members"][member] = 1
            into["groups"] = (into["groups"] + gone["groups"])[:_MAX_LISTED_GROUPS]
            into["merged"] = (into.get("merged", []) + [cid] + gone.get("merged", []))[:_MAX_LISTED_GROUPS]
            into["last"] = max(into["last"], gone["last"])
            into["surprise"] = max(into["surprise"], gone["surprise"])
            for sample in ("ids", "ips"):
                for value in gone[sample]:
                    add_sample(into[sample], value, _SAMPLES)
        for group in state["groups"].values():
            if group["campaign"] in linked:
                group["campaign"] = survivor
        return survivor

    def _finding(self, campaign_id: str, campaign: dict[str, Any]) -> Finding:
        accounts = len(campaign["members"])
        severity = "high" if accounts >= self.params.high_accounts else "medium"
        queries, unsure = max(campaign["counts"].values(), default=[0, 0])
        share = unsure / queries if queries else 0.0
        prefixes = [label for kind, label in campaign["groups"] if kind == "prefix"]
        clients = [label for kind, label in campaign["groups"] if kind == "cohort"]
        shared = ([f"client and creation day ({', '.join(quote(c, 60) for c in clients[:3])})"] if clients else []) + (
            [f"{len(prefixes)} IP prefix{'es' if len(prefixes) > 1 else ''}"] if prefixes else [])
        return Finding(
            subject=campaign_id,
            severity=severity,  # type: ignore[arg-type]
            risk_score=73 if severity == "high" else 47,
            summary=(
                f"groups {accounts} accounts sharing {' and '.join(shared) or 'infrastructure'} whose {queries} "
                f"queries got unsure answers {share:.0%} of the time, against {campaign['baseline']:.0%} for the "
                "rest of the model's users"
            ),
            magnitude=queries,
            evidence={
                "accounts": accounts,
                "campaign_queries": queries,
                "unsure_share": round(share, 4),
                "population_unsure_share": campaign["baseline"],
                "binomial_surprise": campaign["surprise"],
                **campaign["thresholds"],
                "shared_prefixes": prefixes,
                "shared_clients": clients,
                "campaign_start": datetime.fromtimestamp(campaign["start"], tz=timezone.utc).isoformat(),
                # The subjects of earlier alerts about parts of this campaign, before a group linked them.
                "merged_campaigns": campaign.get("merged", []),
            },
            users=tuple(campaign["members"]),
            ips=tuple(campaign["ips"]),
            event_ids=tuple(campaign["ids"]),
        )

    @classmethod
    def examples(cls) -> list[Example]:
        def signal(rule: str, subject: str, seq: int, users: list[str], seconds: float = 0.0) -> Signal:
            return Signal.validate({
                "timestamp": datetime.fromtimestamp(1767225600 + seconds, tz=timezone.utc), "model": {"name": "m"},
                "rule": rule, "subject": subject, "seq": seq, "magnitude": 80 * seq, "users": users,
                "evidence": {"group": "prefix", "label": subject, "queries": 80 * seq, "unsure": 70 * seq}})

        return [
            Example("prefixes flagged by the building block, sharing accounts", True, lambda: [
                signal("extraction_prefix", "203.0.113.0/24", 1, [f"acct-{i}" for i in range(10)]),
                signal("extraction_prefix", "198.51.100.0/24", 1, ["acct-9", "acct-10"], 60),
            ]),
            Example("signals of a building block it does not merge", False, lambda: [
                signal("some_other_block", "203.0.113.0/24", 1, [f"acct-{i}" for i in range(10)]),
            ]),
        ]


def _number(evidence: dict[str, Any], name: str, default: float = 0) -> float:
    """A number from a signal's evidence; ``default`` when absent or not a number (the route topics are
    writable, and a string kept in the campaign would break every finding built from it)."""
    value = evidence.get(name)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _sharing(campaigns: dict[str, Any], users: tuple[str, ...]) -> list[str]:
    """The campaigns that have any of ``users`` among their members, oldest made first."""
    return [cid for cid, campaign in campaigns.items() if any(user in campaign["members"] for user in users)]


def _evict(groups: dict[str, Any]) -> None:
    """Drop half of the groups, the least recently signalled first and those of a campaign last."""
    order = sorted((g["campaign"] is not None, g.get("last", 0.0), gid) for gid, g in groups.items())
    for _, _, group_id in order[: len(groups) // 2]:
        del groups[group_id]


def _retire_oldest(state: State) -> None:
    """Forget the least recently active campaign; its groups may be flagged again as a new one."""
    oldest = min(state["campaigns"], key=lambda cid: state["campaigns"][cid]["last"])
    del state["campaigns"][oldest]
    for group in state["groups"].values():
        if group["campaign"] == oldest:
            group["campaign"] = None
