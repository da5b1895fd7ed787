"""Sharing public models: absolute links, Open Graph / Twitter card meta, and the
embeddable viewer page (/embed/<id>, the one route other sites may frame)."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext as _
from coordinator.labels import job_title
from coordinator.request_context import farm_of
from coordinator.services import gallery, jobs
from coordinator.store import models
from coordinator.web.base import render

EMBED_PREFIX = "/embed/"


def public_base(request: Request) -> str:
    """The site's absolute address from the ``public_url`` setting, or "" without it:
    the Host header, which the requester chooses, is never reflected into links others
    see (the page's script completes relative links from the browser's own address)."""
    return farm_of(request).settings.public_url.rstrip("/")


@dataclass(frozen=True)
class Share:
    """Everything the share box and the meta tags of a public model need."""

    url: str
    embed_url: str
    image: str | None
    title: str
    description: str
    absolute: bool  # False: links are paths (no public_url), and no Open Graph meta

    @property
    def embed_code(self) -> str:
        """The iframe snippet a user pastes into their page (plain text: the template
        escapes it once more for the textarea it sits in)."""
        return (
            f'<iframe src="{escape(self.embed_url)}" width="480" height="360" '
            f'title="{escape(self.title)}" allow="xr-spatial-tracking; fullscreen" '
            'loading="lazy" style="border:0"></iframe>'
        )


def share_of(
    request: Request, job: models.Job, result: models.Result | None, creator: str | None
) -> Share | None:
    """Share data for a model in the gallery; None for anything else (private, hidden,
    unfinished), so no page ever leaks such a model into meta tags or embed codes."""
    if not gallery.is_listed(job) or result is None:
        return None
    base = public_base(request)
    return Share(
        url=f"{base}/jobs/{job.id}",
        embed_url=f"{base}{EMBED_PREFIX}{job.id}",
        image=f"{base}/jobs/{job.id}/preview.png" if result.has_preview and base else None,
        title=job_title(job.prompt)[:120],
        description=_describe(job, creator),
        absolute=bool(base),
    )


def _describe(job: models.Job, creator: str | None) -> str:
    if job.kind == "image":
        if creator:
            return _("A 3D model by %(name)s, made from a picture on shapefarm.") % {
                "name": creator
            }
        return _("A 3D model made from a picture on shapefarm.")
    if creator:
        return _("A 3D model by %(name)s, made from a text prompt on shapefarm.") % {
            "name": creator
        }
    return _("A 3D model made from a text prompt on shapefarm.")


async def embed(request: Request) -> Response:
    """A bare <model-viewer> page for iframes on other sites: gallery models only."""
    farm = farm_of(request)
    async with farm.sessions() as db:
        job = await db.get(models.Job, request.path_params["job_id"])
        result = await jobs.result_of(db, job.id) if job is not None else None
    if job is None or result is None or not gallery.is_listed(job):
        raise HTTPException(404, _("No such public model."))
    share = share_of(request, job, result, None)
    response = render(request, "embed.html", None, job=job, result=result, share=share)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


ROUTES = [Route(EMBED_PREFIX + "{job_id}", embed)]
