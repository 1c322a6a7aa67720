"""The contract is what runs: every declared activity is implemented once, with its types,
and every activity the worker registers is declared; every kind has its activities."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import selfheal.activities
from selfheal.contract import activities as declared
from selfheal.contract.kinds import KINDS
from selfheal.whitelist.models import Entry


def defined_name(fn) -> str | None:
    # The SDK keeps an activity's definition on the function; a declaration and its
    # implementation share the name.
    definition = getattr(fn, "__temporal_activity_definition", None)
    return definition.name if definition is not None else None


def implementations() -> dict[str, list]:
    found: dict[str, list] = {}
    for info in pkgutil.iter_modules(selfheal.activities.__path__, "selfheal.activities."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for _, fn in inspect.getmembers(cls, inspect.isfunction):
                if (name := defined_name(fn)) is not None:
                    found.setdefault(name, []).append(fn)
            # A notifier implements its declared activity through activities.notify.activity_of.
            if getattr(cls, "name", None) in declared.NOTIFIERS and inspect.isfunction(getattr(cls, "send", None)):
                found.setdefault(defined_name(declared.NOTIFIERS[cls.name]), []).append(cls.send)
    return found


def types_of(fn) -> tuple[list, object]:
    hints = typing.get_type_hints(fn)
    params = [hints[p] for p in inspect.signature(fn).parameters if p != "self"]
    return params, hints["return"]


def test_every_declared_activity_is_implemented_once_with_its_types():
    found = implementations()
    for stub in declared.DECLARED:
        name = defined_name(stub)
        assert name == stub.__name__
        assert len(found.get(name, [])) == 1, f"{name}: {found.get(name)}"
        assert types_of(found[name][0]) == types_of(stub), name


def test_every_implemented_activity_is_declared():
    assert set(implementations()) == {defined_name(s) for s in declared.DECLARED}


async def test_a_declaration_never_runs_in_place_of_its_implementation():
    try:
        await declared.notify_webhook(None)
    except NotImplementedError:
        return
    raise AssertionError("a declaration ran")


def test_every_kind_of_the_whitelist_has_a_row_and_its_activities_are_declared():
    union = typing.get_args(Entry)[0]  # Annotated[A | B | ..., discriminator]
    names = {typing.get_args(t.model_fields["kind"].annotation)[0] for t in typing.get_args(union)}
    assert names == set(KINDS)
    for name, kind in KINDS.items():
        assert kind.reader in declared.DECLARED and kind.executor in declared.DECLARED
        assert typing.get_args(kind.entry.model_fields["kind"].annotation) == (name,)


def test_every_table_of_kinds_outside_the_contract_covers_exactly_its_kinds():
    """The tables that must be per kind where the contract cannot hold them (the trust
    boundary's own list, the AWS executors' modules, the grants, the plain words)."""
    from selfheal.activities.aws_remediate import MODULES
    from selfheal.grants.iam import CALLS, SHADOW_READS
    from selfheal.whitelist.explain import KIND_CHECKS as explained
    from selfheal.whitelist.fields import AWS_KINDS
    from selfheal.whitelist.fields import KINDS as BOUNDARY_KINDS

    aws = {name for name, kind in KINDS.items() if kind.aws}
    assert set(BOUNDARY_KINDS) == set(KINDS) and set(AWS_KINDS) == aws
    assert set(MODULES) == aws
    assert set(CALLS) == aws and set(SHADOW_READS) == aws
    assert set(explained) == set(KINDS)
