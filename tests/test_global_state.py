"""The leak check itself (conftest's autouse fixture, tests/global_state.py)."""
import fastna._policy as policy
from global_state import Snapshot


def test_a_replaced_module_attribute_is_a_leak_and_is_restored():
    snapshot = Snapshot()
    old = policy.select
    policy.select = None
    leaks = snapshot.restore()
    assert policy.select is old
    assert any("fastna._policy.select" in leak for leak in leaks), leaks


def test_globals_torch_compile_adds_or_removes_are_not_leaks():
    # dynamo stores resume functions and builtins dicts in the modules it traces and
    # torch._dynamo.reset() (or the garbage collector) removes them again, at any time.
    policy.__resume_at_84_30 = lambda: None
    try:
        snapshot = Snapshot()
        del policy.__resume_at_84_30
        policy.__builtins_dict___29 = {}
        assert snapshot.restore() == []
    finally:
        vars(policy).pop("__builtins_dict___29", None)
        vars(policy).pop("__resume_at_84_30", None)
