"""Parameters declared once (issue 27): each estimator's PARAMETERS table is checked by one
function, with one message per kind of constraint."""
import inspect

import numpy as np
import pytest

import entclust
from entclust._params import Bool, Int, OneOf, Real, check_params
from entclust.deep import DeepEntropyClustering, SelectivePseudoLabelClustering, SelfLabelingTrainer


@pytest.mark.parametrize("rule, good, bad, message", [
    (Int(1), [1, np.int64(5)], [0, 1.0, True, "2", None], "x must be an int >= 1, got "),
    (Int(1, "auto"), ["auto", 3], ["Auto", 0], "x must be 'auto' or an int >= 1, got "),
    (Int(0, None), [None, 0], [-1], "x must be None or an int >= 0, got "),
    (Real(0), [0, 0.5, np.float32(2)], [-1e-9, float("nan"), float("inf"), False, "1"], "x must be a finite number >= 0, got "),
    (Real(0, strict=True), [1e-9], [0, 0.0], "x must be a finite number > 0, got "),
    (OneOf("a", "b"), ["a"], ["c", None, 1], "x must be one of ('a', 'b'), got "),
    (Bool(), [True, np.bool_(False)], [1, "yes", None], "x must be True or False, got "),
])
def test_each_constraint_accepts_and_refuses_with_its_message(rule, good, bad, message):
    for value in good:
        check_params({"x": value}, {"x": rule})
    for value in bad:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("'", "'")):
            check_params({"x": value}, {"x": rule})


@pytest.mark.parametrize("owner", [entclust.EntropyClustering, SelectivePseudoLabelClustering, DeepEntropyClustering,
                                   SelfLabelingTrainer])
def test_every_declared_parameter_is_a_parameter_and_its_default_passes(owner):
    signature = inspect.signature(owner.__init__).parameters
    assert set(owner.PARAMETERS) <= set(signature)
    defaults = {name: p.default for name, p in signature.items() if p.default is not inspect.Parameter.empty}
    check_params(defaults, owner.PARAMETERS)


def test_the_estimators_refuse_a_bad_parameter_at_fit_naming_it():
    x = np.random.default_rng(0).normal(size=(20, 2))
    for est, name in [(entclust.EntropyClustering(2, lr=-1), "lr"), (entclust.EntropyClustering(2, init="best"), "init"),
                      (SelectivePseudoLabelClustering(2, n_members=0), "n_members"),
                      (DeepEntropyClustering(2, width=0), "width")]:
        with pytest.raises(ValueError, match=f"^{name} must be"):
            est.fit(x)
