"""Property-based tests over every config schema and file format (issue 16): whatever a user writes, a
command exits 0 or 2 without a traceback, writes and deletes nothing outside the folder it owns, and leaves
its inputs byte-identical when it fails. A few dozen generated inputs per stage here (CI time);
bench/fuzz_inputs.py runs the same harness with >= 10,000 per stage."""

from __future__ import annotations

from collections import Counter

import pytest
from fuzz_strategies import STAGES, check_example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COUNTS: Counter = Counter()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_hostile_inputs_keep_the_contract(stage, default_model_dir):
    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        check_example(stage, data.draw, COUNTS)

    one()
    assert sum(v for k, v in COUNTS.items() if k.startswith(f"{stage}:")) >= 25
