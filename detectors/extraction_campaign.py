"""Distributed (Sybil) model extraction: many accounts, each at a benign rate, one campaign.

Keyed by model, because what gives a campaign away is a group of accounts whose
queries differ from the model's population, and only the model's whole stream
holds both. Within that state, accounts are grouped by what a campaign's
accounts share:

- **infrastructure**: the IP prefix (/24 for IPv4, /48 for IPv6);
- **cohort**: the client (user agent) together with the day the account was
  created, since Sybil accounts are made in batches with one tool.

Every group keeps the histogram of its answers' margins (top score minus
runner-up). When a group has ``min_accounts`` accounts and ``min_events``
answered queries, its share of unsure answers (margin below ``unsure_margin``)
is tested against the rest of the population's (the population minus the group,
so a large campaign does not hide in its own reference): a binomial surprise of
``min_surprise`` (``-log10 p``) and a share at least ``min_shift`` above the
rest's flag the group. NAT addresses and sign-up waves share infrastructure or
a cohort too, but their queries are natural, so they are never flagged.

Flagged groups that share accounts are merged into one campaign; its subject is
the first flagged group, its members every account seen in a flagged group
since, so there is one alert per campaign, re-sent as its evidence doubles,
naming the accounts.

Memory is bounded: at most ``max_groups`` groups (when full, half are dropped,
the least recently active first and those of a campaign last), ``max_members`` accounts
remembered per group, ``max_campaigns`` campaigns (the least recently active is
forgotten) of ``max_campaign_members`` accounts each; identifiers are stored but
never used as evidence keys.

>>> from detectors.testing import inference
>>> det = ExtractionCampaignDetector(min_events=60, min_accounts=5)
>>> state = det.new_state()
>>> def query(i, who, confidence, prefix):
...     return inference(f"e{i}", i, principal=who, output={"confidence": confidence},
...                      principal_fields={"ip": f"{prefix}.{i % 200 + 1}"})
>>> natural = [query(i, f"user-{i % 50}", 0.97, f"10.{i % 50}.0") for i in range(400)]
>>> sybils = [query(400 + i, f"bot-{i % 10}", 0.6, "203.0.113") for i in range(100)]
>>> findings = [f for e in natural + sybils for f in det.update(state, e)]
>>> findings[0].evidence["accounts"], findings[0].severity
(10, 'medium')
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Any

from pydantic import Field

from detectors.atlas import EXFILTRATION, EXFILTRATION_VIA_API, EXTRACT_MODEL
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.sketches import add_sample, answer_margin, binomial_surprise, cached_prefix, content_of
from detectors.testing import inference
from stream.alerts import clean, quote
from stream.events import InferenceEvent

__all__ = ["ExtractionCampaignDetector"]

_SAMPLES = 10
_OPAQUE_TRACKED = 64


class ExtractionCampaignDetector(Detector):
    meta = DetectorMeta(
        id="extraction_campaign",
        name="Distributed model-extraction campaign",
        version=1,
        description=(
            "A group of accounts sharing infrastructure (an IP prefix) or a creation cohort "
            "(client and creation day), each querying at an ordinary rate, gets unsure answers "
            "far more often than the rest of the model's users: synthetic extraction queries "
            "spread over many accounts to stay under per-account limits."
        ),
        tactic=EXFILTRATION,
        technique=EXFILTRATION_VIA_API,
        subtechnique=EXTRACT_MODEL,
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"inference"}),
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
        min_accounts: int = Field(default=8, ge=2)
        min_events: int = Field(default=64, ge=10, description="Answered queries of a group before it is tested.")
        unsure_margin: float = Field(default=0.5, gt=0.0, le=1.0)
        min_surprise: float = Field(default=20.0, gt=0.0, description="-log10 of the binomial tail probability.")
        min_shift: float = Field(default=0.25, gt=0.0, lt=1.0, description="Unsure share above the rest's.")
        high_accounts: int = Field(default=30, ge=2, description="Campaign accounts that make it high severity.")
        max_groups: int = Field(default=2048, ge=16)
        max_members: int = Field(default=64, ge=8, description="Accounts remembered per group before it is "
                                 "flagged; a campaign enlists the rest as they query.")
        max_campaigns: int = Field(default=32, ge=1)
        max_campaign_members: int = Field(default=4096, ge=8)
        opaque_burst: int = Field(default=500, ge=1, description="Content-less queries a minute from one account "
                                  "that still alert.")

    def new_state(self) -> State:
        # pop: answered queries and unsure ones, model-wide; groups and campaigns by id.
        return {"pop": [0, 0], "groups": {}, "campaigns": {}, "opaque": {"minute": None, "counts": {}}}

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        assert isinstance(event, InferenceEvent)
        if not content_of(event):
            return self._opaque(state, event)
        margin = answer_margin(event)
        if margin is None:
            return ()
        unsure = int(margin < self.params.unsure_margin)
        state["pop"][0] += 1
        state["pop"][1] += unsure
        now = event.epoch
        principal = event.principal.id
        campaign_id = None
        for group_id, kind in _groups_of(event):
            group = state["groups"].get(group_id)
            if group is None:
                group = state["groups"][group_id] = self._new_group(state, kind, event, now)
            self._learn(group, principal, unsure, now)
            if group["campaign"] is None and group["n"] >= group["next"]:
                self._test(state, group_id, group, now)
            campaign_id = campaign_id or group["campaign"]
        if campaign_id is None:
            return ()
        return self._report(state, campaign_id, event, unsure)

    def _new_group(self, state: State, kind: str, event: InferenceEvent, now: float) -> dict[str, Any]:
        if len(state["groups"]) >= self.params.max_groups:
            _evict(state["groups"])
        what = event.principal.ip if kind == "prefix" else event.principal.user_agent
        label = cached_prefix(what) if kind == "prefix" and what else clean(what or "", 64)
        return {"kind": kind, "label": label, "n": 0, "unsure": 0, "members": {}, "first": now, "last": now,
                "next": self.params.min_events, "campaign": None}

    def _learn(self, group: dict[str, Any], principal: str, unsure: int, now: float) -> None:
        group["n"] += 1
        group["unsure"] += unsure
        group["last"] = now
        members = group["members"]
        if principal in members:
            members[principal] += 1
        elif len(members) < self.params.max_members:
            members[principal] = 1

    def _test(self, state: State, group_id: str, group: dict[str, Any], now: float) -> None:
        p = self.params
        # Test again after a quarter more evidence: a handful of tests per group over its life.
        group["next"] = group["n"] + max(16, group["n"] // 4)
        if len(group["members"]) < p.min_accounts:
            return
        rest_n, rest_unsure = state["pop"][0] - group["n"], state["pop"][1] - group["unsure"]
        if rest_n < p.min_events:
            return
        baseline = max(rest_unsure / rest_n, 0.01)
        share = group["unsure"] / group["n"]
        surprise = binomial_surprise(group["unsure"], group["n"], baseline)
        if surprise < p.min_surprise or share < baseline + p.min_shift:
            return
        campaign_id = self._campaign_for(state, group, group_id, now)
        group["campaign"] = campaign_id
        campaign = state["campaigns"][campaign_id]
        campaign["groups"] = (campaign["groups"] + [[group["kind"], group["label"]]])[:16]
        campaign["surprise"] = max(campaign["surprise"], round(min(surprise, 1e6), 2))
        campaign["baseline"] = round(baseline, 4)
        if campaign["n"] < group["n"]:  # the evidence that flagged it is the campaign's so far
            campaign["n"], campaign["unsure"] = group["n"], group["unsure"]
        for member in group["members"]:
            self._enlist(campaign, member)

    def _campaign_for(self, state: State, group: dict[str, Any], group_id: str, now: float) -> str:
        """The campaign a newly flagged group belongs to: one that already has any of its accounts, or a new one."""
        for campaign_id, campaign in state["campaigns"].items():
            if any(member in campaign["members"] for member in group["members"]):
                return campaign_id
        campaign_id = f"campaign:{group_id}"
        if len(state["campaigns"]) >= self.params.max_campaigns:
            _retire_oldest(state)
        state["campaigns"][campaign_id] = {"members": {}, "groups": [], "n": 0, "unsure": 0, "start": now, "last": now,
                                        "reported": 0, "severity": None, "surprise": 0.0, "baseline": 0.0,
                                        "ids": [], "ips": []}
        return campaign_id

    def _enlist(self, campaign: dict[str, Any], principal: str) -> None:
        if principal not in campaign["members"] and len(campaign["members"]) < self.params.max_campaign_members:
            campaign["members"][principal] = 1

    def _report(self, state: State, campaign_id: str, event: InferenceEvent, unsure: int) -> Iterable[Finding]:
        p = self.params
        campaign = state["campaigns"][campaign_id]
        self._enlist(campaign, event.principal.id)
        campaign["last"] = event.epoch
        campaign["n"] += 1
        campaign["unsure"] += unsure
        add_sample(campaign["ids"], event.event_id, _SAMPLES)
        if event.principal.ip:
            add_sample(campaign["ips"], event.principal.ip, _SAMPLES)
        accounts = len(campaign["members"])
        severity = "high" if accounts >= p.high_accounts else "medium"
        # The engine re-sends an alert when its evidence doubles or its severity rises; building
        # a finding that names thousands of accounts on every event would be wasted work.
        if campaign["n"] < 2 * campaign["reported"] and severity == campaign["severity"]:
            return ()
        campaign["reported"], campaign["severity"] = campaign["n"], severity
        members = tuple(campaign["members"])
        share = campaign["unsure"] / campaign["n"]
        prefixes = [label for kind, label in campaign["groups"] if kind == "prefix"]
        clients = [label for kind, label in campaign["groups"] if kind == "cohort"]
        shared = ([f"client and creation day ({', '.join(quote(c, 40) for c in clients[:3])})"] if clients else []) + (
            [f"{len(prefixes)} IP prefix{'es' if len(prefixes) > 1 else ''}"] if prefixes else [])
        return (Finding(
            subject=campaign_id,
            severity=severity,  # type: ignore[arg-type]
            risk_score=73 if severity == "high" else 47,
            summary=(
                f"groups {accounts} accounts sharing {' and '.join(shared)} whose {campaign['n']} queries got "
                f"unsure answers {share:.0%} of the time, against {campaign['baseline']:.0%} for the rest of "
                "the model's users"
            ),
            magnitude=campaign["n"],
            evidence={
                "accounts": accounts,
                "campaign_queries": campaign["n"],
                "unsure_share": round(share, 4),
                "population_unsure_share": campaign["baseline"],
                "binomial_surprise": campaign["surprise"],
                "min_surprise": p.min_surprise,
                "min_shift": p.min_shift,
                "unsure_margin": p.unsure_margin,
                "shared_prefixes": prefixes,
                "shared_clients": clients,
                "campaign_start": datetime.fromtimestamp(campaign["start"], tz=timezone.utc).isoformat(),
            },
            users=members,
            ips=tuple(campaign["ips"]),
            event_ids=tuple(campaign["ids"]),
        ),)

    def _opaque(self, state: State, event: InferenceEvent) -> Iterable[Finding]:
        """Queries with nothing to judge: only a flood of them from one account is worth an alert."""
        opaque = state["opaque"]
        minute = int(event.epoch) // 60
        if opaque["minute"] != minute:
            opaque["minute"], opaque["counts"] = minute, {}
        counts, principal = opaque["counts"], event.principal.id
        if principal not in counts and len(counts) >= _OPAQUE_TRACKED:
            return ()
        counts[principal] = counts.get(principal, 0) + 1
        if counts[principal] < self.params.opaque_burst:
            return ()
        return (Finding(
            subject=principal, severity="low", risk_score=21,
            summary=f"sent {counts[principal]} queries in a minute that carry no input or answer to judge",
            magnitude=counts[principal],
            evidence={"opaque_queries_per_minute": counts[principal], "opaque_burst": self.params.opaque_burst},
            users=(principal,), event_ids=(event.event_id,), user=principal,
        ),)

    @classmethod
    def examples(cls) -> list[Example]:
        def population(n: int) -> list[AnyEvent]:
            return [inference(f"n{i}", i, principal=f"user-{i % 40}", output={"confidence": 0.9 + (i % 10) / 100},
                              principal_fields={"ip": f"10.{i % 40}.{i % 7}.9",
                                                "created_at": f"202{i % 5}-03-0{1 + i % 9}T00:00:00Z"})
                    for i in range(n)]

        def sybils(n: int, accounts: int, confidence: float, start: float = 0.0) -> list[AnyEvent]:
            return [inference(f"s{i}", start + i, principal=f"acct-{i % accounts}", output={"confidence": confidence},
                              principal_fields={"ip": f"{1 + i % accounts}.2.{i % 250}.3", "user_agent": "httpx/0.27",
                                                "created_at": "2025-12-30T10:00:00Z"})
                    for i in range(n)]

        def merge(*streams: list[AnyEvent]) -> list[AnyEvent]:
            return sorted((e for s in streams for e in s), key=lambda e: e.timestamp)

        return [
            Example("fresh cohort of accounts on many addresses asking synthetic queries", True,
                    lambda: merge(population(600), sybils(200, 20, 0.6, start=300))),
            Example("many natural users behind one NAT address", False,
                    lambda: merge(population(600), [
                        inference(f"t{i}", i, principal=f"corp-{i % 30}", output={"confidence": 0.95},
                                  principal_fields={"ip": "198.51.100.7"}) for i in range(600)])),
            Example("sign-up wave of accounts using the product normally", False,
                    lambda: merge(population(600), sybils(600, 40, 0.93))),
        ]


def _groups_of(event: InferenceEvent) -> list[tuple[str, str]]:
    """The groups an event's account belongs to, as (id, kind)."""
    principal = event.principal
    groups = []
    if principal.ip:
        groups.append(("p:" + cached_prefix(principal.ip), "prefix"))
    if principal.created_at is not None:
        groups.append((_cohort(principal.user_agent or "", principal.created_at.date()), "cohort"))
    return groups


@lru_cache(maxsize=65536)
def _cohort(agent: str, created: date) -> str:
    """A fixed-length id for a client and creation day, so no attacker string becomes a long key."""
    return "c:" + hashlib.blake2b(f"{agent}\x1f{created.isoformat()}".encode(), digest_size=8).hexdigest()


def _evict(groups: dict[str, Any]) -> None:
    """Drop half of the groups, the least recently active first and those of a campaign last."""
    order = sorted((g["campaign"] is not None, g["last"], gid) for gid, g in groups.items())
    for _, _, group_id in order[: len(groups) // 2]:
        del groups[group_id]


def _retire_oldest(state: State) -> None:
    """Forget the least recently active campaign; its groups may be flagged again as a new one."""
    oldest = min(state["campaigns"], key=lambda cid: state["campaigns"][cid]["last"])
    del state["campaigns"][oldest]
    for group in state["groups"].values():
        if group["campaign"] == oldest:
            group["campaign"] = None
