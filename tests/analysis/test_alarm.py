"""The imbalance alarm: a modality left at chance whose inputs a probe finds informative is named."""

from __future__ import annotations

import json

import erlmr
from erlmr.analysis.alarm import ImbalanceAlarm
from erlmr.data import load_dataset


def splits():
    return load_dataset("synthetic", None, 0, 0.25, {"train_size": 80, "test_size": 20})


def probe_saying(accuracy):
    calls = []

    def probe():
        calls.append(1)
        return {"probe": {"accuracy": {"val": accuracy}}}

    return probe, calls


def test_alarm_names_a_modality_at_chance_for_its_patience_only_when_the_probe_finds_it_informative():
    data = splits()
    probe, calls = probe_saying({"m0": 0.95, "m1": 0.26})
    alarm = ImbalanceAlarm(data, ["m0", "m1"], probe, patience=3)
    chance = alarm.chance
    at_chance = {"m0": chance, "m1": chance}
    assert alarm.update(0, at_chance) == [] and alarm.update(1, at_chance) == [] and not calls  # no probe yet
    raised = alarm.update(2, at_chance)
    assert [a["modality"] for a in raised] == ["m0"]  # m1's inputs carry little: not under-used
    assert "modality 'm0' has stayed at chance" in raised[0]["message"] and "0.950" in raised[0]["message"]
    assert alarm.update(3, at_chance) == [] and len(calls) == 1  # once per modality, probed once per run


def test_a_modality_that_learns_resets_its_streak():
    data = splits()
    probe, calls = probe_saying({"m0": 0.95, "m1": 0.95})
    alarm = ImbalanceAlarm(data, ["m0", "m1"], probe, patience=2)
    chance = alarm.chance
    alarm.update(0, {"m0": chance, "m1": 0.9})
    assert alarm.update(1, {"m0": 0.9, "m1": 0.9}) == []
    assert alarm.update(2, {"m0": chance, "m1": 0.9}) == [] and not calls


def test_a_run_that_learns_nothing_raises_the_alarm_in_its_log_and_summary(tmp_path):
    result = erlmr.train(
        {
            "data": {"dataset": "synthetic", "options": {"train_size": 160, "test_size": 40}},
            "method": {"name": "joint"},
            "optim": {"lr": 1e-7},
            "train": {"epochs": 3, "batch_size": 32, "quiet": True, "run_dir": str(tmp_path / "run"), "device": "cpu"},
        }
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "alarms" not in records[0] and "alarms" not in records[1]
    named = {a["modality"] for a in records[2]["alarms"]}
    assert named and named == {a["modality"] for a in result.summary["alarms"]}
    assert all("under-uses it" in a["message"] for a in result.summary["alarms"])


def test_the_alarm_can_be_turned_off(tmp_path):
    result = erlmr.train(
        {
            "data": {"dataset": "synthetic", "options": {"train_size": 160, "test_size": 40}},
            "optim": {"lr": 1e-7},
            "train": {
                "epochs": 3,
                "batch_size": 32,
                "quiet": True,
                "run_dir": str(tmp_path / "run"),
                "device": "cpu",
                "imbalance_alarm": False,
            },
        }
    )
    assert result.summary["alarms"] == []
