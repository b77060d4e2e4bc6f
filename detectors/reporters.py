"""Who disputes an item: a sliding window of reports and how many reporters look like burner accounts.

A poisoning campaign needs many accounts, and accounts made for it betray
themselves: they are new, they are created in batches, and they come from the
same few networks. Each reporter is profiled when it enters an item's window
(its first report there) and flagged when

- its account is younger than ``fresh_seconds`` at the report (``FRESH``);
- another reporter in the window was created in the same ``batch_seconds``
  slot of account-creation time or a neighbouring one, so that two accounts a
  minute apart on either side of a slot boundary still count
  (``CREATION_BATCH``);
- another reporter in the window already came from its /24 (IPv6: /48)
  (``SHARED_NETWORK``).

The first two are *account* evidence, which genuine users rarely show; the
third is *network* evidence, which genuine users behind an office network or a
carrier NAT show often, so the detector weighs the two separately. The counts
say over how many reporters each could be assessed: those with a creation time
(``dated``) and those with an address (``located``); a reporter without either
is neither flagged nor genuine.

The first account of a shared network or creation batch is not flagged, only
those that follow it: a reporter's flags are fixed at its entry, so the counts
are updated in O(1) per report instead of re-examining the window.

The window is a plain JSON-able dict, so it lives in a detector's state.

>>> window = ReporterWindow(ReporterWindow.new())
>>> [window.add(float(i), f"acct-{i}", f"f{i}", Profile(network="203.0.113.0/24", batch=None, fresh=False))
...  for i in range(3)]
[True, True, True]
>>> window.add(3.0, "user-9", "f3", Profile(network="198.51.100.0/24", batch=None, fresh=False))
True
>>> window.counts
{'dated': 0, 'located': 4, 'flagged': 2, 'account_flagged': 0, 'fresh': 0, 'creation_batch': 0, 'shared_network': 2}
>>> window.expire(before=1.0); window.counts["flagged"], window.reporter_count
(1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detectors.base import ip_prefix
from stream.events import FeedbackEvent

__all__ = ["Profile", "ReporterWindow"]

FRESH, CREATION_BATCH, SHARED_NETWORK, _DATED, _LOCATED = 1, 2, 4, 8, 16
_ACCOUNT = FRESH | CREATION_BATCH
# Count name -> the flags any of which puts a reporter in it.
_COUNTED = {
    "dated": _DATED, "located": _LOCATED, "flagged": _ACCOUNT | SHARED_NETWORK, "account_flagged": _ACCOUNT,
    "fresh": FRESH, "creation_batch": CREATION_BATCH, "shared_network": SHARED_NETWORK,
}


@dataclass(frozen=True, slots=True)
class Profile:
    """What a report says about its reporter: network, account-creation slot, freshness."""

    network: str | None
    batch: str | None
    fresh: bool

    @classmethod
    def of(cls, event: FeedbackEvent, fresh_seconds: float, batch_seconds: float) -> Profile:
        principal = event.principal
        created = principal.created_at.timestamp() if principal.created_at else None
        return cls(
            network=_network(principal.ip) if principal.ip else None,
            batch=None if created is None else str(int(created // batch_seconds)),
            # An account "created" after its own report is as suspect as a new one.
            fresh=created is not None and event.epoch - created < fresh_seconds,
        )


def _network(ip: str) -> str:
    """:func:`detectors.base.ip_prefix`, without the ipaddress module for IPv4 (the contract canonicalises it)."""
    if ":" in ip:
        return ip_prefix(ip)
    return ip[: ip.rindex(".")] + ".0/24"


def _around(batch: str) -> tuple[str, str, str]:
    slot = int(batch)
    return batch, str(slot - 1), str(slot + 1)


class ReporterWindow:
    """Operations on one item's window state (see :meth:`new` for its layout)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @staticmethod
    def new() -> dict[str, Any]:
        return {
            # [epoch, principal, event id, network, batch] in arrival order.
            "reports": [],
            # principal -> [its reports in the window, flags fixed at its entry]
            "reporters": {},
            # network / creation slot -> reports in the window from it
            "networks": {},
            "batches": {},
            "counts": dict.fromkeys(_COUNTED, 0),
        }

    @property
    def reports(self) -> list[list[Any]]:
        return self.data["reports"]

    @property
    def counts(self) -> dict[str, int]:
        return self.data["counts"]

    @property
    def reporter_count(self) -> int:
        return len(self.data["reporters"])

    def reporters(self) -> list[str]:
        """The principals in the window, in order of entry."""
        return list(self.data["reporters"])

    def add(self, when: float, principal: str, event_id: str, profile: Profile) -> bool:
        """Record a report; True when its reporter is new to the window."""
        d = self.data
        entry = d["reporters"].get(principal)
        new = entry is None
        if new:
            flags = (_DATED if profile.batch is not None else 0) | (_LOCATED if profile.network is not None else 0)
            if profile.fresh:
                flags |= FRESH
            if profile.network is not None and d["networks"].get(profile.network):
                flags |= SHARED_NETWORK
            if profile.batch is not None and any(d["batches"].get(slot) for slot in _around(profile.batch)):
                flags |= CREATION_BATCH
            entry = d["reporters"][principal] = [0, flags]
            self._count(flags, +1)
        entry[0] += 1
        for table, value in (("networks", profile.network), ("batches", profile.batch)):
            if value is not None:
                d[table][value] = d[table].get(value, 0) + 1
        d["reports"].append([when, principal, event_id, profile.network, profile.batch])
        return new

    def expire(self, before: float) -> None:
        """Forget the reports made at or before ``before``."""
        reports = self.reports
        old = 0
        while old < len(reports) and reports[old][0] <= before:
            old += 1
        self.drop_oldest(old)

    def drop_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest reports (the bound on state an attacker can grow)."""
        d = self.data
        for _, principal, _, network, batch in d["reports"][:count]:
            for table, value in (("networks", network), ("batches", batch)):
                if value is not None:
                    left = d[table][value] - 1
                    if left:
                        d[table][value] = left
                    else:
                        del d[table][value]
            entry = d["reporters"][principal]
            entry[0] -= 1
            if not entry[0]:
                del d["reporters"][principal]
                self._count(entry[1], -1)
        del d["reports"][:count]

    def _count(self, flags: int, step: int) -> None:
        counts = self.data["counts"]
        for name, bits in _COUNTED.items():
            if flags & bits:
                counts[name] += step
