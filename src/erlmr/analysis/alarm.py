"""The imbalance alarm: a modality the model leaves at chance although its inputs carry information.

After every epoch the trainer hands the alarm each modality's own validation accuracy. A modality
whose accuracy stays within ``margin`` of chance (the majority-class share of the validation split) for
``patience`` epochs in a row is checked once with the data check's linear probe on its inputs
(:func:`erlmr.analysis.datacheck.check_data`): if the probe beats chance by more than
``informative_margin`` on validation, the modality is under-used and the alarm says so, naming it, in
that epoch's record and in ``summary.json``. The probe runs only then, so a healthy run pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..data import DatasetSplits


@dataclass
class ImbalanceAlarm:
    splits: DatasetSplits
    modalities: Sequence[str]
    probe: Callable[[], dict[str, Any]]
    patience: int = 3
    margin: float = 0.02
    informative_margin: float = 0.1
    streak: dict[str, int] = field(default_factory=dict)
    raised: dict[str, dict[str, Any]] = field(default_factory=dict)
    _probe_report: dict[str, Any] | None = None

    @property
    def chance(self) -> float:
        counts = torch.bincount(self.splits.val.labels, minlength=self.splits.num_classes)
        return float(counts.max()) / max(len(self.splits.val), 1)

    def update(self, epoch: int, modality_accuracy: dict[str, float]) -> list[dict[str, Any]]:
        """The alarms raised by this epoch's accuracies (each modality at most once per run)."""
        chance, new = self.chance, []
        for m in self.modalities:
            at_chance = modality_accuracy.get(m, 1.0) <= chance + self.margin
            self.streak[m] = self.streak.get(m, 0) + 1 if at_chance else 0
            if self.streak[m] >= self.patience and m not in self.raised:
                alarm = self.check(m, epoch, modality_accuracy[m], chance)
                if alarm is not None:
                    self.raised[m] = alarm
                    new.append(alarm)
        return new

    def restore(self, records: Sequence[dict[str, Any]]) -> None:
        """Continue from the epoch records of a resumed run: streaks and the alarms already raised."""
        chance = self.chance
        for record in records:
            accuracy = record.get("val_modality_accuracy", {})
            for m in self.modalities:
                at_chance = accuracy.get(m, 1.0) <= chance + self.margin
                self.streak[m] = self.streak.get(m, 0) + 1 if at_chance else 0
            for alarm in record.get("alarms", []):
                self.raised[alarm["modality"]] = alarm

    def check(self, modality: str, epoch: int, accuracy: float, chance: float) -> dict[str, Any] | None:
        if self._probe_report is None:
            self._probe_report = self.probe()
        probe = self._probe_report.get("probe", {})
        streak = f"has stayed at chance (val accuracy {accuracy:.3f}, chance {chance:.3f}) for {self.patience} epochs"
        base = {"modality": modality, "epoch": epoch, "accuracy": accuracy, "chance": chance}
        if "accuracy" not in probe:
            return {
                **base,
                "probe": None,
                "message": (
                    f"modality {modality!r} {streak}; no probe could say whether its inputs are informative "
                    f"({probe.get('skipped', 'no probe')})"
                ),
            }
        probed = probe["accuracy"]["val"][modality]
        if probed <= chance + self.informative_margin:
            return None  # its inputs carry little: chance is what it can do
        return {
            **base,
            "probe": probed,
            "message": (
                f"modality {modality!r} {streak}, though a linear probe on its inputs reaches {probed:.3f} on "
                "validation: the model under-uses it (run `erlmr data check` on this data; a balancing method, "
                "normalised inputs or another encoder may help)"
            ),
        }
