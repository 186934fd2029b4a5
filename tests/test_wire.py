"""Bad input on the wire (DESIGN.md "Wire format"): nothing a peer sends can crash the master or
reach the decoder unless it is a well-formed message from a registered rank.

1. `protocol.parse` under fuzzing: arbitrary frames and mutations of valid messages give a
   Message or a ProtocolError, nothing else; a returned array matches its payload exactly.
2. Explicit good/bad messages.
3. The master's ROUTER socket (WorkerLink) counts and drops every kind of bad message; a live
   run with a rogue peer on the master's endpoint still decodes the exact gradient.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq
from helpers import no_children_left
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from zmq.utils.monitor import recv_monitor_message

from bcgc_sim.config import load_config
from bcgc_sim.errors import UserError
from bcgc_sim.model.codes import CodeBook, cyclic_support
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.plans import BlockPlan
from bcgc_sim.schemes import build_plan
from bcgc_sim.wire import framing
from bcgc_sim.wire.protocol import (
    ALLOWED_DTYPES,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    TAG,
    Message,
    MessageType,
    ProtocolError,
    check,
    encode,
    header_spec,
    parse,
)
from master.cluster import LocalCluster
from master.decoder import IterationDecoder, Outcome
from master.runner import max_message_bytes, model_for_data, prepare_problem, run_testbed
from master.transport import WorkerLink

FUZZ = settings(
    max_examples=300,
    deadline=1000,  # ms: "never hang"
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIP = settings(max_examples=150, deadline=1000)

packb = msgpack.packb


# -- helpers --------------------------------------------------------------------------------------


def check_parse(frames) -> Message | None:
    """parse(frames) must give a consistent Message or raise ProtocolError; nothing else."""
    try:
        message = parse(frames)
    except ProtocolError:
        return None
    except Exception as exc:  # noqa: BLE001 - anything else is the failure under test
        raise AssertionError(
            f"parse raised {type(exc).__name__}: {exc} for {[bytes(f)[:40] for f in frames]}"
        ) from exc
    assert isinstance(message, Message)
    assert isinstance(message.kind, MessageType)
    assert isinstance(message.header, dict)
    if message.array is None:
        assert len(frames) == 1
    else:
        assert len(frames) == 2
        assert message.array.dtype.str in ALLOWED_DTYPES
        assert message.array.nbytes == len(bytes(frames[1]))
        assert message.array.ndim <= 2
        assert list(message.array.shape) == message.header["shape"]
    return message


def envelope(tag: bytes, kind: bytes, header: bytes) -> bytes:
    """A message's first frame: tag, type (one length byte, then the name), header."""
    return tag + bytes([len(kind) % 256]) + kind + header


def frames_of(tag: bytes, kind: bytes, header: bytes, *payload: bytes) -> list[bytes]:
    return [envelope(tag, kind, header), *payload]


def with_version(frames: list, version: int) -> list:
    """The same message with another protocol version byte in its tag."""
    return [b"BCGC" + bytes([version]) + bytes(frames[0])[5:], *frames[1:]]


def split(frames: list[bytes]) -> tuple[bytes, bytes, bytes, list[bytes]]:
    """(tag, type, header, payload frames) of a well-formed message."""
    first = bytes(frames[0])
    end = 6 + first[5]
    return first[:5], first[6:end], first[end:], list(frames[1:])


# -- 1. fuzzing parse -----------------------------------------------------------------------------

plain = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    plain,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
keys = st.text(max_size=8).filter(lambda k: k not in ("dtype", "shape"))
headers = st.dictionaries(keys, values, max_size=5)
wire_arrays = arrays(
    dtype=st.sampled_from([np.dtype("<f8"), np.dtype("<f4")]),
    shape=array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6),
)


@st.composite
def valid_frames(draw) -> list[bytes]:
    kind = draw(st.sampled_from(MessageType))
    array = draw(st.none() | wire_arrays)
    return [bytes(f) for f in encode(kind, draw(headers), array)]


