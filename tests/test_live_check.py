"""kernels.LiveCheck and kernels.count_step: the compiled armed-step check and step count
of fastoptim.optim's plans.  The check must say False for every edit a user can make
between steps (then the class re-checks everything), never crash on what it is given,
and read values the way Python's own lookups do; count_step writes nothing when its
arguments disagree."""

import numpy as np
import pytest

from fastoptim._backend import kernels
from fastoptim.optim import NAdam

REQUIRED = ("lr", "betas")
OPTIONAL = ("foreach", "fused")
KEYS = ("step", "mu_product", "exp_avg")


def armed(group_type=dict, n_params=2):
    """A group, a state dict and a LiveCheck over them, as _Plan.arm builds it."""
    params = [np.zeros(3) for _ in range(n_params)]
    group = group_type(params=params, lr=0.1, betas=(0.9, 0.999), foreach=None)
    state = {i: {"step": 3, "mu_product": 0.5, "exp_avg": np.zeros(3)}
             for i in range(n_params)}
    live = [*params, group["lr"], group["betas"], None, None,
            *(state[i] for i in range(n_params)),
            *(state[i][k] for i in range(n_params) for k in KEYS)]
    check = kernels.LiveCheck(group, state, None, n_params, REQUIRED, OPTIONAL,
                              tuple(range(n_params)), KEYS, live)
    return check, [group], state, live


def test_unchanged_is_live():
    check, groups, state, _ = armed()
    assert check(groups, state, None) is True


def _replace_param(groups, state):
    groups[0]["params"][1] = np.zeros(3)


def _params_tuple(groups, state):
    groups[0]["params"] = tuple(groups[0]["params"])


def _equal_lr(groups, state):
    groups[0]["lr"] = float("0.1" + "0")  # equal, another object


def _set_optional(groups, state):
    groups[0]["fused"] = False


def _change_optional(groups, state):
    groups[0]["foreach"] = False


def _new_state_dict(groups, state):
    state[1] = dict(state[1])


def _step_edited(groups, state):
    state[0]["step"] = 4


def _buffer_replaced(groups, state):
    state[1]["exp_avg"] = state[1]["exp_avg"].copy()


def _scalar_replaced(groups, state):
    state[0]["mu_product"] = 0.25


def _param_appended(groups, state):
    groups[0]["params"].append(np.zeros(3))


EDITS = [_replace_param, _equal_lr, _set_optional, _change_optional, _new_state_dict,
         _step_edited, _buffer_replaced, _scalar_replaced, _param_appended]


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__ for e in EDITS])
def test_every_edit_is_seen(edit):
    check, groups, state, _ = armed()
    edit(groups, state)
    assert check(groups, state, None) is False


def test_the_same_params_in_a_tuple_are_live():
    # identity of the items, as the Python check compared them
    check, groups, state, _ = armed()
    _params_tuple(groups, state)
    assert check(groups, state, None) is True


@pytest.mark.parametrize("what", ["groups copied", "another state", "n_threads",
                                  "two groups", "groups a tuple", "group replaced"])
def test_containers_are_the_armed_ones(what):
    check, groups, state, _ = armed()
    n_threads = None
    if what == "groups copied":
        groups = list(groups)
        assert check(groups, state, None) is True  # a new list holding the same group
        return
    if what == "another state":
        state = dict(state)
    elif what == "n_threads":
        n_threads = 1
    elif what == "two groups":
        groups.append(dict(groups[0]))
    elif what == "groups a tuple":
        groups = tuple(groups)
    else:
        groups = [dict(groups[0])]
    assert check(groups, state, n_threads) is False


def test_missing_key_raises_as_python_does():
    check, groups, state, _ = armed()
    del groups[0]["lr"]
    with pytest.raises(KeyError):
        check(groups, state, None)
    del state[1]
    groups[0]["lr"] = 0.1
    with pytest.raises(KeyError):
        check(groups, state, None)


class LoudDict(dict):
    """A group whose lookups are its own, as a user's dict subclass may be."""

    def __getitem__(self, key):
        return 0.2 if key == "lr" else dict.__getitem__(self, key)

    def get(self, key, default=None):
        return True if key == "fused" else dict.get(self, key, default)


def test_a_dict_subclass_is_read_through_its_own_lookups():
    check, groups, state, live = armed(LoudDict)
    # built from the raw dict values: the subclass's lookups give other objects
    assert check(groups, state, None) is False
    live[2], live[5] = groups[0]["lr"], groups[0].get("fused")
    assert check(groups, state, None) is True


def test_a_live_list_out_of_shape_is_never_a_match():
    check, groups, state, live = armed()
    live.append(None)
    assert check(groups, state, None) is False


