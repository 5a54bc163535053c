"""Learning that sticks: who is practising, every answer they give, their progress and what to practise next.

``progress`` stores answers per learner (``ProgressStore`` over ``pathsynth.storage``) and summarises them
(accuracy per tissue, streak, personal confusion matrix); ``scheduler`` runs FSRS spaced repetition per learner
and tissue over that history and brings confusable pairs back together.
"""

from .progress import (AnswerRecord, Learner, ProgressStore, accuracy_per_tissue, confusion, hf_learner,
                       local_learner, progress_figure, record_from, streak_days)
from .scheduler import SLOW_SECONDS, due_tissues, practice_tissues, rating_for, tissue_cards

__all__ = ["AnswerRecord", "Learner", "ProgressStore", "SLOW_SECONDS", "accuracy_per_tissue", "confusion",
           "due_tissues", "hf_learner", "local_learner", "practice_tissues", "progress_figure", "rating_for",
           "record_from", "streak_days", "tissue_cards"]
