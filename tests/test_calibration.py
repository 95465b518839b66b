"""The served score's calibration, as read from a manifest's `calibration`."""

import numpy as np
import pytest

from handler.calibration import Calibration, Logistic, sigmoid

LOGITS = np.array([-4.0, 0.0, 3.0])
COSINES = np.array([0.1, 0.5, 0.9])


def test_without_calibration_the_score_is_the_plain_sigmoid():
    calibration = Calibration.from_record(None)
    assert calibration.search(LOGITS, COSINES) == pytest.approx(sigmoid(LOGITS))
    assert calibration.search.c == 0.0 and not calibration.calibrated


def test_an_older_logit_only_calibration_serves_search_and_rerank_alike():
    calibration = Calibration.from_record({"platt": {"a": 0.5, "b": -1.0}, "floor": 0.2})
    expected = sigmoid(0.5 * LOGITS - 1.0)
    assert calibration.search(LOGITS, COSINES) == pytest.approx(expected)
    assert calibration.rerank(LOGITS) == pytest.approx(expected)


def test_search_scores_use_the_cosine_and_rerank_scores_do_not():
    calibration = Calibration.from_record(
        {"platt": {"a": 0.25, "b": -1.0}, "platt_cosine": {"a": 0.2, "b": -4.0, "c": 5.0}}
    )
    assert calibration.search.c == 5.0
    assert calibration.search(LOGITS, COSINES) == pytest.approx(sigmoid(0.2 * LOGITS + 5.0 * COSINES - 4.0))
    assert calibration.rerank(LOGITS) == pytest.approx(sigmoid(0.25 * LOGITS - 1.0))
    # The same confident logit, a foreign topic (low cosine): a much lower probability of relevance.
    assert Logistic(0.2, -4.0, 5.0)(np.array([5.0]), np.array([0.1]))[0] < 0.1 < sigmoid(np.array([5.0 * 0.2]))[0]


@pytest.mark.parametrize(
    "bad",
    [{"platt": {"a": float("nan"), "b": 0.0}}, {"platt_cosine": {"a": 1.0, "b": 0.0, "c": float("inf")}}, {"floor": 7}],
)
def test_a_calibration_that_cannot_be_served_is_refused(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Calibration.from_record(bad)