@pytest.mark.parametrize("args,exc", [
    ((dict(), {}, None, 1, (), (), (), (), []), ValueError),      # live too short
    ((dict(), {}, None, -1, (), (), (), (), []), ValueError),
    ((dict(), {}, None, 0, ["lr"], (), (), (), [None]), TypeError),  # keys not a tuple
    ((dict(), {}, None, 0, (), (), (), (), ()), TypeError),         # live not a list
    ((dict(), {}, None, "0", (), (), (), (), []), TypeError),
])
def test_bad_construction_is_refused(args, exc):
    with pytest.raises(exc):
        kernels.LiveCheck(*args)


def test_count_step_sets_step_scalars_and_records():
    _, _, state, live = armed()
    states = [state[0], state[1]]
    expected = [st[k] for st in states for k in KEYS]
    tail = 2 + 4 + 2
    kernels.count_step(states, KEYS, 4, (0.125,), expected, live, tail)
    assert [st["step"] for st in states] == [4, 4]
    assert [st["mu_product"] for st in states] == [0.125, 0.125]
    assert expected[0::3] == [4, 4] and expected[1::3] == [0.125, 0.125]
    assert live[tail:] == expected
    assert all(a is b for a, b in zip(live[tail:], expected))
    kernels.count_step(states, KEYS, 5, (), expected, None, 0)  # without a live list
    assert [st["step"] for st in states] == [5, 5] and expected[0::3] == [5, 5]
    assert [st["mu_product"] for st in states] == [0.125, 0.125]


@pytest.mark.parametrize("change", ["expected short", "live short", "too many scalars",
                                    "negative tail"])
def test_count_step_refuses_disagreement_and_writes_nothing(change):
    _, _, state, live = armed()
    states = [state[0], state[1]]
    expected = [st[k] for st in states for k in KEYS]
    tail, scalars = 8, (0.125,)
    if change == "expected short":
        expected.pop()
    elif change == "live short":
        live.pop()
    elif change == "too many scalars":
        scalars = (0.1, 0.2, 0.3)
    else:
        tail = -1
    before = ([dict(st) for st in states], list(expected), list(live))
    with pytest.raises(ValueError, match="do not agree"):
        kernels.count_step(states, KEYS, 4, scalars, expected, live, tail)
    assert [dict(st) for st in states] == before[0]
    assert expected == before[1] and all(a is b for a, b in zip(live, before[2]))


def test_count_step_refuses_wrong_types():
    with pytest.raises(TypeError):
        kernels.count_step((), KEYS, 1, (), [], None, 0)  # states a tuple
    with pytest.raises(TypeError):
        kernels.count_step([], KEYS, 1, (), [], (), 0)  # live a tuple


def test_the_class_step_goes_through_the_compiled_check(rng):
    """An armed NAdam step: its plan holds a LiveCheck, and an lr edit is seen."""
    p = rng.standard_normal(16)
    opt = NAdam([p], lr=0.01)
    for _ in range(3):
        opt.step([rng.standard_normal(16)])
    plan = opt._plan
    assert isinstance(plan.check, kernels.LiveCheck) and plan.is_armed(opt)
    assert opt.state[0]["step"] == 3 and plan.buckets[0].expected[0] == 3
    opt.param_groups[0]["lr"] = 0.02
    assert not plan.is_armed(opt)


class ShrinkingDict(dict):
    """A group whose lookup of lr empties the lists read after it: Python code running
    inside the compiled check must not make it read past a list's end."""

    def __init__(self, *args, victims=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.victims = victims

    def __getitem__(self, key):
        if key == "lr":
            for victim in self.victims:
                victim.clear()
        return dict.__getitem__(self, key)


def test_a_lookup_that_shrinks_the_live_list_is_not_a_crash():
    check, groups, state, live = armed()
    group = ShrinkingDict(groups[0], victims=[live])
    live[:] = [*group["params"], group["lr"], group["betas"], None, None,
               *(state[i] for i in range(2)),
               *(state[i][k] for i in range(2) for k in KEYS)]
    check = kernels.LiveCheck(group, state, None, 2, REQUIRED, OPTIONAL, (0, 1), KEYS,
                              live)
    group.victims = [live]
    # compared against the list as it was when the check began (a snapshot)
    assert check([group], state, None) is True
    assert live == []


class ShrinkingState(dict):
    """A state dict whose first write empties the plan's records."""

    def __init__(self, *args, victims=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.victims = victims

    def __setitem__(self, key, value):
        for victim in self.victims:
            victim.clear()
        dict.__setitem__(self, key, value)


def test_count_step_whose_write_shrinks_the_lists_is_an_error_not_a_crash():
    expected = [1, 0.5, None] * 2
    live = [None] * 8 + list(expected)
    states = [ShrinkingState(step=1, victims=[expected, live]), {"step": 1}]
    with pytest.raises(IndexError):
        kernels.count_step(states, KEYS, 2, (0.25,), expected, live, 8)
