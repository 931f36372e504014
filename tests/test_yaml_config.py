"""Tests for sim.yaml_config: loading, extends, --set, referenced files and error messages."""

from __future__ import annotations

import datetime
import tempfile
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sim.yaml_config import ConfigError, ExistingFile, config_hash, load_config, resolve_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Period(_Strict):
    """Simulated period."""

    start: datetime.date
    days: int = Field(ge=1)


class Concession(_Strict):
    """One concession rule."""

    discount_pct: int = Field(ge=0, le=100)
    hours: str = "all"

    @field_validator("hours")
    @classmethod
    def _hours_shape(cls, value: str) -> str:
        if value != "all" and "-" not in value:
            raise ValueError("hours must be 'all' or look like 07:00-09:00")
        return value


class Fares(_Strict):
    """Fare rules."""

    base_fen: int = Field(ge=0)
    mode: Literal["flat", "distance"] = "flat"
    concessions: dict[str, list[Concession]] = {}


class Outlets(_Strict):
    """Outlets from a file."""

    file: ExistingFile


class Scenario(_Strict):
    """A miniature scenario schema."""

    name: str
    period: Period
    fares: Fares
    media_mix: list[float] = [1.0]
    outlets: Outlets | None = None
    seed: int | list[int] = 0


BASE = """\
name: base
period:
  start: 2024-01-01
  days: 7
fares:
  base_fen: 200
  concessions:
    longevity:
      - discount_pct: 100
      - discount_pct: 50
        hours: 07:00-09:00
media_mix: [0.5, 0.5]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, Scenario, overrides)
    return str(info.value)


# --- successful loads ---------------------------------------------------------------------------


def test_loads_valid_file(tmp_path: Path) -> None:
    scenario = load_config(write(tmp_path, "base.yaml", BASE), Scenario)
    assert scenario.period == Period(start=datetime.date(2024, 1, 1), days=7)
    assert [c.discount_pct for c in scenario.fares.concessions["longevity"]] == [100, 50]
    assert scenario.media_mix == [0.5, 0.5]


def test_existing_file_is_relative_to_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "scen/data/outlets.csv", "id\n1\n")
    path = write(tmp_path, "scen/s.yaml", BASE + "outlets: {file: data/outlets.csv}\n")
    monkeypatch.chdir(tmp_path)  # the cwd is not the file's directory
    scenario = load_config(Path("scen/s.yaml"), Scenario)
    assert scenario.outlets is not None
    assert scenario.outlets.file == (tmp_path / "scen/data/outlets.csv").resolve()
    assert path.exists()


def test_resolve_path() -> None:
    assert resolve_path("a/b.csv", "/x/y") == Path("/x/y/a/b.csv")
    assert resolve_path("../b.csv", "/x/y") == Path("/x/b.csv")
    assert resolve_path("/abs/b.csv", "/x/y") == Path("/abs/b.csv")


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    path = write(tmp_path, "base.yaml", BASE)
    first, again = load_config(path, Scenario), load_config(path, Scenario)
    changed = load_config(path, Scenario, ["period.days=8"])
    assert config_hash(first) == config_hash(again)
    assert len(config_hash(first)) == 64
    assert config_hash(changed) != config_hash(first)


# --- extends ------------------------------------------------------------------------------------


def test_extends_chain_merges_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    write(tmp_path, "mid/mid.yaml", "extends: ../base.yaml\nname: mid\nfares: {mode: distance}\n")
    top = write(
        tmp_path,
        "mid/top.yaml",
        """\
        extends: mid.yaml
        name: top
        fares:
          concessions:
            longevity:
              - discount_pct: 30
        media_mix: [1.0]
        """,
    )
    scenario = load_config(top, Scenario)
    assert scenario.name == "top"
    assert scenario.fares.mode == "distance"  # from mid
    assert scenario.fares.base_fen == 200  # from base, merged under the overlay's `fares`
    assert scenario.fares.concessions["longevity"] == [Concession(discount_pct=30)]  # replaced
    assert scenario.media_mix == [1.0]
    assert scenario.period.days == 7


def test_error_line_comes_from_the_file_that_supplied_the_value(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE.replace("days: 7", "days: -7"))
    top = write(tmp_path, "top.yaml", "extends: base.yaml\nfares:\n  base_fen: -1\n")
    message = error_of(top)
    assert f"{base}:4: period.days: value out of range; got -7" in message
    assert f"{top}:3: fares.base_fen: value out of range; got -1" in message


def test_extends_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    b = write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\n")
    message = error_of(a)
    assert message.startswith(f"{b}:2: extends: cycle: ")
    assert message.endswith(f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}")


def test_extends_missing_target(tmp_path: Path) -> None:
    top = write(tmp_path, "top.yaml", "name: x\nextends: nope.yaml\n")
    assert error_of(top) == (
        f"{top}:2: extends: file not found: {(tmp_path / 'nope.yaml').resolve()};"
        f" got 'nope.yaml'; expected a path relative to {tmp_path.resolve()}"
    )


def test_extends_not_a_string(tmp_path: Path) -> None:
    top = write(tmp_path, "top.yaml", "extends: [a.yaml]\n")
    assert error_of(top) == (
        f"{top}:1: extends: wrong type; got ['a.yaml']; expected a file name (string)"
    )


# --- --set overrides ----------------------------------------------------------------------------


def test_set_overrides_nested_fields_list_items_and_flow_values(tmp_path: Path) -> None:
    path = write(tmp_path, "base.yaml", BASE)
    scenario = load_config(
        path,
        Scenario,
        [
            "period.days=14",
            "fares.concessions.longevity.1.discount_pct=60",
            "media_mix=[0.2, 0.8]",
            "fares.concessions.student=[{discount_pct: 50}]",
        ],
    )
    assert scenario.period.days == 14
    assert scenario.fares.concessions["longevity"][1].discount_pct == 60
    assert scenario.media_mix == [0.2, 0.8]
    assert scenario.fares.concessions["student"] == [Concession(discount_pct=50)]


def test_set_unknown_path_is_reported_as_from_set(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "base.yaml", BASE), ("fares.window_min=90",))
    assert message == (
        "from --set fares.window_min=90: fares.window_min: unknown key 'window_min';"
        " expected one of: base_fen, mode, concessions"
    )


def test_set_bad_value_is_reported_as_from_set(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "base.yaml", BASE), ("period.days=abc",))
    assert message == (
        "from --set period.days=abc: period.days: invalid value (unable to parse string as an"
        " integer); got 'abc'; expected a valid integer"
    )


@pytest.mark.parametrize("text", ["period.days", "=3", "period..days=3", " =3"])
def test_set_bad_syntax(tmp_path: Path, text: str) -> None:
    message = error_of(write(tmp_path, "base.yaml", BASE), (text,))
    assert message == (
        f"from --set {text}: bad --set syntax; expected path.to.field=value, e.g. period.days=14"
    )


def test_set_list_index_out_of_range_and_scalar_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "base.yaml", BASE)
    message = error_of(path, ("media_mix.5=1", "media_mix.x=1", "name.first=x", "media_mix=[1, 2"))
    assert message.splitlines() == [
        "from --set media_mix.5=1: media_mix: '5' out of range; expected 0 to 1",
        "from --set media_mix.x=1: media_mix: 'x' is not a list index; expected 0 to 1",
        "from --set name.first=x: name: holds 'base', not a mapping; cannot set 'first' in it",
        "from --set media_mix=[1, 2: malformed YAML: expected ',' or ']', but got '<stream end>'"
        " (while parsing a flow sequence at line 1)",
    ]


# --- error kinds --------------------------------------------------------------------------------


def test_malformed_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nperiod:\n  start: [2024\n  days: 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}:4:")
    assert "malformed YAML: " in message
    assert "(while parsing a flow sequence at line 3)" in message


def test_bad_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nperiod:\n  start: 2024-01-01\n days: 3\n")
    assert error_of(path).startswith(f"{path}:4:2: malformed YAML: ")


def test_invalid_date_and_duplicate_key_are_malformed_yaml(tmp_path: Path) -> None:
    dates = write(tmp_path, "d.yaml", "name: x\nperiod: {start: 2024-13-45}\n")
    assert error_of(dates) == (
        f"{dates}:2:17: malformed YAML: cannot read value '2024-13-45': month must be in 1..12"
    )
    dup = write(tmp_path, "dup.yaml", "name: x\nfares: {}\nname: y\n")
    assert error_of(dup) == f"{dup}:3:1: malformed YAML: duplicate key 'name' (first at line 1)"


def test_recursive_alias(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "name: x\nmedia_mix: &a [1, *a]\n")
    assert error_of(path) == f"{path}:2: malformed YAML: an alias refers to its own anchor"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "~\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "e.yaml", text)
    assert error_of(path) == f"{path}: file is empty; expected a mapping of keys to values"


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "l.yaml", "# a list\n- a\n- b\n")
    assert error_of(path) == (
        f"{path}:2: top level is a list; expected a mapping of keys to values (key: value lines)"
    )


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_bytes(b"name: x\nbad: \xff\n")
    assert error_of(path) == f"{path}:2: not UTF-8 text (invalid start byte)"


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: file not found: {path.resolve()}"


def test_unknown_key_lists_allowed_keys_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "u.yaml", BASE + "farez: {}\n")
    assert error_of(path) == (
        f"{path}:13: farez: unknown key 'farez' (did you mean 'fares'?); expected one of:"
        " name, period, fares, media_mix, outlets, seed"
    )


def test_unknown_key_inside_dict_of_lists_of_models(tmp_path: Path) -> None:
    path = write(tmp_path, "u.yaml", BASE.replace("hours: 07:00", "hourz: 07:00"))
    assert error_of(path) == (
        f"{path}:11: fares.concessions.longevity.1.hourz: unknown key 'hourz'"
        " (did you mean 'hours'?); expected one of: discount_pct, hours"
    )


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", BASE.replace("base_fen: 200", "base_fen: [200]"))
    assert error_of(path) == (
        f"{path}:6: fares.base_fen: wrong type; got [200]; expected a valid integer"
    )


def test_wrong_type_for_a_model_lists_its_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", BASE.replace("period:\n  start: 2024-01-01\n", "period: 7\n"))
    path.write_text(path.read_text().replace("  days: 7\n", ""))
    assert error_of(path) == (
        f"{path}:2: period: wrong type; got 7; expected a mapping with keys: start, days"
    )


def test_union_arms_merge_into_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "w.yaml", BASE + "seed: {a: 1}\n")
    assert error_of(path) == (
        f"{path}:13: seed: wrong type; got {{'a': 1}}; expected a valid integer or a valid list"
    )


def test_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", BASE.replace("discount_pct: 50", "discount_pct: 150"))
    assert error_of(path) == (
        f"{path}:10: fares.concessions.longevity.1.discount_pct: value out of range; got 150;"
        " expected less than or equal to 100"
    )


def test_unknown_literal_value(tmp_path: Path) -> None:
    path = write(tmp_path, "l.yaml", BASE.replace("base_fen: 200", "base_fen: 200\n  mode: zone"))
    assert error_of(path) == (
        f"{path}:7: fares.mode: unknown value; got 'zone'; expected one of 'flat' or 'distance'"
    )


def test_missing_required_field_points_at_parent_key(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", BASE.replace("  days: 7\n", ""))
    assert error_of(path) == f"{path}:2: period.days: missing required field; expected int"


def test_missing_top_level_field(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "# header\nname: x\nperiod: {start: 2024-01-01, days: 1}\n")
    assert error_of(path) == (
        f"{path}:2: fares: missing required field;"
        " expected a mapping with keys: base_fen, mode, concessions"
    )


def test_field_validator_message_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "v.yaml", BASE.replace("hours: 07:00-09:00", "hours: mornings"))
    assert error_of(path) == (
        f"{path}:11: fares.concessions.longevity.1.hours: hours must be 'all' or look like"
        " 07:00-09:00; got 'mornings'"
    )


def test_missing_referenced_file(tmp_path: Path) -> None:
    path = write(tmp_path, "sub/f.yaml", BASE + "outlets:\n  file: data/outlets.csv\n")
    resolved = (tmp_path / "sub/data/outlets.csv").resolve()
    assert error_of(path) == (
        f"{path}:14: outlets.file: file not found: {resolved}; got 'data/outlets.csv';"
        " expected an existing file (a relative path is relative to the YAML file naming it;"
        " for --set, to the cwd)"
    )


def test_referenced_file_in_base_is_relative_to_the_base(tmp_path: Path) -> None:
    write(tmp_path, "base/data/o.csv", "id\n")
    write(tmp_path, "base/base.yaml", BASE + "outlets: {file: data/o.csv}\n")
    top = write(tmp_path, "policy/top.yaml", "extends: ../base/base.yaml\nname: top\n")
    scenario = load_config(top, Scenario)
    assert scenario.outlets is not None
    assert scenario.outlets.file == (tmp_path / "base/data/o.csv").resolve()


def test_many_problems_are_capped(tmp_path: Path) -> None:
    extra = "".join(f"unknown_{i}: 1\n" for i in range(12))
    message = error_of(write(tmp_path, "many.yaml", BASE + extra))
    lines = message.splitlines()
    assert len(lines) == 11
    assert lines[-1] == "... and 2 more problems"


# --- property: garbage never escapes as another exception ---------------------------------------

_YAMLISH = st.text(alphabet=st.sampled_from(list("ab01:-[]{},#&*!|>'\"%@`? \n\t.=~\x00é")))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), _YAMLISH, st.binary()))
def test_garbage_raises_config_error(garbage: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "garbage.yaml"
        if isinstance(garbage, bytes):
            path.write_bytes(garbage)
        else:
            path.write_text(garbage, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, Scenario)
        assert str(info.value)


def test_explicit_tag_that_does_not_fit(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "name: !!bool maybe\n")
    assert error_of(path) == (
        f"{path}:1:7: malformed YAML: cannot read value 'maybe': it does not fit tag"
        " tag:yaml.org,2002:bool"
    )
