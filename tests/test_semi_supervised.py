"""`keras_advreg.data.semi_supervised_batches`: labeled examples spread among unlabeled (-1)
ones."""

from __future__ import annotations

import numpy as np
import pytest

from keras_advreg.data import semi_supervised_batches


def test_batches_mix_labeled_and_unlabeled_and_cover_the_unlabeled_set():
    x_lab = np.arange(10)[:, None] * np.ones((1, 2))
    y_lab = np.arange(10)
    x_unl = 100 + np.arange(45)[:, None] * np.ones((1, 2))
    batches = semi_supervised_batches(x_lab, y_lab, x_unl, batch_size=8, labeled_batch_size=3)
    assert len(batches) == 9  # ceil(45 / 5)
    seen_unlabeled, seen_labeled = [], []
    for i in range(len(batches)):
        x, y = batches[i]
        slots = [0, 2, 5]  # floor(i * 8 / 3): spread through the batch
        rest = [1, 3, 4, 6, 7]
        assert np.all(y[rest] == -1) and np.all(y[slots] >= 0)
        np.testing.assert_array_equal(x[slots, 0], y[slots])  # labeled pairs stay together
        seen_labeled += list(y[slots])
        seen_unlabeled += list(x[rest, 0])
    assert sorted(seen_unlabeled) == list(100 + np.arange(45))
    counts = np.bincount(seen_labeled, minlength=10)  # 27 draws cycle through all 10
    assert counts.min() >= 2 and counts.max() <= 3
    again = semi_supervised_batches(x_lab, y_lab, x_unl, batch_size=8, labeled_batch_size=3)
    np.testing.assert_array_equal(again[4][0], batches[4][0])  # same seed, same batches
    batches.on_epoch_end()  # a new shuffle each epoch
    assert not np.array_equal(again[4][0], batches[4][0])


def test_one_hot_labels_and_errors():
    y = np.eye(3)[[0, 1, 2, 1]]
    batches = semi_supervised_batches(np.zeros((4, 2)), y, np.ones((6, 2)), batch_size=4)
    _, labels = batches[0]
    assert labels.shape == (4, 3) and np.all(labels[1:] == -1)
    with pytest.raises(ValueError, match="`labeled_batch_size` must be an integer in"):
        semi_supervised_batches(np.zeros((4, 2)), y, np.ones((6, 2)), 4, labeled_batch_size=4)
    with pytest.raises(ValueError, match="same shape per example"):
        semi_supervised_batches(np.zeros((4, 2)), y, np.ones((6, 3)), 4)
