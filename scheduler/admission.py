"""Submit-time admission: quotas and generation limits of a tier."""

from __future__ import annotations

import math

from scheduler.tiers import Tier


def check_submit(
    tier: Tier, used_today: int, queued: int, steps: int, guidance: float, variants: int
) -> str | None:
    """``None`` if a submission of ``variants`` jobs is allowed, else why not.

    ``used_today`` counts jobs the user submitted today (every variant is one
    job); ``queued`` counts the user's jobs waiting now.
    """
    return check_limits(tier, steps, guidance, variants) or check_quota(
        tier, used_today, queued, variants
    )


def check_limits(tier: Tier, steps: int, guidance: float, variants: int) -> str | None:
    """Why the tier never allows a request like this one, or ``None``."""
    label = f"the {tier.name} tier"
    if variants < 1:
        return "Ask for at least one variant."
    if variants > tier.max_variants:
        return (
            f"{label} allows at most {tier.max_variants} variants per request (asked {variants})."
        )
    if steps < 1:
        return "Steps must be at least 1."
    if steps > tier.max_steps:
        return f"{label} allows at most {tier.max_steps} steps (asked {steps})."
    if not math.isfinite(guidance) or guidance < 0:
        return "Guidance must be a non-negative number."
    if guidance > tier.max_guidance:
        return f"{label} allows guidance up to {tier.max_guidance:g} (asked {guidance:g})."
    return None


def check_quota(tier: Tier, used_today: int, queued: int, variants: int) -> str | None:
    """Why the tier does not allow ``variants`` more jobs now (a later retry may pass)."""
    label = f"the {tier.name} tier"
    if used_today + variants > tier.daily_quota:
        left = max(tier.daily_quota - used_today, 0)
        return (
            f"Daily quota reached: {label} allows {tier.daily_quota} jobs a day, "
            f"{left} left today, this request needs {variants}."
        )
    if queued + variants > tier.max_queued:
        return (
            f"Too many jobs waiting: {label} allows {tier.max_queued} queued at once, "
            f"you have {queued}; wait for some to finish."
        )
    return None
