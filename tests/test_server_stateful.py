"""The server-backed state machine of the soak (tests/_server_machine.py) in CI, a bounded run: one real
``embedkit serve`` (tiny model), two writer processes and the library write at random, one at a time and
all at once, and REST must equal the in-memory model exactly after every step (gets, counts, dense,
lexical and hybrid searches); the server answers no 5xx and logs no traceback. ``scripts/soak_index.py``
runs the same machine for long soaks, with random seeds."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from ._server_machine import Backend, ServerMachine
from .test_index_stateful import STEPS

pytestmark = pytest.mark.slow


def test_rest_two_writer_processes_and_the_library_agree_with_the_model(tiny_encoder):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one text at a time (the oracle's vectors): thread teams only cost here
    before = dict(STEPS)
    backend = ServerMachine.backend = Backend(tiny_encoder)
    try:
        run_state_machine_as_test(ServerMachine, settings=settings(
            max_examples=5, stateful_step_count=40, derandomize=True, database=None, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]))
    finally:
        ServerMachine.backend = None
        stats = backend.close()
        torch.set_num_threads(threads)
    steps = {k: STEPS[k] - before[k] for k in ("server", "rest")}
    assert steps["server"] >= 150 and steps["rest"] >= 75, steps
    assert stats["5xx"] == 0 and stats["log_tracebacks"] == 0 and stats["starts"] == 1, stats
    assert stats["requests"] >= stats["client_requests"] >= 2 * steps["server"], stats  # a write: gets, searches
