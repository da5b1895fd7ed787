"""(v3) Image jobs on the wire: the job spec's image fields, the image's frames, bounds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest

from protocol import (
    IMAGE_MODEL,
    IMAGE_STREAM,
    Assign,
    Cancel,
    ImageInbox,
    ImageRef,
    JobSpec,
    ProtocolError,
    decode_from_coordinator,
    encode,
    image_frames,
    pack_chunk,
)
from protocol.limits import IMAGE_CHUNK_BYTES, MAX_IMAGE_BYTES
from tests.support.protocol import ConnectionPair, hello, spec, welcome

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2100  # 525 KB: three frames


def ref(data: bytes = IMAGE) -> ImageRef:
    return ImageRef(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def image_spec(job: str = "job-1", data: bytes = IMAGE, **changes: Any) -> JobSpec:
    return spec(job, kind="image", image=ref(data), model=IMAGE_MODEL, prompt="", **changes)


def paired(version: int = 3) -> ConnectionPair:
    pair = ConnectionPair()
    pair.agent_sends(hello(versions=tuple(range(1, version + 1))))
    pair.coordinator_sends(welcome(version=version))
    return pair


# -- the job spec ------------------------------------------------------------------------


def test_images_text_spec_encodes_as_before() -> None:
    """A text job leaves kind and image out: a version-1 or 2 agent reads it unchanged."""
    doc = json.loads(encode(Assign(jobs=(spec(),))))
    assert set(doc["jobs"][0]) == {"job", "attempt", "prompt", "seed", "guidance", "steps"}


def test_images_image_spec_round_trips() -> None:
    message = Assign(jobs=(image_spec("a"), image_spec("b", seed=43)))
    assert decode_from_coordinator(encode(message)) == message
    assert message.image == ref()


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"kind": "image"}, "an image job needs an image"),
        ({"image": {"size": 3, "sha256": "0" * 64}}, "a text job carries no image"),
        ({"prompt": "   "}, "a text job needs a prompt"),
        ({"kind": "image", "image": {"size": 0, "sha256": "0" * 64}}, ">= 1"),
        ({"kind": "image", "image": {"size": MAX_IMAGE_BYTES + 1, "sha256": "0" * 64}}, "<="),
        ({"kind": "image", "image": {"size": 3, "sha256": "ABC"}}, "regex"),
        ({"kind": "video"}, "Invalid enum value"),
    ],
)
def test_images_bad_spec_is_refused(changes: dict[str, object], why: str) -> None:
    doc = json.loads(encode(Assign(jobs=(spec(),))))
    doc["jobs"][0].update(changes)
    with pytest.raises(ProtocolError) as info:
        decode_from_coordinator(json.dumps(doc))
    assert info.value.code == "bad_message" and why in str(info.value)


def test_images_one_assign_carries_one_image_at_most() -> None:
    with pytest.raises(ValueError, match="share one image"):
        Assign(jobs=(image_spec("a"), image_spec("b", data=b"other")))
    doc = json.loads(encode(Assign(jobs=(image_spec("a"), image_spec("b")))))
    doc["jobs"][1]["image"] = msgspec.to_builtins(ref(b"other"))
    with pytest.raises(ProtocolError, match="share one image"):
        decode_from_coordinator(json.dumps(doc))


# -- frames through the sessions -----------------------------------------------------------


def test_images_image_reaches_the_agent_verified() -> None:
    pair = paired()
    assign = pair.coordinator_sends(Assign(jobs=(image_spec(),)))
    assert pair.agent.awaiting_image == assign
    frames = list(image_frames(IMAGE))
    assert len(frames) == 3 and all(len(f) <= IMAGE_CHUNK_BYTES + 16 for f in frames)
    results = [pair.agent.receive_image(frame) for frame in frames]
    assert results[:2] == [None, None]
    assert results[2] == (assign, IMAGE)
    assert pair.agent.awaiting_image is None
    assert pair.agent.held == {("job-1", 1)}


def test_images_wrong_bytes_fail_the_checksum_not_the_connection() -> None:
    pair = paired()
    pair.coordinator_sends(Assign(jobs=(image_spec(),)))
    tampered = IMAGE[:-1] + b"!"
    done = [pair.agent.receive_image(frame) for frame in image_frames(tampered)]
    assert done[-1] is not None and done[-1][1] is None
    pair.coordinator_sends(Cancel(job="job-1", attempt=1))  # the session carries on


def test_images_text_message_before_the_image_is_complete_is_a_protocol_error() -> None:
    pair = paired()
    pair.coordinator_sends(Assign(jobs=(image_spec(),)))
    pair.agent.receive_image(next(image_frames(IMAGE)))
    with pytest.raises(ProtocolError) as info:
        pair.agent.receive(Cancel(job="job-1", attempt=1))
    assert (info.value.code, info.value.peer) == ("out_of_order", "coordinator")


@pytest.mark.parametrize(
    "frame",
    [
        pack_chunk(IMAGE_STREAM, 1, b"x"),  # a gap
        pack_chunk(IMAGE_STREAM + 1, 0, b"x"),  # another stream
        pack_chunk(IMAGE_STREAM, 0, IMAGE + b"more"),  # past the size and the frame bound
        b"SFC",  # shorter than a header
    ],
)
def test_images_bad_frame_is_the_coordinators_protocol_error(frame: bytes) -> None:
    pair = paired()
    pair.coordinator_sends(Assign(jobs=(image_spec(),)))
    with pytest.raises(ProtocolError) as info:
        pair.agent.receive_image(frame)
    assert info.value.peer == "coordinator"
    assert pair.agent.awaiting_image is None


def test_images_frame_without_an_image_assign_is_refused() -> None:
    pair = paired()
    pair.coordinator_sends(Assign(jobs=(spec(),)))
    with pytest.raises(ProtocolError) as info:
        pair.agent.receive_image(next(image_frames(IMAGE)))
    assert info.value.code == "out_of_order"


def test_images_overrun_is_caught_in_small_frames_too() -> None:
    small = b"tiny image"
    inbox = ImageInbox(ref(small))
    assert not inbox.feed(pack_chunk(IMAGE_STREAM, 0, small[:4]))
    with pytest.raises(ProtocolError, match="past the announced size"):
        inbox.feed(pack_chunk(IMAGE_STREAM, 4, small[4:] + b"extra"))


@pytest.mark.parametrize("version", [1, 2])
def test_images_no_image_job_on_an_older_connection(version: int) -> None:
    """The coordinator's session refuses to send it, the agent's to receive it."""
    pair = paired(version)
    assign = Assign(jobs=(image_spec(),))
    with pytest.raises(ProtocolError) as info:
        pair.coordinator.send(assign)
    assert info.value.code == "version"
    with pytest.raises(ProtocolError) as info:
        pair.agent.receive(assign)
    assert (info.value.code, info.value.peer) == ("version", "coordinator")
    pair.coordinator_sends(Assign(jobs=(spec(),)))  # text jobs still go


def test_images_frames_are_bounded() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        list(image_frames(b"x" * (MAX_IMAGE_BYTES + 1)))
    assert all(
        len(frame) <= IMAGE_CHUNK_BYTES + 16 for frame in image_frames(IMAGE, chunk_bytes=10**9)
    )
