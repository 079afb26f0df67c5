"""The paired bootstrap that says whether the deepest exit is measurably better than the shallowest."""
import numpy as np

from edge_ser_torch.evaluate import Evaluation, ExitScores, paired_bootstrap


def _predictions(truth: np.ndarray, share_wrong: float, rng: np.random.Generator) -> np.ndarray:
    wrong = rng.uniform(size=truth.size) < share_wrong
    return np.where(wrong, (truth + 1) % 5, truth)


def test_a_clearly_better_exit_gets_an_interval_above_zero():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 600)
    shallow, deep = _predictions(truth, 0.30, rng), _predictions(truth, 0.15, rng)
    gain, low, high = paired_bootstrap(truth, shallow, deep, 5, rounds=500)
    assert 0.1 < gain < 0.2 and 0 < low < gain < high


def test_equal_exits_get_an_interval_around_zero():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 5, 600)
    shallow = _predictions(truth, 0.2, rng)
    deep = shallow.copy()
    right, wrong = np.flatnonzero(shallow == truth), np.flatnonzero(shallow != truth)
    deep[right[:10]] = (truth[right[:10]] + 1) % 5  # the exits disagree on 20 clips, 10 each way
    deep[wrong[:10]] = truth[wrong[:10]]
    gain, low, high = paired_bootstrap(truth, shallow, deep, 5, rounds=500)
    assert low < 0 < high and high - low < 0.05  # pairing keeps the interval narrow


def test_evaluation_reports_deepest_minus_shallowest():
    truth = np.array([0, 1, 0, 1])
    probabilities = {3: np.array([[1.0, 0], [1, 0], [1, 0], [1, 0]]), 12: np.array([[1.0, 0], [0, 1], [1, 0], [0, 1]])}
    scores = ExitScores(uar=0.0, accuracy=0.0, confusion=[])
    evaluation = Evaluation(["a", "b"], {3: scores, 12: scores}, scores, probabilities, truth)
    assert evaluation.summary()["deepest_minus_shallowest"]["uar"] == 0.5
