"""The ``drill`` command of run_scenario.py: a drill played headless with a scripted trainee.

    python run_scenario.py drill scenarios/drills/duplicate_wave.yaml \\
        --trainee scenarios/drills/trainees/duplicate_wave_good.yaml --out runs/drills/x --lang en

Writes ``debrief.json`` and ``debrief.html`` (one page, in ``--lang``) into ``--out`` and prints
the score, the times to detect and act, and the money the actions made against doing nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DO_NOTHING = ROOT / "scenarios" / "drills" / "trainees" / "do_nothing.yaml"


def build_drill_parser() -> argparse.ArgumentParser:
    """Parser of the ``drill`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py drill",
        description="Play an incident drill headless with a scripted trainee and write its "
        "debrief (JSON and a one-page HTML report).",
    )
    parser.add_argument("drill", type=Path, help="a drill script (scenarios/drills/*.yaml)")
    parser.add_argument(
        "--trainee", type=Path, default=DO_NOTHING, help="scripted actions (default: none)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: runs/drills/<id>)")
    parser.add_argument("--lang", choices=["zh", "en"], default="zh", help="report language")
    parser.add_argument("--key-file", type=Path, help="privacy key (as for a run)")
    return parser


def run_drill_command(args: argparse.Namespace, api) -> int:
    """The ``drill`` sub-command; bad input raises api.BadInput."""
    from drills.actions import load_trainee
    from drills.report import debrief_html
    from drills.runner import DrillError, run_drill
    from drills.script import load_drill
    from sim.yaml_config import ConfigError

    try:
        drill = load_drill(args.drill)
        trainee = load_trainee(args.trainee)
    except ConfigError as exc:
        raise api.BadInput(str(exc)) from None
    alerts = {r.id for r in drill.alert_rules}
    for i, action in enumerate(trainee.actions):
        if action.kind == "acknowledge" and action.alert not in alerts:
            raise api.BadInput(
                f"{args.trainee}: trainee.actions.{i}.alert: {action.alert!r} is not an alert "
                f"rule of drill {drill.id} (expected one of {', '.join(sorted(alerts))})"
            )
    out = args.out or Path("runs/drills") / drill.id
    # As compare and sweep say it, before the drill's days are played (not a bare OSError).
    api.check_out_folder(out, "the drill's runs and debrief")
    try:
        debrief = run_drill(drill, trainee, out, privacy_key=api.privacy_key(args.key_file))
    except ValueError as exc:  # a target the drill's world lacks, an unknown line...
        message = str(exc) if isinstance(exc, DrillError) else f"trainee.{exc}"
        raise api.BadInput(f"{message} (drill {args.drill}, trainee {args.trainee})") from None
    page = out / "debrief.html"
    page.write_text(debrief_html(debrief, args.lang), encoding="utf-8")
    print(f"drill {drill.id} ({drill.title(args.lang)}), trainee {trainee.name}")
    print(f"  score {debrief['score']:g} / {debrief['of']}")
    for inc, timing in debrief["detection"].items():
        print(
            f"  {inc}: minutes to detect {timing['minutes_to_detect']}, "
            f"to act {timing['minutes_to_act']}"
        )
    print(f"  alerts: {debrief['alerts_true']} true, {debrief['alerts_noise']} noise")
    for key, value in debrief["money"]["difference"].items():
        if value:
            print(f"  {key}: {value:+,} against doing nothing")
    print(f"  debrief: {out / 'debrief.json'}, {page}", file=sys.stderr)
    return 0


__all__ = ["build_drill_parser", "run_drill_command"]
