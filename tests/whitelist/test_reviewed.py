"""The one strict loader of every file a person writes: all problems, each at its line, in one pass."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from tests.whitelist.conftest import BASE, SYSTEMD_ENTRY, whitelist_text
from selfheal.whitelist import WhitelistError, load_whitelist_bytes
from selfheal.whitelist.reviewed import ReviewedFileError, load_reviewed


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"
    inner: Inner | None = None
    items: list[Inner] = []


def refused(text: str, model: type[BaseModel] = Doc, **kw) -> ReviewedFileError:
    with pytest.raises(ReviewedFileError) as info:
        load_reviewed(text.encode(), model, path="f.yaml", **kw)
    return info.value


def test_a_valid_file_loads_from_bytes_or_a_path(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: y\nitems: [{size: 1}]\n")
    assert load_reviewed(path, Doc) == load_reviewed(path.read_bytes(), Doc) == Doc(name="y", items=[Inner(size=1)])


def test_a_duplicate_key_is_reported_with_every_other_problem_and_the_first_value_is_validated():
    text = "name: a\ninner:\n  size: big\n  colour: red\nname: b\nitems:\n  - {size: 1, size: 2}\n  - {}\n"
    error = refused(text)
    assert error.lines() == [
        "f.yaml:3: inner.size: Input should be a valid integer, unable to parse string as an integer",
        "f.yaml:4: inner.colour: unknown key (not part of the file's format)",
        "f.yaml:5: name: key given twice in the same mapping",
        "f.yaml:7: items[0].size: key given twice in the same mapping",
        "f.yaml:8: items[1].size: required key is missing",
    ]
    assert str(error) == "\n".join(error.lines()) and isinstance(error, ValueError)


def test_the_first_of_two_values_is_the_one_validated():
    error = refused("name: a\nname: [not, text]\n")
    assert error.lines() == ["f.yaml:2: name: key given twice in the same mapping"]


@pytest.mark.parametrize("text, wanted", [
    ("", Doc()), ("# only a comment\n", Doc()), ("---\n", Doc()), ("~\n", Doc()),
])
def test_an_empty_file_is_an_empty_mapping_when_the_model_accepts_one(text, wanted):
    assert load_reviewed(text.encode(), Doc) == wanted


def test_an_empty_file_the_model_cannot_accept_is_reported_once():
    assert refused("", Inner).lines() == ["f.yaml:1: <file>: the file is empty"]


@pytest.mark.parametrize("text, line, field, words", [
    ("- a list\n", 1, "<file>", "the top level must be a mapping"),
    ("name: [unclosed\n", 2, "<yaml>", "expected"),
    ("name: a\n---\nname: b\n", 2, "<yaml>", "single document"),
    ("name: a\nitems: \x07\n", 2, "<yaml>", "special characters are not allowed"),
    ("base: &b {size: 1}\ninner: {<<: *b}\n", 2, "inner.<<", "merge keys (<<) are not supported"),
    ("items: &a [*a]\n", 1, "items[0]", "an alias that contains itself"),
    ("name: !custom x\n", 1, "name", "cannot read this value"),
    ("? [a, b]\n: c\n", 1, "<top>", "a key must be plain text or a number"),
])
def test_yaml_that_pyyaml_would_refuse_or_misread_is_refused_at_its_line(text, line, field, words):
    error = refused(text)
    hits = [p for p in error.problems if p.field == field]
    assert hits and hits[0].line == line and words in hits[0].message, error.lines()


def test_an_unreadable_file_is_named(tmp_path):
    with pytest.raises(ReviewedFileError, match=f"{tmp_path / 'nope.yaml'}:0: <file>: cannot read"):
        load_reviewed(tmp_path / "nope.yaml", Doc)
    (tmp_path / "latin.yaml").write_bytes(b"name: \xe9\n")
    with pytest.raises(ReviewedFileError, match=":0: <file>: not UTF-8"):
        load_reviewed(tmp_path / "latin.yaml", Doc)


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> Pair:
        problems = pair_problems(self.model_dump())
        if problems:
            raise PydanticCustomError("pair", "{summary}", {"summary": "; ".join(m for _, m in problems), "problems": problems})
        return self


def pair_problems(doc: dict) -> list:
    low, high = doc.get("low"), doc.get("high")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        return [(("high",), f"{high} is below low {low}")]
    return []


def test_a_check_reports_cross_field_problems_with_field_errors_in_one_pass():
    error = refused("low: 5\nhigh: 2\nwidth: 1\n", Pair, checks=(pair_problems,), what="the pair format")
    assert error.lines() == ["f.yaml:2: high: 2 is below low 5", "f.yaml:3: width: unknown key (not part of the pair format)"]


def test_a_models_located_problems_are_placed_even_without_a_check():
    assert refused("low: 5\nhigh: 2\n", Pair).lines() == ["f.yaml:2: high: 2 is below low 5"]


def test_describe_words_an_error_and_a_bad_mapping_key_points_at_the_key():
    class Keyed(BaseModel):
        model_config = ConfigDict(extra="forbid")
        by_id: dict[int, int] = {}

    assert refused("by_id:\n  1: 1\n  one: 2\n", Keyed).lines()[0].startswith("f.yaml:3: by_id.one: not a valid key: ")
    said = refused("by_id: {one: 2}\n", Keyed, describe=lambda err: "ids are numbers" if err["loc"][-1] == "[key]" else None)
    assert said.lines() == ["f.yaml:1: by_id.one: ids are numbers"]


# --- the whitelist through it ---------------------------------------------------------------

def test_a_duplicate_key_in_the_whitelist_no_longer_hides_its_other_problems():
    second = (SYSTEMD_ENTRY.replace("blast_radius: instance", "blast_radius: galaxy")
              .replace("cooldown: 10m", "cooldwn: 10m").replace("groups: [sre]", "groups: [sre, dba]"))
    text = whitelist_text(SYSTEMD_ENTRY, second, head=BASE.replace("version: 1\n", "version: 1\nversion: 1\n"))
    with pytest.raises(WhitelistError) as info:
        load_whitelist_bytes(text.encode(), "wl.yaml")
    assert info.value.lines() == [
        "wl.yaml:2: version: key given twice in the same mapping",
        "wl.yaml:18: entries[1].cooldown: required key is missing",
        "wl.yaml:18: entries[1].id: duplicate id 'restart-api' (first used by entries[0])",
        "wl.yaml:21: entries[1].blast_radius: blast radius 'galaxy' has no tier; known tiers: fleet, instance, region, service",
        "wl.yaml:22: entries[1].approvers.groups[1]: unknown group 'dba'",
        "wl.yaml:24: entries[1].cooldwn: unknown key (not part of the whitelist format)",
    ]