odd_dtypes = (
    st.sampled_from(
        [
            "<f8",
            "<f4",
            ">f8",
            ">f4",
            "<i8",
            "|O",
            "|V8",
            "f8",
            "float64",
            "<c16",
            "<f2",
            "|b1",
            "",
            "<",
        ]
    )
    | st.text(max_size=5)
    | plain
)
huge = st.sampled_from(
    [0, 1, -1, 2**31, 2**32, 2**59, 2**60, 2**61, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
)
odd_dims = (
    st.integers(-(2**63), 2**64 - 1)
    | huge
    | st.floats()
    | st.booleans()
    | st.text(max_size=3)
    | st.none()
)
odd_shapes = (
    st.lists(st.integers(0, 6), min_size=1, max_size=2)
    | st.lists(st.integers(0, 6) | huge, max_size=3)
    | st.lists(odd_dims, max_size=4)
    | st.tuples(st.just(0), huge).flatmap(lambda pair: st.permutations(list(pair)))  # 0 bytes
    | plain
)


@st.composite
def with_odd_array_fields(draw, frames):
    """Rewrite dtype/shape (and maybe the payload length) of a message; mostly an allowed
    dtype, a list shape and the payload length it asks for, so the later checks are reached."""
    header = draw(headers)
    mostly = st.sampled_from([True] * 9 + [False])  # (integers() would favour 0)
    if draw(mostly):
        header["dtype"] = draw(
            st.sampled_from(ALLOWED_DTYPES) if draw(st.booleans()) else odd_dtypes
        )
    if draw(mostly):
        header["shape"] = draw(odd_shapes)
    dtype, shape = header.get("dtype"), header.get("shape")
    wanted = 0
    if isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape):
        wanted = math.prod(shape) * (np.dtype(dtype).itemsize if dtype in ALLOWED_DTYPES else 8)
    lengths = st.integers(0, 64)
    if wanted <= 4096:
        lengths = st.sampled_from([wanted, wanted, wanted + 1, max(0, wanted - 1)]) | lengths
    payload = [b"\x00" * draw(lengths)] if draw(mostly) else []
    tag, kind, _, _ = split(frames)
    return frames_of(tag, kind, packb(header), *payload)


@st.composite
def mutated_frames(draw) -> list[bytes]:
    frames = draw(valid_frames())
    how = draw(
        st.sampled_from(
            [
                "flip",
                "resize",
                "drop",
                "insert",
                "fields",
                "not-a-map",
                "garbage",
                "tag",
                "type",
                "type-length",
            ]  # fmt: skip
        )
    )
    if how == "flip":
        index = draw(st.integers(0, len(frames) - 1))
        frame = bytearray(frames[index])
        if frame:
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] ^= draw(st.integers(1, 255))
        frames[index] = bytes(frame)
    elif how == "resize":
        if len(frames) == 2:
            cut = draw(st.integers(-9, 9))
            frames[1] = frames[1][:cut] if cut < 0 else frames[1] + draw(st.binary(max_size=cut))
        else:
            frames.append(draw(st.binary(max_size=24)))
    elif how == "drop":
        del frames[draw(st.integers(0, len(frames) - 1))]
    elif how == "insert":
        frames.insert(draw(st.integers(0, len(frames))), draw(st.binary(max_size=16)))
    elif how == "fields":
        frames = draw(with_odd_array_fields(frames))
    elif how in ("not-a-map", "garbage"):
        tag, kind, _, payload = split(frames)
        header = (
            packb(draw(values.filter(lambda v: not isinstance(v, dict))))
            if how == "not-a-map"
            else draw(st.binary(max_size=64))
        )
        frames = frames_of(tag, kind, header, *payload)
    elif how == "tag":
        _, kind, header, payload = split(frames)
        tag = draw(
            st.binary(max_size=8)
            | st.integers(0, 255).map(lambda v: b"BCGC" + bytes([v]))
            | st.sampled_from([b"BCGC", TAG + b"\x00", TAG.lower(), TAG + TAG])
        )
        frames = frames_of(tag, kind, header, *payload)
    elif how == "type":
        tag, _, header, payload = split(frames)
        kind = draw(
            st.binary(max_size=12)
            | st.sampled_from([t.value.lower() for t in MessageType] + [b"READY ", b"BLOCK\x00"])
        )
        frames = frames_of(tag, kind, header, *payload)
    else:  # a wrong type length byte
        first = bytearray(frames[0])
        first[5] = draw(st.integers(0, 255))
        frames[0] = bytes(first)
    return frames


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_parse_arbitrary_frames(frames):
    check_parse(frames)


@FUZZ
@given(st.lists(st.binary(max_size=40), min_size=0, max_size=3))
def test_parse_arbitrary_frames_behind_a_valid_tag(rest):
    first, *others = rest or [b""]
    check_parse([TAG + first, *others])
    check_parse([envelope(TAG, MessageType.BLOCK.value, first), *others])


@FUZZ
@given(valid_frames().flatmap(with_odd_array_fields))
def test_parse_odd_dtypes_shapes_and_payload_lengths(frames):
    check_parse(frames)


@FUZZ
@given(mutated_frames())
def test_parse_mutated_messages(frames):
    check_parse(frames)
    check_parse([memoryview(f) for f in frames])  # what the transport passes (frame buffers)


@ROUND_TRIP
@given(
    kind=st.sampled_from(MessageType),
    header=st.dictionaries(keys, values, max_size=5),
    array=st.none() | wire_arrays,
    transpose=st.booleans(),
    to_bytes=st.booleans(),
)
def test_round_trip(kind, header, array, transpose, to_bytes):
    if array is not None and transpose:
        array = array.T  # not C-contiguous: encode makes it so
    frames = encode(kind, header, array)
    message = check_parse([bytes(f) for f in frames] if to_bytes else frames)
    assert message is not None and message.kind is kind
    expected = dict(header)
    if array is not None:
        expected.update(dtype=array.dtype.str, shape=list(array.shape))
        assert message.array.shape == array.shape and message.array.dtype == array.dtype
        assert message.array.tobytes() == np.ascontiguousarray(array).tobytes()  # bit-exact
    else:
        assert message.array is None
    assert message.header == expected


