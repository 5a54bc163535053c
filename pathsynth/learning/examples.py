"""Real example tiles to show beside feedback: after a wrong answer, a real tile of the right tissue and one of the
tissue chosen, so the learner compares the two at the same scale (the app renders them like the question).

Examples are prototypical: the dataset label and the classifier agree and the classifier is sure. Which of the
``top`` most confident is shown varies with ``rank`` (e.g. the question number), so a learner does not always see
the same two tiles; the question's own tile is never its example.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

EXAMPLE_CHOICES = 5  # examples per tissue to vary between


def example_index(labels: np.ndarray, probabilities: np.ndarray, tissue: int, exclude: Sequence[int] = (),
                  rank: int = 0, top: int = EXAMPLE_CHOICES) -> int | None:
    """The index of a real tile of ``tissue`` in the sample (``labels``: the dataset's, ``probabilities``: the
    classifier's), or None when it has none. Tiles whose label and prediction agree come first, most confident
    first; ``rank`` picks among the ``top`` of them; ``exclude`` (e.g. the question's tile) is never picked."""
    labels = np.asarray(labels).reshape(-1)
    probabilities = np.asarray(probabilities, np.float64)
    candidates = np.flatnonzero(labels == tissue)
    candidates = candidates[~np.isin(candidates, list(exclude))]
    candidates = candidates[np.isfinite(probabilities[candidates]).all(1)]  # not classified yet (NaN): not shown
    if not len(candidates):
        return None
    agrees = probabilities[candidates].argmax(1) == tissue
    order = np.lexsort((-probabilities[candidates, tissue], ~agrees))  # agreeing first, then most confident
    best = candidates[order][:max(1, top)]
    return int(best[int(rank) % len(best)])


def pair_examples(answer: int, chosen: int, labels: np.ndarray, probabilities: np.ndarray,
                  exclude: Sequence[int] = (), rank: int = 0) -> tuple[int | None, int | None]:
    """(an example of the right tissue, an example of the one chosen instead): indices into the real sample."""
    return (example_index(labels, probabilities, answer, exclude, rank),
            example_index(labels, probabilities, chosen, exclude, rank))
