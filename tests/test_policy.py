"""Stop rules and threshold calibration."""
import dataclasses

import numpy as np
import pytest

from edge_ser.policy import StopRule, calibrate, certainty, simulate, uar


def test_certainty_measures():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert certainty(p, "max_prob") == pytest.approx([1.0, 1 / 3, 0.5])
    assert certainty(p, "entropy") == pytest.approx([1.0, 0.0, 1 - np.log(2) / np.log(3)], abs=1e-6)


def test_patience_needs_k_agreeing_exits():
    rule = StopRule("patience", patience=2)
    a, b = np.array([0.6, 0.4]), np.array([0.3, 0.7])
    assert not rule.should_stop([a])
    assert not rule.should_stop([a, b])
    assert rule.should_stop([a, b, b])


def test_simulate_stops_at_first_sure_exit():
    probs = [np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([[0.2, 0.8], [0.95, 0.05]]), np.array([[0.5, 0.5], [0.5, 0.5]])]
    assert simulate(probs, StopRule("max_prob", 0.9)).tolist() == [0, 1]
    assert simulate(probs, StopRule("max_prob", 0.99)).tolist() == [2, 2]
    assert simulate(probs, StopRule("patience", patience=2)).tolist() == [2, 1]


def test_calibration_keeps_uar_within_the_allowed_loss_and_saves_compute():
    rng = np.random.default_rng(0)
    n, classes = 400, 4
    truth = rng.integers(0, classes, n)
    easy = rng.uniform(size=n) < 0.6  # easy clips: every exit is right and sure; hard ones only the last exit

    def exit_probs(correct, sure, wrong_shift=1):
        p = np.repeat(((1 - sure) / (classes - 1))[:, None], classes, axis=1)
        pred = np.where(correct, truth, (truth + wrong_shift) % classes)
        p[np.arange(n), pred] = sure
        return p

    probs = [
        exit_probs(easy, np.where(easy, 0.97, 0.5)),
        exit_probs(easy, np.where(easy, 0.98, 0.55), wrong_shift=2),  # shallow exits disagree when wrong
        exit_probs(np.ones(n, bool), np.full(n, 0.9)),
    ]
    layers, costs = [3, 8, 12], [3.0, 8.0, 12.0]
    result = calibrate(probs, truth, layers, costs, max_loss=0.01)
    rule = result.measures["max_prob"]
    assert rule.dev_uar >= rule.full_uar - 0.01
    assert rule.compute_share < 0.7  # the easy 60% stop at exit 3
    stops = simulate(probs, StopRule("max_prob", rule.threshold))
    assert np.all(stops[easy] == 0) and np.all(stops[~easy] == 2)
    # patience 1 would stop hard clips at exit 3, wrongly; 2 agreeing exits happen only on easy clips
    assert result.measures["patience"].patience == 2
    assert StopRule.from_policy(result).threshold == rule.threshold


def test_uar_is_mean_recall():
    truth = np.array([0, 0, 0, 1])
    assert uar(truth, np.array([0, 0, 0, 0])) == pytest.approx(0.5)


@pytest.mark.parametrize("measure", ["max_prob", "entropy"])
def test_a_certainty_exactly_at_the_threshold_stops_and_the_simulator_agrees(measure):
    # Calibrated thresholds sit exactly on an observed dev certainty: that clip must stop, in both places.
    probs = np.array([0.75, 0.25])
    at = float(certainty(probs, measure))
    for threshold, stops in ((at, True), (np.nextafter(at, 2.0), False)):
        rule = StopRule(measure, threshold=float(threshold))
        assert rule.should_stop([probs]) is stops
        stop_index = simulate([probs[None, :], np.array([[0.5, 0.5]])], rule)[0]
        assert stop_index == (0 if stops else 1)


def test_patience_of_one_stops_at_the_first_exit_and_zero_never():
    a = np.array([0.6, 0.4])
    assert StopRule("patience", patience=1).should_stop([a])
    assert not StopRule("patience", patience=0).should_stop([a, a, a])
    assert simulate([a[None], a[None], a[None]], StopRule("patience", patience=1)).tolist() == [0]


def test_calibration_considers_the_certainties_of_every_exit_but_the_last():
    # Exit 1 is wrong and unsure, exit 2 right and fairly sure, exit 3 right: the cheapest safe rule stops every
    # clip at exit 2, which it can find only by trying exit 2's certainties as thresholds.
    truth = np.array([0, 1, 0, 1])
    onehot = np.eye(2)[truth]
    wrong, middle, last = 0.45 * onehot + 0.55 * (1 - onehot), 0.7 * onehot + 0.3 * (1 - onehot), onehot
    result = calibrate([wrong, middle, last], truth, [1, 2, 3], [1.0, 2.0, 3.0], max_loss=0.0)
    for measure in ("max_prob", "entropy"):
        rule = result.measures[measure]
        assert rule.mean_exit_layer == 2 and rule.compute_share == pytest.approx(2 / 3)
        assert simulate([wrong, middle, last], StopRule(measure, rule.threshold)).tolist() == [1, 1, 1, 1]


def _onehot_exits(truth: np.ndarray, sure: list[np.ndarray], right: list[np.ndarray]) -> list[np.ndarray]:
    """Two-class probabilities per exit: the predicted class gets `sure`, right or wrong per clip."""
    exits = []
    for certainty_, correct in zip(sure, right, strict=True):
        predicted = np.where(correct, truth, 1 - truth)
        p = np.empty((truth.size, 2))
        p[np.arange(truth.size), predicted] = certainty_
        p[np.arange(truth.size), 1 - predicted] = 1 - certainty_
        exits.append(p)
    return exits


def test_calibration_keeps_full_depth_when_no_early_stop_is_safe_and_records_its_inputs():
    truth = np.array([0, 1, 0, 1, 1])
    wrong = np.zeros(5, bool)
    probs = _onehot_exits(truth, [np.full(5, 0.9), np.full(5, 0.8), np.full(5, 0.7)], [wrong, wrong, ~wrong])
    result = calibrate(probs, truth, [2, 5, 9], [1.0, 2.0, 4.0], max_loss=0.0)
    assert {k: getattr(result, k) for k in ("max_accuracy_loss", "calibrated_on_clips", "default")} == \
        {"max_accuracy_loss": 0.0, "calibrated_on_clips": 5, "default": "max_prob"}
    full = {"dev_uar": 1.0, "full_uar": 1.0, "mean_exit_layer": 9.0, "compute_share": 1.0}
    for measure in ("max_prob", "entropy"):
        assert dataclasses.asdict(result.measures[measure]) == {"threshold": 1.0, "patience": None} | full
    assert dataclasses.asdict(result.measures["patience"]) == {"threshold": None, "patience": 0} | full


def test_among_thresholds_that_stop_the_same_clips_the_highest_is_kept():
    # Exit 1 is right on every clip; exit 2's certainty never matters. Any threshold at or below 0.6 stops every
    # clip at exit 1; the scan must keep 0.6 (the safest on unseen audio), not a lower observed certainty.
    truth = np.array([0, 1, 0, 1])
    right = np.ones(4, bool)
    probs = _onehot_exits(truth, [np.array([0.6, 0.6, 0.8, 0.9]), np.full(4, 0.55), np.full(4, 0.99)],
                          [right, right, right])
    rule = calibrate(probs, truth, [1, 2, 3], [1.0, 2.0, 3.0], max_loss=0.0).measures["max_prob"]
    assert rule.threshold == pytest.approx(0.6) and rule.compute_share == pytest.approx(1 / 3)


def test_patience_calibration_keeps_the_most_agreement_at_the_same_cost_and_reaches_patience_one():
    truth = np.array([0, 1, 0, 1])
    right = np.ones(4, bool)
    # Every exit right: patience 1 stops at exit 1 (cheapest); patience 2 and 3 cost more. With max_loss 0 and UAR
    # exactly equal to full depth, patience 1 must be accepted (>=, not >).
    probs = _onehot_exits(truth, [np.full(4, 0.7)] * 4, [right] * 4)
    rule = calibrate(probs, truth, [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], max_loss=0.0).measures["patience"]
    assert dataclasses.asdict(rule) == {"threshold": None, "patience": 1, "dev_uar": 1.0, "full_uar": 1.0, "mean_exit_layer": 1.0,
                    "compute_share": pytest.approx(0.25)}
    # Exit 1 wrong, exits 2-4 right: patience 2 stops at exit 3 and patience 1 would stop wrongly at exit 1.
    probs = _onehot_exits(truth, [np.full(4, 0.7)] * 4, [~right, right, right, right])
    rule = calibrate(probs, truth, [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], max_loss=0.0).measures["patience"]
    assert rule.patience == 2 and rule.mean_exit_layer == 3.0 and rule.compute_share == pytest.approx(0.75)


def test_calibration_on_many_clips_thins_candidates_to_quantiles_and_still_finds_the_cheap_rule():
    rng = np.random.default_rng(3)
    n = 1500  # > 400 distinct certainties: candidates become 400 quantiles
    truth = rng.integers(0, 2, n)
    sure = rng.uniform(0.5, 1.0, n)
    right_first = sure > 0.8  # exit 1 is right exactly when it is sure
    probs = _onehot_exits(truth, [sure, np.full(n, 0.9)], [right_first, np.ones(n, bool)])
    rule = calibrate(probs, truth, [1, 2], [1.0, 2.0], max_loss=0.0).measures["max_prob"]
    stops = simulate(probs, StopRule("max_prob", rule.threshold))
    assert rule.dev_uar == 1.0 and np.all(stops[sure < 0.8] == 1)
    assert 0.8 < rule.threshold < 0.802 and rule.compute_share < 0.85  # ~40% of clips stop at exit 1


def test_one_exit_models_and_unknown_measures():
    only = [np.array([[0.9, 0.1], [0.2, 0.8]])]
    assert simulate(only, StopRule("max_prob", 0.5)).tolist() == [0, 0]
    assert simulate(only, StopRule("max_prob", 0.5)).dtype.kind == "i"
    with pytest.raises(ValueError, match="unknown certainty measure 'loudness'; choose max_prob or entropy"):
        certainty(only[0], "loudness")


def test_patience_that_never_stops_early_is_not_calibrated_in():
    # Neighbouring exits always disagree: patience 2 never stops before the last exit, so it saves nothing and
    # the calibrated patience stays 0 (never), not 2.
    truth = np.array([0, 1, 0, 1])
    right = np.ones(4, bool)
    probs = _onehot_exits(truth, [np.full(4, 0.7)] * 3, [~right, right, ~right])
    probs[-1] = np.eye(2)[truth]  # the last exit is right
    rule = calibrate(probs, truth, [1, 2, 3], [1.0, 2.0, 3.0], max_loss=0.0).measures["patience"]
    assert rule.patience == 0 and rule.compute_share == 1.0
