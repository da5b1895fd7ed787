"""Words for the machine values the UI shows (job states, progress stages, agent
statuses), in the request's language. Unknown values are shown as they are."""

from __future__ import annotations

from typing import Any

from coordinator.i18n import gettext, pgettext

# How results.py words an agent's failure report (the reason is the agent's, in English).
FAILED_PREFIX = "generation failed: "


def job_state(state: str) -> str:
    labels = {
        "queued": pgettext("job state", "queued"),
        "assigned": pgettext("job state", "assigned"),
        "running": pgettext("job state", "running"),
        "succeeded": pgettext("job state", "succeeded"),
        "failed": pgettext("job state", "failed"),
        "cancelled": pgettext("job state", "cancelled"),
    }
    return labels.get(state, state)


def stage(name: str | None) -> str:
    """A progress stage an agent reports (protocol.messages.Stage)."""
    if not name:
        return pgettext("stage", "starting")
    labels = {
        "loading": pgettext("stage", "loading the model"),
        "queued": pgettext("stage", "waiting on the agent"),
        "sampling": pgettext("stage", "sampling"),
        "decoding": pgettext("stage", "building the mesh"),
        "exporting": pgettext("stage", "exporting"),
        "uploading": pgettext("stage", "uploading"),
    }
    return labels.get(name, name)


def agent_status(status: str) -> str:
    labels = {
        "approved": pgettext("agent status", "approved"),
        "pending": pgettext("agent status", "pending"),
        "draining": pgettext("agent status", "draining"),
        "paused": pgettext("agent status", "paused"),
        "revoked": pgettext("agent status", "revoked"),
        "owner suspended": pgettext("agent status", "owner suspended"),
    }
    return labels.get(status, status)


def online(is_online: bool) -> str:
    return pgettext("agent", "online") if is_online else pgettext("agent", "offline")


def plan_name(name: str) -> str:
    """A tier's name: the shipped ones have words, a custom tier shows as named."""
    labels = {
        "free": pgettext("plan", "Free"),
        "plus": pgettext("plan", "Plus"),
        "pro": pgettext("plan", "Pro"),
        "admin": pgettext("plan", "Admin"),
    }
    return labels.get(name, name.capitalize())


def job_error(text: str | None) -> str:
    """A job's stored reason for failing or ending, translated where it is one of
    ours (cancellations, marked with N_ where they are written); else as stored."""
    if not text:
        return ""
    translated = gettext(text)
    if translated != text:
        return translated
    if text.startswith(FAILED_PREFIX):
        reason = text[len(FAILED_PREFIX) :]
        return gettext("generation failed: %(reason)s") % {"reason": reason}
    return text


def job_title(prompt: str | None) -> str:
    """What to call a job: its prompt, or for an image job without a caption, words."""
    return prompt or gettext("Model from an image")


FILTERS: dict[str, Any] = {
    "job_error": job_error,
    "job_title": job_title,
    "job_state": job_state,
    "stage": stage,
    "agent_status": agent_status,
    "online": online,
    "plan_name": plan_name,
}
