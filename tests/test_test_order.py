"""The suite's reordering (`ASINTROVAE_TEST_ORDER`), which CI uses to show no test depends on the tests before it."""

from types import SimpleNamespace

import pytest

from helpers import reorder_tests

ITEMS = [SimpleNamespace(nodeid=f"tests/test_{m}.py::test_{i}") for m in "abc" for i in range(4)]


def test_reverse_reverses_modules_and_tests_keeping_each_module_together():
    reordered = [item.nodeid for item in reorder_tests(ITEMS, "reverse")]
    assert reordered == [item.nodeid for item in reversed(ITEMS)]


def test_shuffle_is_a_seeded_permutation_keeping_each_module_together():
    first, again, other = (reorder_tests(ITEMS, f"shuffle:{seed}") for seed in (3, 3, 4))
    assert first == again and first != other and sorted(map(id, first)) == sorted(map(id, ITEMS))
    modules = [item.nodeid.split("::")[0] for item in first]
    assert len([m for i, m in enumerate(modules) if i == 0 or m != modules[i - 1]]) == 3  # contiguous
    assert reorder_tests(ITEMS, "") == ITEMS


@pytest.mark.parametrize("order", ["random", "shuffle", "shuffle:x", "reversed"])
def test_an_unknown_order_is_refused_naming_the_choices(order):
    with pytest.raises(ValueError, match="'reverse' or 'shuffle:SEED'.*" + order):
        reorder_tests(ITEMS, order)