@pytest.mark.parametrize("dtype", [">f8", "<i8", "<f2", "<c16", "|b1", "|O"])
def test_encode_refuses_a_dtype_the_receiver_would_reject(dtype):
    with pytest.raises(ValueError, match="not allowed"):
        encode(MessageType.BLOCK, {}, np.zeros(3, dtype=dtype))


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_encode_sends_empty_2d_arrays(shape):
    message = parse([bytes(f) for f in encode(MessageType.BLOCK, {}, np.zeros(shape))])
    assert message.array.shape == shape


@pytest.mark.parametrize("length", [0, 3, framing.COPY_BELOW // 8 + 1])  # copied and zero-copy
def test_zmq_io_round_trip_and_shared_broadcast_frames(length):
    """framing.send/receive carry a message bit-exactly; one shareable message reaches two peers."""
    context = zmq.Context()
    try:
        router = framing.configure(context.socket(zmq.ROUTER))
        port = router.bind_to_random_port("tcp://127.0.0.1")
        peers = []
        for _ in range(2):
            peer = framing.configure(context.socket(zmq.DEALER))
            peer.connect(f"tcp://127.0.0.1:{port}")
            framing.send(peer, encode(MessageType.READY, {"protocol": PROTOCOL_VERSION}))
            peers.append(peer)
        identities = [framing.receive(router)[0].bytes for _ in peers]
        array = np.random.default_rng(0).standard_normal(length)
        frames = framing.shareable(encode(MessageType.ITERATE, {"iteration": 7}, array))
        for identity in identities:
            framing.send(router, [identity, *frames])
        for peer in peers:
            assert peer.poll(5000)
            message = parse([f.buffer for f in framing.receive(peer)])
            assert message.header["iteration"] == 7
            assert message.array.tobytes() == array.tobytes()
    finally:
        context.destroy(linger=0)


# -- 2. explicit good and bad messages ------------------------------------------------------------


def block(header=None, payload=b"\x00" * 24, **fields):
    """A BLOCK with a 3-float64 array by default; `fields` override the header."""
    h = {"run": "r", "iteration": 0, "dtype": "<f8", "shape": [3], **(header or {}), **fields}
    h = {k: v for k, v in h.items() if v is not ...}  # `...`: leave the field out
    frames = frames_of(TAG, MessageType.BLOCK.value, packb(h))
    return frames if payload is None else [*frames, payload]


def header_of_exactly(size: int) -> bytes:
    raw = packb({"x": "a" * (size - 8)})  # fixmap + "x" + str32 header: 8 bytes of framing
    assert len(raw) == size
    return raw


GOOD = [
    *[pytest.param(frames_of(TAG, t.value, packb({})), id=f"empty-{t.name}") for t in MessageType],
    pytest.param(block(), id="block-f8"),
    pytest.param(block(dtype="<f4", payload=b"\x00" * 12), id="block-f4"),
    pytest.param(block(shape=[2, 3], payload=b"\x00" * 48), id="block-2d"),
    pytest.param(block(shape=[0], payload=b""), id="block-empty"),
    pytest.param(block(shape=[0, 5], payload=b""), id="block-empty-2d"),
    pytest.param(
        frames_of(TAG, b"SETUP", header_of_exactly(MAX_HEADER_BYTES)), id="header-at-the-limit"
    ),
    pytest.param(
        frames_of(TAG, b"READY", packb({b"raw": 1, "text": [1, 2.5, None]})), id="bytes-keys"
    ),
]


@pytest.mark.parametrize("frames", GOOD)
def test_good_messages_parse(frames):
    message = check_parse(frames)
    assert message is not None and message.kind.value == split(frames)[1]


BAD = [
    pytest.param([], "expected 1 or 2 frames, got 0", id="no-frames"),
    pytest.param([TAG], "unknown message type b''", id="tag-only"),
    pytest.param([TAG + b"\x05REA"], "unknown message type b'REA'", id="cut-type"),
    pytest.param([TAG + b"\x04READY" + packb({})], "unknown message type b'READ'", id="short-len"),
    pytest.param([TAG + b"\x06READY" + packb({})], "unknown message type b'READY", id="long-len"),
    pytest.param([*block(), b""], "expected 1 or 2 frames, got 3", id="three-frames"),
    pytest.param(
        frames_of(b"ZMTP\x01", b"READY", packb({})), "not a bcgc message", id="foreign-tag"
    ),
    pytest.param([b""], "not a bcgc message", id="empty-frame"),
    pytest.param(
        frames_of(b"BCGC\x01", b"READY", packb({})),
        f"protocol version 1, expected {PROTOCOL_VERSION}",
        id="v1",
    ),
    pytest.param(
        frames_of(b"BCGC\x00", b"READY", packb({})),
        f"protocol version 0, expected {PROTOCOL_VERSION}",
        id="v0",
    ),
    pytest.param(  # a version-1 peer: tag, type and header in three frames
        [b"BCGC\x01", b"READY", packb({})],
        f"protocol version 1, expected {PROTOCOL_VERSION}",
        id="v1-frames",
    ),
    pytest.param(frames_of(b"BCGC\xff", b"BLOCK", packb({})), "protocol version 255", id="v255"),
    pytest.param([b"BCGC"], "protocol version \\?", id="no-version-byte"),
    pytest.param(
        frames_of(TAG, b"PICKLE", packb({})), "unknown message type b'PICKLE'", id="unknown-type"
    ),
    pytest.param(frames_of(TAG, b"ready", packb({})), "unknown message type", id="lowercase-type"),
    pytest.param(frames_of(TAG, b"", packb({})), "unknown message type", id="empty-type"),
    pytest.param(
        frames_of(TAG, b"SETUP", header_of_exactly(MAX_HEADER_BYTES + 1)),
        "header too large",
        id="huge-header",
    ),
    pytest.param(frames_of(TAG, b"READY", b"\xc1"), "not msgpack", id="reserved-byte"),
    pytest.param(frames_of(TAG, b"READY", b""), "not msgpack", id="empty-header"),
    pytest.param(
        frames_of(TAG, b"READY", packb({"a": 1})[:-1]), "not msgpack", id="truncated-header"
    ),
    pytest.param(frames_of(TAG, b"READY", packb({}) + b"\x00"), "not msgpack", id="extra-data"),
    pytest.param(frames_of(TAG, b"READY", b"\x81\x01\x02"), "not msgpack", id="int-key"),
    pytest.param(
        frames_of(TAG, b"READY", b"\xdd\xff\xff\xff\xff"), "not msgpack", id="array-len-bomb"
    ),
    pytest.param(
        frames_of(TAG, b"READY", b"\x91" * 5000 + b"\xc0"), "not msgpack", id="deep-nesting"
    ),
    pytest.param(frames_of(TAG, b"READY", packb([1, 2])), "not a map", id="list-header"),
    pytest.param(frames_of(TAG, b"READY", packb("hello")), "not a map", id="str-header"),
    pytest.param(frames_of(TAG, b"READY", packb(None)), "not a map", id="nil-header"),
    pytest.param(block(dtype="<i8"), "dtype '<i8' not allowed", id="int64"),
    pytest.param(block(dtype="|O"), "dtype '\\|O' not allowed", id="object"),
    pytest.param(block(dtype=">f8"), "dtype '>f8' not allowed", id="big-endian"),
    pytest.param(block(dtype="float64"), "not allowed", id="dtype-by-name"),
    pytest.param(block(dtype=["<f8"]), "not allowed", id="dtype-list"),
    pytest.param(block(dtype=...), "dtype None not allowed", id="payload-without-dtype"),
    pytest.param(block(shape=...), "bad shape None", id="no-shape"),
    pytest.param(block(shape=3), "bad shape", id="shape-int"),
    pytest.param(block(shape=[-3]), "bad shape", id="negative"),
    pytest.param(block(shape=[-1, -3]), "bad shape", id="two-negatives"),
    pytest.param(block(shape=[1, 1, 3]), "bad shape", id="three-dims"),
    pytest.param(block(shape=[3.0]), "bad shape", id="float-dim"),
    pytest.param(block(shape=[True, 3]), "bad shape", id="bool-dim"),
    pytest.param(block(shape=["3"]), "bad shape", id="str-dim"),
    pytest.param(block(shape={"n": 3}), "bad shape", id="map-shape"),
    pytest.param(block(shape=[2**64 - 1]), "exceeds", id="huge-dim"),
    pytest.param(block(shape=[MAX_PAYLOAD_BYTES // 8]), "payload has 24 bytes", id="largest-dim"),
    pytest.param(block(shape=[MAX_PAYLOAD_BYTES // 8 + 1]), "exceeds", id="largest-dim-plus-1"),
    pytest.param(block(shape=[2**62, 2**62]), "exceeds", id="huge-product"),
    pytest.param(
        block(payload=b"\x00" * 23), "payload has 23 bytes, shape \\[3\\] needs 24", id="short"
    ),
    pytest.param(block(payload=b"\x00" * 25), "payload has 25 bytes", id="long"),
    pytest.param(block(payload=b""), "payload has 0 bytes", id="empty-payload"),
    pytest.param(block(dtype="<f4"), "payload has 24 bytes, shape \\[3\\] needs 12", id="f4-size"),
    pytest.param(block(payload=None), "announces an array but no payload", id="no-payload-frame"),
]


@pytest.mark.parametrize("frames, match", BAD)
def test_bad_messages_raise_protocol_error(frames, match):
    with pytest.raises(ProtocolError, match=match):
        parse(frames)


def test_a_wrong_version_names_both_versions():
    with pytest.raises(ProtocolError) as info:
        parse(with_version(ready(), PROTOCOL_VERSION + 1))
    assert f"protocol version {PROTOCOL_VERSION + 1}" in str(info.value)
    assert f"expected {PROTOCOL_VERSION}" in str(info.value)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"run": None}, "run"),  # missing
        ({"iteration": True}, "iteration"),  # a bool is not an iteration number
        ({"iteration": 3.0}, "iteration"),
        ({"run": b"r"}, "run"),
        ({"cycle_time": 1}, "cycle_time"),  # an int where a float belongs
    ],
)
def test_header_checks_name_the_bad_field(bad, field):
    spec = header_spec(run=str, iteration=int, cycle_time=(float, type(None)))
    good = {"run": "r", "iteration": 3, "cycle_time": 0.5}
    check(good, spec)
    check(good | {"cycle_time": None}, spec)
    header = {k: v for k, v in (good | bad).items() if v is not None}
    with pytest.raises(ProtocolError, match=f"header field '{field}'"):
        check(header, spec)


@pytest.mark.parametrize(
    "dtype, shape", [("<f8", [0, 2**60]), ("<f8", [2**63, 0]), ("<f4", [0, 2**64 - 1])]
)
def test_a_zero_size_shape_with_a_huge_dimension_is_a_protocol_error(dtype, shape):
    with pytest.raises(ProtocolError):
        parse(block(dtype=dtype, shape=shape, payload=b""))


# -- the decoder: repeats never count twice -------------------------------------------------------


def test_duplicates_before_decoding_neither_count_nor_replace_the_first_message():
    """A worker that repeats (or an impostor that replays) a slot before it is decoded must not
    make up the N - s arrivals, and the repeat's values must not replace the first message."""
    n = 4
    plan = BlockPlan("test", (2, 0, 3, 0))  # levels 0 and 2 in use
    layout = layout_for(plan, rows=40)
    codes = CodeBook(n, seed=7)
    rng = np.random.default_rng(3)
    partials = rng.standard_normal((n, plan.coordinates))  # row k: part k's partial derivatives
    coded = {}
    for index, slot in enumerate(layout.slots):
        for worker in range(n):
            parts = cyclic_support(worker, slot.stragglers, n)
            coded[worker, index] = (
                codes.matrix(slot.stragglers)[worker, parts]
                @ partials[parts, slot.start : slot.stop]
            )
    decoder = IterationDecoder(layout.slots, n, plan.coordinates, codes)
    for index in range(len(layout.slots)):
        needed = decoder.needed(index)
        assert decoder.offer(0, index, coded[0, index]) is Outcome.USED
        for _ in range(needed + 1):
            poison = np.full_like(coded[0, index], 1e6)
            assert decoder.offer(0, index, poison) is Outcome.DUPLICATE
        assert not decoder.decoded[index]  # one worker, however often, is one arrival
        for worker in range(1, needed):
            assert decoder.offer(worker, index, coded[worker, index]) is Outcome.USED
        assert decoder.decoded[index]
        assert decoder.offer(0, index, coded[0, index]) is Outcome.DUPLICATE
    assert decoder.complete
    np.testing.assert_allclose(decoder.gradient, partials.sum(axis=0), rtol=1e-9, atol=1e-12)


# -- 3a. the master's socket, message by message (no worker processes) ----------------------------


def ready(rank=None, protocol=PROTOCOL_VERSION, **extra):
    return encode(MessageType.READY, {"rank": rank, "pid": 0, "protocol": protocol, **extra})


def valid_block(worker=0, length=3, run="r", iteration=0, slot=0, value=1.0):
    header = {
        "run": run, "iteration": iteration, "worker": worker, "slot": slot, "cycle_time": 1.0,
        "start_ns": 0, "received_ns": 0, "deadline_ns": 0, "overrun_ns": 0,
        "send_ns": 0,
    }  # fmt: skip
    return encode(MessageType.BLOCK, header, np.full(length, value))


def with_payload(frames, payload):
    return [frames[0], payload]


@pytest.fixture
def link():
    link = WorkerLink("tcp://127.0.0.1", max_message_bytes=4096)
    yield link
    link.close()


@pytest.fixture
def peer(link):
    """peer() -> a new DEALER socket connected to the link (a new identity each time)."""
    context = zmq.Context()
    sockets = []  # kept open until the test ends: a collected socket drops its queued messages

    def connect() -> zmq.Socket:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(link.endpoint)
        sockets.append(socket)
        return socket

    yield connect
    context.destroy(linger=0)


def drain(link, until, timeout_s=3.0) -> list:
    """Received messages, polling until `until()` holds or timeout_s passes."""
    got = []
    end = time.monotonic() + timeout_s
    while not until() and time.monotonic() < end:
        received = link.receive(20)
        if received is not None:
            got.append(received)
    return got


def register(link, peer, rank=None) -> zmq.Socket:
    socket = peer()
    socket.send_multipart(ready(rank))
    before = len(link.identities)
    drain(link, lambda: len(link.identities) > before)
    assert len(link.identities) == before + 1
    return socket


REJECTED = [
    pytest.param([[b"junk"]], "malformed", id="one-garbage-frame"),
    pytest.param([[b"\x80" * 9] * 6], "malformed", id="six-garbage-frames"),
    pytest.param([frames_of(TAG, b"BLOCK", b"\xc1")], "malformed", id="garbage-header"),
    pytest.param([frames_of(TAG, b"PICKLE", packb({}))], "malformed", id="unknown-type"),
    pytest.param([with_version(ready(), PROTOCOL_VERSION + 1)], "version", id="tag-next-version"),
    pytest.param([ready(protocol=PROTOCOL_VERSION - 1)], "version", id="ready-protocol-1"),
    pytest.param([ready(protocol=None)], "version", id="ready-without-protocol"),
    pytest.param([ready(protocol=str(PROTOCOL_VERSION))], "version", id="ready-protocol-str"),
    pytest.param([valid_block()], "unknown-worker", id="block-before-ready"),
    pytest.param(
        [encode(MessageType.HEARTBEAT, {})], "unknown-worker", id="heartbeat-before-ready"
    ),
    pytest.param([encode(MessageType.SETUP_OK, {"run": "r"})], "unknown-worker", id="setup-ok"),
    pytest.param([with_payload(valid_block(), b"\x00" * 23)], "malformed", id="block-wrong-length"),
    pytest.param(
        [frames_of(TAG, b"BLOCK", packb({"dtype": "<i8", "shape": [3]}), b"\x00" * 24)],
        "malformed",
        id="block-int64",
    ),
]


@pytest.mark.parametrize("messages, reason", REJECTED)
def test_the_link_counts_and_drops_bad_messages(link, peer, messages, reason):
    socket = peer()
    for frames in messages:
        socket.send_multipart(frames)
    got = drain(link, lambda: sum(link.rejected.values()) >= len(messages))
    assert got == []
    assert dict(link.rejected) == {reason: len(messages)}
    assert link.identities == {}


def test_bad_messages_from_a_registered_worker_are_dropped_and_good_ones_still_pass(link, peer):
    socket = register(link, peer, rank=0)
    socket.send_multipart(with_payload(valid_block(), b"\x00" * 23))
    socket.send_multipart([b"junk"])
    socket.send_multipart(
        ready(protocol=PROTOCOL_VERSION - 1)
    )  # no re-registration with another version
    socket.send_multipart(valid_block(value=2.0))
    got = drain(link, lambda: False, timeout_s=0.5)
    assert dict(link.rejected) == {"malformed": 2, "version": 1}
    assert len(got) == 1 and got[0].rank == 0
    np.testing.assert_array_equal(got[0].message.array, [2.0, 2.0, 2.0])


def test_receive_times_out_while_only_heartbeats_arrive(link, peer):
    """Heartbeats are consumed inside receive; they must not extend its timeout (a stalled
    iteration is only noticed when receive returns None)."""
    socket = register(link, peer, rank=0)
    stop = threading.Event()
    give_up = time.monotonic() + 2.0  # a receive that never times out fails, not hangs

    def beat() -> None:
        while not stop.is_set() and time.monotonic() < give_up:
            socket.send_multipart(encode(MessageType.HEARTBEAT, {"rank": 0, "run": ""}))
            time.sleep(0.005)

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        begun = time.monotonic()
        assert link.receive(200) is None
        waited = time.monotonic() - begun
    finally:
        stop.set()
        thread.join()
    assert 0.15 < waited < 1.0
    socket.send_multipart(valid_block(value=3.0))  # and a real message still comes through
    got = drain(link, lambda: False, timeout_s=0.3)
    assert [r.rank for r in got] == [0]


def test_a_second_ready_is_refused_and_keeps_the_rank(link, peer):
    socket = register(link, peer, rank=0)
    socket.send_multipart(ready(rank=5))
    drain(link, lambda: link.rejected["duplicate-ready"] == 1)
    assert dict(link.rejected) == {"duplicate-ready": 1}
    assert list(link.identities) == [0]


def test_the_rank_comes_from_the_identity_never_from_the_header(link, peer):
    """An impostor that registered late gets a spare rank; its BLOCK claiming worker 0 is
    delivered with its own rank (the decoder then rejects a rank outside 0..N-1)."""
    register(link, peer, rank=0)
    impostor = register(link, peer, rank=0)  # rank 0 is taken: it gets the next free one
    assert sorted(link.identities) == [0, 1]
    impostor.send_multipart(valid_block(worker=0))
    got = drain(link, lambda: False, timeout_s=0.3)
    assert [r.rank for r in got] == [1]


def test_messages_while_waiting_for_workers_are_unexpected(link, peer):
    socket = register(link, peer, rank=0)
    socket.send_multipart(valid_block())
    with pytest.raises(UserError, match="only 1 of 2 workers"):
        link.wait_for_workers(2, 0.5)
    assert dict(link.rejected) == {"unexpected": 1}


def test_an_oversized_message_disconnects_its_sender(link, peer):
    """ZMQ_MAXMSGSIZE: the master's ZeroMQ drops the connection; nothing reaches the link."""
    socket = peer()
    monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        socket.send_multipart(with_payload(valid_block(), b"\x00" * 4097))
        events = []
        end = time.monotonic() + 5
        while zmq.EVENT_DISCONNECTED not in events and time.monotonic() < end:
            if monitor.poll(100):
                events.append(recv_monitor_message(monitor)["event"])
            link.receive(10)  # the master keeps serving
        assert zmq.EVENT_DISCONNECTED in events
    finally:
        socket.disable_monitor()
        monitor.close(0)
    assert sum(link.rejected.values()) == 0 and link.identities == {}
    # the master is unharmed: a well-behaved peer still gets through
    register(link, peer, rank=0).send_multipart(valid_block())
    assert len(drain(link, lambda: False, timeout_s=0.3)) == 1


def test_a_zero_size_huge_shape_does_not_crash_the_link(link, peer):
    peer().send_multipart(block(shape=[0, 2**60], payload=b""))
    drain(link, lambda: sum(link.rejected.values()) >= 1)
    assert dict(link.rejected) == {"malformed": 1}


def test_waiting_for_n_workers_means_ranks_0_to_n_minus_1(link, peer):
    peer().send_multipart(ready(rank=0))
    peer().send_multipart(ready(rank=7))  # a stray worker (--rank 7) or a rogue
    try:
        link.wait_for_workers(2, 1.0)
    except UserError:
        return  # fine: still waiting for rank 1
    assert {0, 1} <= set(link.identities), sorted(link.identities)


# -- 3b. a live run with a rogue peer on the master's endpoint ------------------------------------

GARBAGE = [
    [b""],
    [b"junk"],
    [b"\x80" * 9] * 6,
    frames_of(TAG, b"BLOCK", b"\xc1"),
    frames_of(TAG, b"PICKLE", packb({})),
    frames_of(TAG, b"BLOCK", packb([1, 2, 3])),
]
WRONG_VERSION = [with_version(ready(), PROTOCOL_VERSION + 1), ready(protocol=PROTOCOL_VERSION + 1)]


class Rogue:
    """A peer on the master's endpoint that is not one of its workers.

    Burst (once the cluster is up): garbage frames, wrong protocol versions, a BLOCK and a
    HEARTBEAT from an identity that never said READY, an oversized message (the master's
    ZeroMQ must disconnect it). Then an impostor says READY (asking for rank 0, which is taken;
    all N ranks are: it is refused as a surplus worker), says READY again, sends a wrong-length
    and a wrong-dtype BLOCK, and would answer any ITERATE with poisoned BLOCKs claiming to come
    from worker 0. None of it may reach the gradient.
    """

    def __init__(self, slot_lengths: dict[str, list[int]], oversize: int) -> None:
        self.slot_lengths, self.oversize = slot_lengths, oversize
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.disconnected = False
        self.poisoned = 0
        self.thread: threading.Thread | None = None

    def start(self, endpoint: str) -> None:
        self.thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
            assert not self.thread.is_alive()

    def _run(self, endpoint: str) -> None:
        context = zmq.Context()
        try:
            self._burst(context, endpoint)
            self._impostor(context, endpoint)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            context.destroy(linger=0)

    @staticmethod
    def _dealer(context, endpoint) -> zmq.Socket:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        return socket

    def _burst(self, context, endpoint) -> None:
        stranger = self._dealer(context, endpoint)
        for frames in GARBAGE + WRONG_VERSION:
            stranger.send_multipart(frames)
        stranger.send_multipart(valid_block(worker=0, length=4))
        stranger.send_multipart(encode(MessageType.HEARTBEAT, {}))
        big = self._dealer(context, endpoint)
        monitor = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        big.send_multipart(with_payload(valid_block(), b"\x00" * (self.oversize + 8)))
        end = time.monotonic() + 10
        while not self.disconnected and time.monotonic() < end:
            if monitor.poll(100):
                self.disconnected = recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        big.disable_monitor()
        monitor.close(0)
        big.close(0)

    def _impostor(self, context, endpoint) -> None:
        socket = self._dealer(context, endpoint)
        socket.send_multipart(ready(rank=0))
        socket.send_multipart(ready(rank=0))
        socket.send_multipart(with_payload(valid_block(), b"\x00" * 16))
        socket.send_multipart(
            frames_of(TAG, b"BLOCK", packb({"dtype": "<i8", "shape": [3]}), bytes(24))
        )
        last_sent = time.monotonic()
        while not self.stop.is_set():
            if socket.poll(50):
                message = parse(socket.recv_multipart())
                if message.kind is MessageType.STOP:
                    return
                if message.kind is MessageType.ITERATE:
                    run, iteration = message.header["run"], message.header["iteration"]
                    scheme = run.rsplit("-", 1)[0]
                    for slot, length in enumerate(self.slot_lengths[scheme]):
                        socket.send_multipart(
                            valid_block(0, length, run, iteration, slot, value=1e6)
                        )
                        self.poisoned += 1
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent > 0.2:  # stay alive in the master's eyes
                socket.send_multipart(encode(MessageType.HEARTBEAT, {}))
                last_sent = time.monotonic()


class RoguedCluster(LocalCluster):
    """A LocalCluster whose endpoint gets rogue traffic as soon as the workers are up."""

    def __init__(self, *args, rogue: Rogue, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rogue = rogue

    def __enter__(self) -> RoguedCluster:
        super().__enter__()
        self.rogue.start(self.link.endpoint)
        return self

    def __exit__(self, *exc) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.rogue.join()


@pytest.mark.slow
def test_a_rogue_peer_cannot_disturb_a_live_run(tmp_path):
    n = 3
    schemes = ["bcgc-t", "tandon"]
    config = load_config(
        None,
        [
            f"cluster.workers={n}", "model.samples=120", "model.coordinates=40",
            "run.iterations=4", "run.iteration_seconds=0.05", "run.check=true",
            f"run.output='{tmp_path}'", "predict.samples=2000",
            "run.schemes=[" + ", ".join(f"'{s}'" for s in schemes) + "]",
        ],
    )  # fmt: skip
    data = prepare_problem(config)
    model = model_for_data(config, data)
    slot_lengths = {}
    for name in schemes:
        layout = layout_for(build_plan(name, model, config.scheme_options()), data.rows)
        slot_lengths[name] = [slot.stop - slot.start for slot in layout.slots]
    rogue = Rogue(slot_lengths, max_message_bytes(data))
    folder = tmp_path / "run"

    def cluster_factory():
        return RoguedCluster(
            n, config.run.startup_timeout, folder / "logs", (),
            max_message_bytes(data), rogue=rogue,
        )  # fmt: skip

    summaries = run_testbed(config, folder, log=lambda text: None, cluster_factory=cluster_factory)

    assert rogue.error is None, repr(rogue.error)
    assert rogue.disconnected  # the oversized message cost the rogue its connection
    assert rogue.poisoned == 0  # the impostor was never registered: it never got theta
    assert [s.scheme for s in summaries] == schemes
    for s in summaries:
        assert s.iterations == 4
        assert s.gradient_max_rel_error is not None and s.gradient_max_rel_error <= 1e-9, s
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "completed"
    rejected = meta["rejected_messages"]
    assert rejected.get("malformed", 0) >= len(GARBAGE) + 2, rejected  # + the impostor's 2
    assert rejected.get("version") == len(WRONG_VERSION), rejected
    assert rejected.get("unknown-worker", 0) >= 2, rejected
    assert rejected.get("surplus-worker") == 2, rejected  # both of the impostor's READYs
    assert all(event["rank"] >= n for event in meta["worker_events"]), meta["worker_events"]
    assert sorted(meta["worker_cpu_affinity"]) == [str(r) for r in range(n)]
    rows = list(csv.DictReader(open(folder / "messages.csv")))
    decoded = [r for r in rows if r["status"] in ("used", "late", "duplicate")]
    assert decoded and {int(r["worker"]) for r in decoded} <= set(range(n))
    assert all(int(r["worker"]) in range(n) for r in rows)  # nothing from the impostor
    assert no_children_left()


def test_monitor_event_reads_the_handshake_and_refuses_a_malformed_message():
    context = zmq.Context()
    server, client = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    monitor = client.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        assert monitor.poll(5000)
        assert framing.monitor_event(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        pair_a, pair_b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
        pair_a.bind("inproc://fake-monitor")
        pair_b.connect("inproc://fake-monitor")
        pair_a.send_multipart([b"\x01\x00", b"endpoint"])  # 2 bytes, not 6
        with pytest.raises(zmq.ZMQError, match="malformed socket monitor message"):
            framing.monitor_event(pair_b)
        pair_a.close(0)
        pair_b.close(0)
    finally:
        client.disable_monitor()
        monitor.close(0)
        client.close(0)
        server.close(0)
        context.term()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity calls")
def test_pin_to_core_pins_every_thread_round_robin():
    code = (
        "import os, threading, time\n"
        "from workers.worker import pin_to_core\n"
        "threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
        "allowed = sorted(os.sched_getaffinity(0))\n"
        "core = pin_to_core(len(allowed) + 1)\n"
        "threads = [os.sched_getaffinity(int(t)) for t in os.listdir('/proc/self/task')]\n"
        "print(core == [allowed[1 % len(allowed)]], len(threads) >= 2,\n"
        "      all(t == set(core) for t in threads))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr
