"""Learning that sticks: who is practising, every answer they give, their progress and what to practise next.

``progress`` stores answers per learner (``ProgressStore`` over ``pathsynth.storage``) and summarises them
(accuracy per tissue, streak, personal confusion matrix); ``scheduler`` runs FSRS spaced repetition per learner
and tissue over that history and brings confusable pairs back together; ``difficulty`` picks easy (prototypical)
or hard (borderline, confusable pairs) quiz tiles; ``examples`` finds real tiles to show beside feedback.
"""

from .difficulty import DIFFICULTIES, check_difficulty
from .examples import example_index, pair_examples
from .progress import (AnswerRecord, Learner, ProgressStore, accuracy_per_tissue, browser_learner, check_record,
                       confusion, hf_learner, local_learner, new_browser_id, progress_figure, record_from,
                       streak_days)
from .scheduler import SLOW_SECONDS, due_tissues, practice_tissues, rating_for, tissue_cards

__all__ = ["AnswerRecord", "DIFFICULTIES", "Learner", "ProgressStore", "SLOW_SECONDS", "accuracy_per_tissue",
           "browser_learner", "check_difficulty", "check_record", "confusion", "due_tissues", "example_index",
           "hf_learner", "local_learner", "new_browser_id", "pair_examples", "practice_tissues", "progress_figure",
           "rating_for", "record_from", "streak_days", "tissue_cards"]
