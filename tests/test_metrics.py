import numpy as np
from sklearn import metrics as skm

from helpers import metrics


def test_confusion_matrix_and_scores_match_sklearn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    matrix = metrics.confusion_matrix(y_true, y_pred, 4)
    assert np.array_equal(matrix, skm.confusion_matrix(y_true, y_pred))
    scores = metrics.precision_recall_f1(matrix)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    assert np.allclose(scores["precision"], p) and np.allclose(scores["recall"], r) and np.allclose(scores["f1"], f)
    assert np.array_equal(scores["support"], s)


def test_a_class_never_predicted_has_zero_precision_not_nan():
    scores = metrics.precision_recall_f1(metrics.confusion_matrix([0, 1, 1], [0, 0, 0], 2))
    assert scores["precision"].tolist() == [1 / 3, 0.0] and scores["recall"].tolist() == [1.0, 0.0]


def test_most_confident_mistakes_are_wrong_and_sorted_by_confidence():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    y_true = np.array([1, 1, 1, 0])  # rows 0, 2 and 3 are wrong, with confidence 0.9, 0.6, 0.95
    assert metrics.most_confident_mistakes(probabilities, y_true, k=2).tolist() == [3, 0]
