"""Reporter profiles and the window's counts, which the poisoning detector's evidence rests on."""

from __future__ import annotations

import orjson

from detectors.reporters import Profile, ReporterWindow
from detectors.testing import feedback

DAY = 86400.0


def profile(**principal: str) -> Profile:
    return Profile.of(feedback("f", 0, principal="p", principal_fields=principal), 14 * DAY, 3600)


def test_profiles_read_network_creation_slot_and_freshness() -> None:
    p = profile(ip="203.0.113.77", created_at="2025-12-31T18:20:00Z")
    assert p.network == "203.0.113.0/24" and p.fresh
    assert p.batch == str(int(1767205200 // 3600))
    assert profile(ip="2001:db8:1:2::9").network == "2001:db8:1::/48"
    assert not profile(created_at="2020-01-01T00:00:00Z").fresh
    # Created after its own report: as suspect as a new account.
    assert profile(created_at="2026-02-01T00:00:00Z").fresh
    assert profile() == Profile(network=None, batch=None, fresh=False)


def test_only_the_followers_of_a_shared_network_or_batch_are_flagged() -> None:
    window = ReporterWindow(ReporterWindow.new())
    office = Profile(network="198.51.100.0/24", batch=None, fresh=False)
    batch = Profile(network=None, batch="491001", fresh=False)
    for i in range(3):
        window.add(i, f"office-{i}", f"o{i}", office)
        window.add(i, f"batch-{i}", f"b{i}", batch)
    window.add(4, "nobody", "n", Profile(network=None, batch=None, fresh=False))
    assert window.counts == {"dated": 3, "located": 3, "flagged": 4, "account_flagged": 2, "fresh": 0,
                             "creation_batch": 2, "shared_network": 2}
    assert window.reporter_count == 7
    # A neighbouring creation slot is the same batch; two slots away is not.
    window.add(5, "next-slot", "x", Profile(network=None, batch="491002", fresh=False))
    window.add(5, "far-slot", "y", Profile(network=None, batch="491004", fresh=False))
    assert window.counts["creation_batch"] == 3


def test_a_reporter_counts_once_and_leaves_with_its_last_report() -> None:
    window = ReporterWindow(ReporterWindow.new())
    fresh = Profile(network="203.0.113.0/24", batch="1", fresh=True)
    assert window.add(0, "a", "e0", fresh) and not window.add(5, "a", "e1", fresh)
    assert window.counts["fresh"] == 1 and len(window.reports) == 2
    window.expire(before=0)
    assert window.counts["fresh"] == 1 and window.reporter_count == 1
    window.expire(before=5)
    assert window.data == ReporterWindow.new()


def test_dropping_everything_returns_to_an_empty_window_and_state_is_json() -> None:
    window = ReporterWindow(ReporterWindow.new())
    for i in range(50):
        window.add(i, f"p{i % 7}", f"e{i}", Profile(network=f"10.0.{i % 3}.0/24", batch=str(i % 4), fresh=i % 5 == 0))
    assert orjson.loads(orjson.dumps(window.data)) == window.data
    window.drop_oldest(len(window.reports))
    assert window.data == ReporterWindow.new()
