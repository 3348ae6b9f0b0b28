"""Adverse events of the in-silico trial: ganciclovir cytopenias and IL-2's local and systemic reactions.

Why this shape (vectorized over any cohort shape, an ``rng`` passed in):

- A ganciclovir cytopenia (neutropenia, anaemia, thrombocytopenia) strikes a susceptible patient
  at an onset day drawn from the label's "usually in the first 7–14 days" (domain.md §1.3). It is
  seen only if treatment is still running then — so shorter treatment (faster CMV clearance)
  means fewer cytopenias, as in practice. Susceptibility rises with reduced renal function through
  an odds ratio (Salzberger 1997, domain.md §1.5), because ganciclovir is renally cleared. The
  count stays at its nadir until some days after the last dose (counts recover 3–7 days after
  stopping, domain.md §1.3).
- An IL-2 reaction (injection-site reaction, fever, flu-like symptoms) occurs in a patient with the
  per-patient probability the 2020 randomized trial observed (domain.md §5.2), on a day during
  IL-2 treatment, and lasts a few days.

The calibration tests compare the realized incidences with the scenario's targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cmvtrial.simulation.scenario import HematologicToxicity, Il2AdverseEvent


@dataclass(frozen=True)
class Episodes:
    """Per patient: whether the event happened, its first and last day, grade or nadir."""

    occurred: NDArray[np.bool_]
    onset_day: NDArray[np.int32]
    end_day: NDArray[np.int32]
    severity: NDArray[np.float64]


def with_odds_ratio(probability: float, odds_ratio: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """The probability whose odds are ``odds_ratio`` times those of ``probability``."""
    odds = probability / (1.0 - probability) * np.asarray(odds_ratio) if probability < 1 else np.inf
    return np.where(np.isinf(odds), 1.0, odds / (1.0 + odds))


def gcv_cytopenia(
    rng: np.random.Generator,
    toxicity: HematologicToxicity,
    crcl_ml_min: NDArray[np.float64],
    treatment_end_day: NDArray[np.integer],
) -> Episodes:
    """Draw one cytopenia for every patient on ganciclovir from day 0 to ``treatment_end_day``.
    ``severity`` is the nadir of the lab (``toxicity.lab``, in the hematology form's unit)."""
    shape = np.shape(treatment_end_day)
    impaired = np.asarray(crcl_ml_min) < toxicity.renal_crcl_below_ml_min.value
    probability = with_odds_ratio(toxicity.probability.value, np.where(impaired, toxicity.renal_odds_ratio.value, 1.0))
    susceptible = rng.random(shape) < probability
    onset = np.maximum(np.rint(toxicity.onset_day.sample(rng, shape)), 1).astype(np.int32)
    nadir = toxicity.nadir.sample(rng, shape)
    recovery = np.rint(toxicity.recovery_days.sample(rng, shape)).astype(np.int32)
    end_of_treatment = np.asarray(treatment_end_day, dtype=np.int32)
    occurred = susceptible & (onset <= end_of_treatment)
    return Episodes(
        occurred=occurred,
        onset_day=onset,
        end_day=np.maximum(end_of_treatment + recovery, onset),
        severity=nadir,
    )


def il2_reaction(
    rng: np.random.Generator,
    event: Il2AdverseEvent,
    il2: NDArray[np.bool_],
    treatment_end_day: NDArray[np.integer],
) -> Episodes:
    """Draw one IL-2-type reaction per patient (control patients at the control probability).
    ``severity`` is the CTCAE grade."""
    shape = np.shape(il2)
    probability = np.where(il2, event.probability_il2.value, event.probability_control.value)
    occurred = rng.random(shape) < probability
    end_of_treatment = np.maximum(np.asarray(treatment_end_day, dtype=np.int32), 0)
    onset = np.floor(rng.random(shape) * (end_of_treatment + 1)).astype(np.int32)
    duration = np.maximum(np.rint(event.duration_days.sample(rng, shape)), 1).astype(np.int32)
    grades = np.asarray([float(label) for label in event.grade.labels])[event.grade.sample_index(rng, shape)]
    return Episodes(occurred=occurred, onset_day=onset, end_day=onset + duration - 1, severity=grades)
