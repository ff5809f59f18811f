"""The label sets: the 17 RARE-VISION labels (the model's output order) and Galar's 29."""

from __future__ import annotations

from collections.abc import Iterable

#: The 17 RARE-VISION labels, in the model's output order. Spelling and spaces are the evaluator's.
ANATOMY: tuple[str, ...] = (
    "mouth",
    "esophagus",
    "stomach",
    "small intestine",
    "colon",
    "z-line",
    "pylorus",
    "ileocecal valve",
)
PATHOLOGY: tuple[str, ...] = (
    "active bleeding",
    "angiectasia",
    "blood",
    "erosion",
    "erythema",
    "hematin",
    "lymphangioectasis",
    "polyp",
    "ulcer",
)
LABELS: tuple[str, ...] = ANATOMY + PATHOLOGY
NUM_LABELS = len(LABELS)
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

#: Galar's labels that RARE-VISION does not use (Galar has 29 in all).
GALAR_EXTRA: tuple[str, ...] = (
    "good view",
    "reduced view",
    "no view",
    "dirt",
    "bubbles",
    "ampulla of vater",
    "ibd",
    "foreign body",
    "esophagitis",
    "varices",
    "celiac",
    "cancer",
)
GALAR_LABELS: tuple[str, ...] = LABELS + GALAR_EXTRA

#: Galar label -> RARE-VISION label (None: not used for RARE-VISION training).
GALAR_TO_RARE_VISION: dict[str, str | None] = {
    **{name: name for name in LABELS},
    **{name: None for name in GALAR_EXTRA},
}


def normalise_label(name: str) -> str:
    """Canonical spelling of a label column: stripped, lower case, single spaces, ``_`` as space."""
    return " ".join(name.replace("_", " ").strip().lower().split())


def map_galar_columns(columns: Iterable[str]) -> dict[str, int]:
    """Map a Galar CSV's column names to RARE-VISION label indices.

    Returns ``{column name as written: index in LABELS}`` for the columns that are one of the 17
    labels; Galar's other 12 labels are ignored. Non-label columns (``frame``, ``section``...) are
    the caller's business.
    """
    mapping: dict[str, int] = {}
    for col in columns:
        target = GALAR_TO_RARE_VISION.get(normalise_label(col))
        if target is not None:
            mapping[col] = LABEL_INDEX[target]
    return mapping


def is_known_label(name: str) -> bool:
    """True for one of Galar's 29 labels (after normalisation)."""
    return normalise_label(name) in GALAR_TO_RARE_VISION
