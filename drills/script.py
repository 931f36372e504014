"""Drill scripts (``scenarios/drills/*.yaml``): what a trainee rehearses, validated like every
scenario (file, line and field path in every error).

A drill names a base scenario and the day to play, the incidents of that day (the engine's
incidents, sim/incidents.py), the trainee's role, the monitoring's alert rules, and the tasks
with how each is scored:

    drill:
      id: duplicate_wave
      title: {en: A reader charging twice, zh: 读卡器重复扣款}
      brief: {en: ..., zh: ...}          # what the trainee is told at the start
      difficulty: 2                      # 1 easy .. 3 hard
      role: operations                   # operations | clearing | service_desk
      base: ../nantong_2024.yaml
      day: 2024-03-05
      overrides: [KEY=VALUE, ...]        # optional: the base's settings for this drill
      incidents: [ ... ]                 # as a scenario's incidents:
      alert_rules: [ ... ]               # drills/monitor.py
      tasks:
        - {id: find, kind: find_devices, incident: reader-faulty, points: 40}
        - {id: stop, kind: stop_incident, incident: reader-faulty, within_min: 60, points: 30}
        - {id: refund, kind: refund_cards, incident: reader-faulty, points: 20}
        - {id: explain, kind: explain, incident: reader-faulty, points: 10,
           options: [duplicate_wave, validator_outage, comm_outage]}

Task kinds (scored in drills/debrief.py against the records the incident touched):
- ``find_devices``: the devices the trainee marks faulty or suspends, against the devices at
  fault (the incident's device; a cut uplink's: its line's devices that held records back):
  found, missed, wrongly accused (points x F1);
- ``find_node`` / ``find_medium`` / ``find_outlet`` / ``find_issuer``: name the clearing node,
  QR medium, outlet or issuer (an ``identify`` action): the points shared among the distinct
  names given, none without the right one;
- ``stop_incident``: an action that ends the incident's effect (mark faulty: a technician
  repairs it ``repair_min`` later; suspend the device; extend the outlet's hours; restore a
  clearing node; chase an issuer's deposit money; switch lines to offline acceptance or
  announce free rides while a QR platform is down) — full points within ``within_min`` of the
  start, falling to none at the incident's end;
- ``refund_cards``: the cards the trainee orders refunds for, against the cards charged by the
  incident (points x F1);
- ``explain``: the cause the trainee gives a customer (an ``explain`` action) from the
  incident's start on: the points shared among the distinct causes given (the right answers
  to the drill's other explain tasks aside), none without the incident's kind.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sim.incidents import KINDS, Incident
from sim.yaml_config import ExistingFile, load_config

ROLES = ("operations", "clearing", "service_desk")
TASK_KINDS = (
    "find_devices",
    "find_node",
    "find_medium",
    "find_outlet",
    "find_issuer",
    "stop_incident",
    "refund_cards",
    "explain",
)
METRICS = (
    "taps",
    "pending_uploads",
    "upload_lag_min",
    "duplicates",
    "qr_share",
    "refused",
    "outlet_wait_min",
    "node_batches",
    "node_down",
    "deferred_fen",
)
SCOPES = ("all", "line", "device", "outlet", "node", "issuer")


class Text(BaseModel):
    """Words in both languages of the console."""

    model_config = ConfigDict(extra="forbid")
    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)

    def __call__(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


class AlertRule(BaseModel):
    """An alert the monitoring raises: ``metric`` of each ``per`` (a line, device...) over
    5-minute buckets, above or below a threshold for ``for_min`` minutes (drills/monitor.py)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=40)
    metric: Literal[METRICS]  # type: ignore[valid-type]
    per: Literal[SCOPES] = "all"  # type: ignore[valid-type]
    above: float | None = None
    below: float | None = None
    for_min: int = Field(5, ge=5, le=24 * 60, multiple_of=5)
    severity: Literal["info", "minor", "major"] = "minor"
    text: Text
    # Judge a bucket only where the usual day (the day before) had at least this much of the
    # metric: a quiet night is not an outage.
    min_usual: float = Field(0.0, ge=0)
    # Judge the difference from the usual day (value - usual) instead of the value: for what
    # varies with the device (a busy bus always holds records for its next upload).
    relative: bool = False

    @model_validator(mode="after")
    def _one_threshold(self) -> AlertRule:
        from drills.monitor import ONCE_A_DAY, SCOPES_OF

        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.per not in SCOPES_OF[self.metric]:
            raise ValueError(
                f"per: {self.metric} is measured per {', '.join(SCOPES_OF[self.metric])}, "
                f"not per {self.per}"
            )
        if self.metric in ONCE_A_DAY and self.for_min != 5:
            raise ValueError(
                f"for_min: {self.metric} has one value a day (at the cut-off); expected 5"
            )
        return self


class Task(BaseModel):
    """One thing the trainee must do, and how it is scored (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=40)
    kind: Literal[TASK_KINDS]  # type: ignore[valid-type]
    incident: str = Field(min_length=1, description="The incident the task is about.")
    points: int = Field(gt=0, le=100)
    text: Text | None = None
    within_min: int = Field(60, gt=0, description="stop_incident: full points within this.")
    options: list[Literal[KINDS]] = Field(default_factory=list)  # type: ignore[valid-type]


class Drill(BaseModel):
    """A drill script (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=40)
    title: Text
    brief: Text
    difficulty: int = Field(ge=1, le=3)
    role: Literal[ROLES]  # type: ignore[valid-type]
    base: ExistingFile
    day: dt.date
    incidents: list[Incident] = Field(min_length=1)
    alert_rules: list[AlertRule] = Field(min_length=1)
    tasks: list[Task] = Field(min_length=1)
    repair_min: int = Field(
        45,
        gt=0,
        le=24 * 60,
        description="Time from an action to the end of what it ends: a technician's repair, a "
        "node's switch to its standby site, an issuer's chased payment.",
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="The base scenario's settings changed for this drill, as run_scenario.py "
        "--set KEY=VALUE (e.g. clearing.deposit_overrides_fen.QR_ALIPAY=7000000).",
    )

    @model_validator(mode="after")
    def _references(self) -> Drill:
        ids = {inc.id for inc in self.incidents}
        for i, task in enumerate(self.tasks):
            if task.incident not in ids:
                raise ValueError(
                    f"tasks.{i}.incident: {task.incident!r} is not one of the drill's incidents "
                    f"({', '.join(sorted(ids))})"
                )
            if task.kind == "explain" and not task.options:
                raise ValueError(f"tasks.{i}.options: an explain task needs the causes offered")
        for i, inc in enumerate(self.incidents):
            if inc.start.date() != self.day and inc.kind != "clearing_node_outage":
                raise ValueError(
                    f"incidents.{i}.start: {inc.start:%Y-%m-%d} is not the drill's day {self.day}"
                )
        rules = [r.id for r in self.alert_rules]
        if len(rules) != len(set(rules)):
            raise ValueError("alert_rules: two rules have one id")
        return self

    def total_points(self) -> int:
        return sum(t.points for t in self.tasks)


class DrillFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drill: Drill


def load_drill(path: str | Path) -> Drill:
    """Read and validate a drill script; ``ConfigError`` names the file, line and field."""
    return load_config(path, DrillFile).drill


__all__ = ["ROLES", "TASK_KINDS", "AlertRule", "Drill", "Task", "Text", "load_drill"]
