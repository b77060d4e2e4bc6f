"""Finding detectors through the ``modelsiem.detectors`` entry-point group.

A detector ships in any installed distribution that declares, in its
``pyproject.toml``::

    [project.entry-points."modelsiem.detectors"]
    my_detector = "my_package.my_module:MyDetector"

Nothing is imported until :func:`available` is called, and two detectors
claiming one id is an error rather than a silent override.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from detectors.base import Detector

GROUP = "modelsiem.detectors"


class DetectorConfigError(ValueError):
    """A detector that cannot be loaded or configured as asked."""


def available() -> dict[str, type[Detector]]:
    """Every installed detector class, by id."""
    found: dict[str, type[Detector]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise DetectorConfigError(f"detector plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise DetectorConfigError(f"detector plugin {ep.name!r} ({ep.value}) is not a Detector subclass")
        if cls.meta.id != ep.name:
            raise DetectorConfigError(f"detector plugin {ep.name!r} declares id {cls.meta.id!r}; they must match")
        if ep.name in found:
            raise DetectorConfigError(f"two detector plugins claim the id {ep.name!r}")
        found[ep.name] = cls
    return found


def build(
    enabled: Sequence[str] = (),
    params: Mapping[str, Mapping[str, Any]] | None = None,
    classes: Mapping[str, type[Detector]] | None = None,
) -> list[Detector]:
    """Instantiate the enabled detectors (all when ``enabled`` is empty) with their parameters."""
    classes = available() if classes is None else classes
    params = params or {}
    ids = list(enabled) or sorted(classes)
    unknown = sorted(set(ids) - set(classes)) + sorted(set(params) - set(classes))
    if unknown:
        raise DetectorConfigError(f"unknown detector id(s): {', '.join(unknown)}; installed: {', '.join(sorted(classes))}")
    detectors = []
    for detector_id in ids:
        try:
            detectors.append(classes[detector_id](**params.get(detector_id, {})))
        except ValidationError as exc:
            raise DetectorConfigError(f"bad parameters for detector {detector_id!r}: {exc}") from exc
    return detectors
