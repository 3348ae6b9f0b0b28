"""The protocol's analysis settings: per-protocol rules and the numbers the analyses use.

Why in the protocol: the per-protocol population's rules, the days at which the chance of still
being viremic is reported, the restriction time of the restricted mean, the confidence level, the
multiplicity adjustment and how a CMV-DNA result below the assay's limit enters the log10 analyses
are trial decisions written in a statistical analysis plan (ICH E9 §5.2, DESIGN.md §4), not
mechanisms. So they live in the protocol file (section ``analysis``) with a source for each number,
and :mod:`cmvtrial.analysis.derivations` reads them from there.

Per-protocol rules are expressions (the same sandboxed, three-valued language as eligibility)
over the subject-level variables in :data:`SUBJECT_VARIABLES`, which the derivations compute for
every randomized subject. A rule whose inputs are unknown does not admit the subject (a
per-protocol population is meant to be the subjects known to have followed the protocol).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.protocol_fields import Code, ExpressionText, Identifier, Notes, Text, _Model

#: The subject-level variables a per-protocol rule may read, with what each means.
SUBJECT_VARIABLES: dict[str, str] = {
    "eligible": "the eligibility verdict recorded at screening (true, false, or unknown)",
    "arm_randomized": "the arm id the subject was randomized to",
    "arm_received": "the arm id whose drugs the subject received (unknown when no dose was given)",
    "doses_given": "administrations of any study drug recorded as given",
    "dose_compliance_percent": (
        "the lowest, over the randomized arm's drugs, of administrations given as a percentage of those the "
        "regimen plans from randomization to the end of treatment (or the data cut-off)"
    ),
    "days_on_treatment": "days from randomization to the end of treatment (or the data cut-off)",
    "post_baseline_cmv_assessments": "CMV-DNA results dated after randomization",
    "withdrawn": "whether the subject withdrew or was lost to follow-up",
}


class PopulationRule(_Model):
    """One condition of the per-protocol population; a subject must meet every rule."""

    id: Code
    text: Text = Field(description="The rule in words, as the report prints it for an excluded subject.")
    expression: ExpressionText
    notes: Notes = ()

    @model_validator(mode="after")
    def _reads_subject_variables(self) -> PopulationRule:
        unknown = sorted(set(compile_expression(self.expression).names) - set(SUBJECT_VARIABLES))
        if unknown:
            raise ValueError(
                f"expression names {', '.join(repr(name) for name in unknown)}, which is not a subject-level "
                f"variable; known: {', '.join(SUBJECT_VARIABLES)}"
            )
        return self


class AnalysisPlan(_Model):
    """The statistical analysis plan's settings (DESIGN.md §4); see docs/report.md."""

    confidence_level: float = Field(gt=0, lt=1, description="Two-sided level of every confidence interval.")
    km_confidence_interval: Literal["log", "log-log", "plain"] = Field(
        "log", description="Transform of the Kaplan-Meier confidence band (R survival's default: log)."
    )
    survival_at_days: tuple[PositiveInt, ...] = Field(
        (), description="Days after the first positive CMV-DNA at which the chance of still being viremic is shown."
    )
    rmst_tau_days: PositiveInt = Field(description="Restriction time of the restricted mean duration of viremia.")
    multiplicity: Literal["holm", "hochberg", "BH", "bonferroni"] = Field(
        "holm", description="Adjustment of the arm p-values across each family of markers."
    )
    below_lloq_fraction_of_lloq: float = Field(
        gt=0,
        le=1,
        description="A CMV-DNA result below the limit of quantification enters log10 analyses as this fraction of the limit.",
    )
    additional_parameters: tuple[str, ...] = Field(
        (), description="Further items (form_id.item_id) summarised by visit in the longitudinal dataset."
    )
    per_protocol: tuple[PopulationRule, ...] = ()
    notes: Notes = ()

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> AnalysisPlan:
        ids = [rule.id for rule in self.per_protocol]
        duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
        if duplicates:
            raise ValueError(f"per_protocol rule id {duplicates[0]} is used twice")
        for path in self.additional_parameters:
            if path.count(".") != 1:
                raise ValueError(f"additional parameter '{path}' must be form_id.item_id")
        return self


__all__ = ["SUBJECT_VARIABLES", "AnalysisPlan", "Identifier", "PopulationRule"]
