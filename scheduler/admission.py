"""Submit-time admission: quotas and generation limits of a tier."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.tiers import Tier


@dataclass(frozen=True)
class Refusal:
    """Why a submission is refused: a stable ``code``, an English ``template`` with
    ``%(name)s`` fields (also the key of its translations, see babel.cfg) and the
    ``params`` that fill them. ``str()`` gives the English sentence."""

    code: str
    template: str
    params: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.template % dict(self.params)


def submit_refusal(
    tier: Tier, used_today: int, queued: int, steps: int, guidance: float, variants: int
) -> Refusal | None:
    """``None`` if a submission of ``variants`` jobs is allowed, else why not.

    ``used_today`` counts jobs the user submitted today (every variant is one
    job); ``queued`` counts the user's jobs waiting now. ``params["tier"]`` is
    the tier's name.
    """
    return check_limits(tier, steps, guidance, variants) or check_quota(
        tier, used_today, queued, variants
    )


def check_limits(tier: Tier, steps: int, guidance: float, variants: int) -> Refusal | None:
    """Why the tier never allows a request like this one, or ``None``."""
    name = tier.name
    if variants < 1:
        return Refusal("variants_too_few", "Ask for at least one variant.")
    if variants > tier.max_variants:
        return Refusal(
            "variants_over_limit",
            "The %(tier)s tier allows at most %(max)s variants per request (asked %(asked)s).",
            {"tier": name, "max": tier.max_variants, "asked": variants},
        )
    if steps < 1:
        return Refusal("steps_too_few", "Steps must be at least 1.")
    if steps > tier.max_steps:
        return Refusal(
            "steps_over_limit",
            "The %(tier)s tier allows at most %(max)s steps (asked %(asked)s).",
            {"tier": name, "max": tier.max_steps, "asked": steps},
        )
    if not math.isfinite(guidance) or guidance < 0:
        return Refusal("guidance_invalid", "Guidance must be a non-negative number.")
    if guidance > tier.max_guidance:
        limits = {"tier": name, "max": f"{tier.max_guidance:g}", "asked": f"{guidance:g}"}
        return Refusal(
            "guidance_over_limit",
            "The %(tier)s tier allows guidance up to %(max)s (asked %(asked)s).",
            limits,
        )
    return None


def check_quota(tier: Tier, used_today: int, queued: int, variants: int) -> Refusal | None:
    """Why the tier does not allow ``variants`` more jobs now (a later retry may pass)."""
    name = tier.name
    if used_today + variants > tier.daily_quota:
        return Refusal(
            "daily_quota",
            "Daily quota reached: the %(tier)s tier allows %(max)s jobs a day, "
            "%(left)s left today, this request needs %(asked)s.",
            {
                "tier": name,
                "max": tier.daily_quota,
                "left": max(tier.daily_quota - used_today, 0),
                "asked": variants,
            },
        )
    if queued + variants > tier.max_queued:
        return Refusal(
            "too_many_queued",
            "Too many jobs waiting: the %(tier)s tier allows %(max)s queued at once, "
            "you have %(queued)s; wait for some to finish.",
            {"tier": name, "max": tier.max_queued, "queued": queued},
        )
    return None


def check_submit(
    tier: Tier, used_today: int, queued: int, steps: int, guidance: float, variants: int
) -> str | None:
    """:func:`submit_refusal` as an English sentence (``None`` if allowed)."""
    refusal = submit_refusal(tier, used_today, queued, steps, guidance, variants)
    return None if refusal is None else str(refusal)
