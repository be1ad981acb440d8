"""Fuzzing, bounded for CI: mutations of every spec in specs/ and of --set values (tests/fuzzing.py).

Every case must end within a time bound in a SpecError whose items all carry file:line (or name the
--set they came from), or in a valid spec that round-trips through ``to_yaml`` and that the summary,
the diagram and ``archdsl validate`` accept. A fixed seed and number of cases keep it to seconds;
``python benchmarks/fuzz_specs.py --minutes 5`` runs the same check for as long as asked.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing

TEXTS = fuzzing.spec_texts()
NAMES = sorted(TEXTS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return fuzzing.workdir(tmp_path_factory.mktemp("fuzz"))


def judge(outcome: fuzzing.Outcome, name: str, text: str, sets: list[str]) -> None:
    assert outcome.kind in ("error", "valid"), f"{outcome.kind} on a mutation of {name} with --set {sets}: " \
        f"{outcome.detail}\n--- the spec ---\n{text[:3000]}"


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), rounds=st.integers(1, 3), mutation_seed=st.integers(0, 2**32 - 1),
       with_sets=st.booleans())
def test_mutated_specs_end_in_a_located_error_or_a_valid_spec(folder, name, rounds, mutation_seed, with_sets):
    rng = random.Random(mutation_seed)
    text = fuzzing.mutate(TEXTS[name], rng, rounds)
    sets = fuzzing.mutate_sets(text, rng) if with_sets else []
    judge(fuzzing.check_case(text, sets, folder), name, text, sets)


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_spec_round_trips_with_odd_sets(folder, name):
    """Each spec, unmutated, with a few hostile --set values: still a located error or a valid spec."""
    rng = random.Random(name)
    for _ in range(3):
        sets = fuzzing.mutate_sets(TEXTS[name], rng)
        judge(fuzzing.check_case(TEXTS[name], sets, folder), name, TEXTS[name], sets)


def test_the_check_catches_what_it_looks_for(folder, monkeypatch):
    """The judge is not vacuous: an exception, a hang and an unlocated error are each caught."""
    import archdsl
    from archdsl.errors import ErrorItem, SpecError

    text = TEXTS["gpt2.yaml"]
    assert fuzzing.check_case(text, [], folder).kind == "valid"

    def explode(*args, **kwargs):
        raise KeyError("layers.1")
    monkeypatch.setattr(archdsl, "summary", explode)
    assert fuzzing.check_case(text, [], folder).kind == "crash"
    monkeypatch.undo()

    def nowhere(*args, **kwargs):
        raise SpecError([ErrorItem.at(None, "model.graph.encoder", "a stack nobody reads")])
    monkeypatch.setattr(archdsl, "load_spec", nowhere)
    assert fuzzing.check_case(text, [], folder).kind == "crash"
    monkeypatch.undo()

    def forever(*args, **kwargs):
        while True:
            pass
    monkeypatch.setattr(archdsl, "load_spec", forever)
    assert fuzzing.check_case(text, [], folder, seconds=0.2).kind == "hang"
