"""The saliency scheme's named configurations and the vocabularies of its settings (a leaf: no scheme code)."""

from __future__ import annotations

import math
from typing import Any

from ...access import BLACK_BOX, WHITE_BOX

#: The paper's configuration taken literally: Grad-CAM of the probability, un-normalised S in L_sam, cross-entropy to
#: the label as L_prd, t_bb from masked originals.
PAPER = {"cam_logit": False, "sam_norm": "none", "keep": "label", "wb_threshold": "target", "bb_threshold": "originals", "bb_score": "abs", "beta": 0.0, "gamma": 0.0, "occlusion": 0.0}

#: modelprint's best measured configuration, made with the owner's helper models (:data:`OWNER_MODELS`): N samples
#: for white-box verification (L2 perturbation, uniqueness penalty on the references, per-sample thresholds, the N of
#: 5N candidates with the largest white-box conferrability margin kept) and N for black-box verification (the
#: occlusion term with references and surrogates, per-sample thresholds anchored on the surrogates, the N of 3N with
#: the largest black-box margin kept). How each part was chosen: docs/ablation.md.
OWNER = {
    "norm": "l2", "xi": 3.0, "bb_score": "log", "beta": 1.0, "wb_threshold": "per_sample", "bb_threshold": "per_sample", "pool": 5.0,
    "black_box_settings": {"gamma": 1.0, "occlusion": 1.0, "threshold_anchor": "surrogates", "pool": 3.0, "select": "black_box"},
}
#: The owner's helper models that :data:`OWNER` reads: independently trained references, distilled surrogates and
#: independently trained calibration models (``generate(references=..., surrogates=..., calibration=...)``).
OWNER_MODELS = {"references": 8, "surrogates": 4, "calibration": 4}

#: Named configurations: the class defaults (no helper models), the paper's taken literally, and the owner's.
CONFIGURATIONS = {"default": {}, "paper": PAPER, "owner": OWNER}

#: The L2 budget per value of the regression and similarity ``owner`` settings: 12 on 64x64x3 images, 6 on 32x32x3
#: ones (a root-mean-square change of 0.108 per value, twice classification's 3 on 32x32x3).
TASK_XI_RMS = 6.0 / math.sqrt(3 * 32 * 32)

#: What the ``"owner"`` configuration changes for tasks other than classification (settings a run names itself win):
#: black-box changes scored on the output itself (``bb_score="log"`` needs a probability), twice classification's L2
#: budget per value, a tenth of the keep weight, and pools ranked by the smaller of the target's and the surrogates'
#: value. Regression also reads each sample's Grad-CAM the way round that gives the target a map
#: (``cam_direction="dominant"``) and anchors the black-box group's thresholds on the target: distilled regressors
#: barely answer masking, so thresholds midway to them sit where independent models cross. Measured on the paper
#: zoos and the COIL-20 case: docs/tasks.md.
OWNER_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "regression": {
        "bb_score": "abs", "xi_rms": TASK_XI_RMS, "lam": 0.1, "select_anchor": "target_and_surrogates", "cam_direction": "dominant",
        "black_box_settings": {**OWNER["black_box_settings"], "threshold_anchor": "target"},
    },
    "similarity": {"bb_score": "abs", "xi_rms": TASK_XI_RMS, "lam": 0.1, "select_anchor": "target_and_surrogates"},
}

#: The configuration ``generate`` makes for a task when the user names none. Regression and similarity read the
#: owner's helper models: without them no configuration measured separated a target from an independent model on
#: those tasks (docs/tasks.md), so the user is steered to make them rather than given fingerprints that do not work.
TASK_DEFAULTS = {"classification": "default", "regression": "owner", "similarity": "owner"}

#: How the ``mode`` tensor of a set made with ``black_box_settings`` marks the samples each verification reads.
MODE_CODE = {WHITE_BOX: 1, BLACK_BOX: 2}

#: Rules for the thresholds (see ``wb_threshold``/``bb_threshold``); the last two read the owner's calibration models.
CALIBRATED = ("calibration", "per_sample")
WB_THRESHOLDS = ("target", *CALIBRATED)
BB_THRESHOLDS = ("originals", "midpoint", *CALIBRATED)

#: Black-box values of a sample (see ``bb_score``) and the queries each costs per sample.
BB_SCORES = {"abs": 2, "log": 2, "diff": 4}

#: What ranks the pool of candidate fingerprints (see ``select``).
SELECT_BY = ("white_box", "black_box", "both")

#: Which way Grad-CAM reads a sample's output (see ``cam_direction``).
CAM_DIRECTIONS = ("value", "dominant")

#: The pirated side of the pool's conferrability margin (see ``select_anchor``).
SELECT_ANCHORS = ("surrogates", "target_and_surrogates", "worst_surrogate")

#: How the surrogates' terms of the objective combine per sample (see ``surrogate_weight``).
SURROGATE_WEIGHTS = ("mean", "worst")
