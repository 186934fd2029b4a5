"""Shared-memory segments (bcgc_sim/wire/shm.py): references round-trip through parse, every bad
reference is refused before an array is built, halves alternate by iteration parity, and no
segment outlives the processes that map it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import mapped_segments, shm_files

from bcgc_sim.wire.protocol import MessageType, ProtocolError, encode, parse
from bcgc_sim.wire.shm import (
    HEADER_BYTES,
    RECORD_BYTES,
    OwnSegment,
    PeerSegment,
    SegmentInfo,
    SegmentTable,
    Unavailable,
    encode_shared,
    record_bytes,
    run_prefix,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="needs memfd (Linux)")


def header(iteration: int) -> dict:
    return {"run": "r", "iteration": iteration, "worker": 0, "slot": 0}


@pytest.fixture
def segment():
    own = OwnSegment(f"{run_prefix()}-test", 2 * record_bytes(8 * 100), clock="c")
    yield own
    own.close()


def table_of(segment: OwnSegment) -> SegmentTable:
    table = SegmentTable()
    table.attach(segment.info)
    return table


def test_an_array_travels_by_reference_and_arrives_read_only_and_equal(segment):
    values = np.arange(100, dtype=float) / 7
    frames = encode_shared(segment, MessageType.BLOCK, header(3), values)
    assert len(frames) == 1 and len(frames[0]) < 300  # the header only, never the bytes
    message = parse(frames, table_of(segment))
    np.testing.assert_array_equal(message.array, values)
    assert not message.array.flags.writeable
    offset = HEADER_BYTES + segment.half + RECORD_BYTES  # iteration 3: the second half
    assert message.header["shm"] == [segment.info.name, offset, 800, 3]


def test_a_two_dimensional_array_keeps_its_shape(segment):
    values = np.arange(12, dtype="<f4").reshape(3, 4)
    message = parse(
        encode_shared(segment, MessageType.COMBINE, header(0), values), table_of(segment)
    )
    assert message.array.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(message.array, values)


def test_another_process_maps_the_segment_and_reads_the_array(segment):
    values = np.linspace(-1, 1, 100)
    frames = encode_shared(segment, MessageType.ITERATE, header(5), values)
    code = (
        "import sys, numpy as np\n"
        "from bcgc_sim.wire.protocol import parse\n"
        "from bcgc_sim.wire.shm import SegmentInfo, SegmentTable\n"
        f"table = SegmentTable(); table.attach(SegmentInfo(**{segment.info.to_header()!r}))\n"
        f"print(float(parse([{bytes(frames[0])!r}], table).array.sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(values.sum(), abs=1e-12)


def test_iterations_alternate_halves_and_the_iteration_after_next_makes_a_reference_stale(segment):
    table = table_of(segment)
    first = segment.put(0, np.full(100, 0.0))
    second = segment.put(1, np.full(100, 1.0))
    assert second[1] == first[1] + segment.half  # the other half
    assert parse(reference_frames(segment, first, 0), table).array[0] == 0.0
    third = segment.put(2, np.full(100, 2.0))
    assert third[1] == first[1]  # iteration 2 reuses iteration 0's record
    assert reason_of(reference_frames(segment, first, 0), table) == "stale-reference"
    assert parse(reference_frames(segment, second, 1), table).array[0] == 1.0  # untouched
    assert parse(reference_frames(segment, third, 2), table).array[0] == 2.0


def test_a_half_without_room_gives_no_reference(segment):
    assert segment.put(0, np.zeros(100)) is not None
    assert segment.put(0, np.zeros(100)) is not None
    assert segment.put(0, np.zeros(100)) is None  # two records per half
    assert encode_shared(segment, MessageType.BLOCK, header(0), np.zeros(1)) is None
    assert segment.put(1, np.zeros(100)) is not None  # the other half is free


def reference_frames(segment: OwnSegment, ref: list, iteration: int = 0, length: int = 100):
    fields = {**header(iteration), "dtype": "<f8", "shape": [length], "shm": ref}
    return encode(MessageType.BLOCK, fields)


def reason_of(frames, table) -> str:
    with pytest.raises(ProtocolError) as error:
        parse(frames, table)
    return error.value.reason


def test_a_reference_to_an_unknown_segment_is_refused(segment):
    segment.put(0, np.zeros(100))
    table = table_of(segment)
    name = segment.info.name
    assert reason_of(reference_frames(segment, ["bcgc-0-other", 128, 800, 0]), table) == (
        "unknown-segment"
    )
    assert reason_of(reference_frames(segment, [name, 128, 800, 0]), None) == "unknown-segment"
    assert reason_of(reference_frames(segment, [name, 128, 800, 0]), SegmentTable()) == (
        "unknown-segment"
    )


@pytest.mark.parametrize(
    "where",
    ["segment header", "no stamp before it", "off the grid", "negative", "past the end"],
)
def test_a_reference_out_of_bounds_is_refused(segment, where):
    segment.put(0, np.zeros(100))
    offset = {
        "segment header": 0,
        "no stamp before it": HEADER_BYTES,
        "off the grid": HEADER_BYTES + RECORD_BYTES + 8,
        "negative": -RECORD_BYTES,
        "past the end": segment.info.size,
    }[where]
    frames = reference_frames(segment, [segment.info.name, offset, 800, 0])
    assert reason_of(frames, table_of(segment)) == "out-of-bounds"


def test_a_reference_past_the_end_is_refused_even_when_it_starts_inside(segment):
    end = segment.info.size
    frames = reference_frames(segment, [segment.info.name, end - 64, 800, 0])
    assert reason_of(frames, table_of(segment)) == "out-of-bounds"


def test_a_reference_to_a_record_never_written_is_stale(segment):
    frames = reference_frames(segment, [segment.info.name, 128, 800, 0])
    assert reason_of(frames, table_of(segment)) == "stale-reference"  # fresh memory is 0


def test_a_reference_to_a_record_being_written_is_stale(segment):
    segment.put(4, np.zeros(100))
    frames = reference_frames(segment, [segment.info.name, 128, 800, 4], iteration=4)
    segment.map[120:128] = (-1).to_bytes(8, "little", signed=True)  # as during the copy
    assert reason_of(frames, table_of(segment)) == "stale-reference"
    segment.map[120:128] = (4).to_bytes(8, "little", signed=True)  # iteration 3's stamp
    assert reason_of(frames, table_of(segment)) == "stale-reference"
    segment.map[120:128] = (5).to_bytes(8, "little", signed=True)  # iteration 4's, as put wrote
    assert parse(frames, table_of(segment)).array.shape == (100,)


@pytest.mark.parametrize(
    "ref, iteration, length",
    [
        (["NAME", 128, 800, 1], 0, 100),  # another iteration than the header's
        (["NAME", 128, 80, 0], 0, 100),  # fewer bytes than the shape needs
        (["NAME", 128, 800], 0, 100),  # three fields
        (["NAME", 128.0, 800, 0], 0, 100),  # a float offset
        (["NAME", True, 800, 0], 0, 100),  # a bool is not an int
        ("NAME", 0, 100),  # not a list
    ],
)
def test_a_malformed_reference_is_refused(segment, ref, iteration, length):
    segment.put(0, np.zeros(100))
    ref = [segment.info.name if v == "NAME" else v for v in ref] if type(ref) is list else ref
    frames = reference_frames(segment, ref, iteration, length)
    assert reason_of(frames, table_of(segment)) == "malformed"


@pytest.mark.parametrize(
    "change",
    [
        {"token": "0" * 31},
        {"pid": 0},
        {"size": 8},
        {"name": "has space"},
        {"fd": "3"},
        {"extra": 1},
    ],
)
def test_a_bad_segment_description_is_refused(segment, change):
    with pytest.raises(ProtocolError):
        SegmentInfo.from_header({**segment.info.to_header(), **change})


def test_a_segment_description_survives_the_wire(segment):
    assert SegmentInfo.from_header(segment.info.to_header()) == segment.info


def test_a_segment_with_another_token_or_an_absent_process_cannot_be_mapped(segment):
    with pytest.raises(Unavailable, match="token"):
        PeerSegment(SegmentInfo(**{**segment.info.to_header(), "token": "ab" * 16}))
    with pytest.raises(Unavailable, match="cannot open"):
        PeerSegment(SegmentInfo(**{**segment.info.to_header(), "fd": 1 << 20}))
    with pytest.raises(Unavailable, match="is not the memfd"):
        PeerSegment(SegmentInfo(**{**segment.info.to_header(), "fd": 0}))  # stdin, say
    with pytest.raises(Unavailable, match="is not the memfd"):
        PeerSegment(SegmentInfo(**{**segment.info.to_header(), "name": "bcgc-1-other"}))
    with pytest.raises(Unavailable, match="not the announced"):
        PeerSegment(SegmentInfo(**{**segment.info.to_header(), "size": segment.info.size + 64}))


def test_a_table_keeps_only_the_newest_segment_of_a_peer():
    prefix = run_prefix()
    old, new = OwnSegment(f"{prefix}-a", 1024, "c"), OwnSegment(f"{prefix}-b", 1024, "c")
    table = SegmentTable()
    table.attach(old.info)
    table.attach(old.info)  # the same again: kept, not remapped
    table.attach(new.info)
    assert len(table) == 1 and new.info.name in table and old.info.name not in table
    old.close()
    new.close()


def test_no_segment_is_left_once_writer_and_readers_let_go():
    prefix = run_prefix()
    own = OwnSegment(f"{prefix}-leak", 4096, "c")
    table = table_of(own)
    view = parse(encode_shared(own, MessageType.BLOCK, header(0), np.ones(8)), table).array
    maps = [kind for _, kind, _ in mapped_segments(prefix, [os.getpid()])]
    assert maps.count("map") == 2  # the writer's and the reader's
    own.close()
    table.clear()
    maps = [kind for _, kind, _ in mapped_segments(prefix, [os.getpid()])]
    assert maps.count("map") == 1  # the view's
    del view
    gc.collect()
    assert mapped_segments(prefix, [os.getpid()]) == []
    assert shm_files(prefix) == []


def test_segments_of_a_killed_process_are_gone_with_it():
    prefix = run_prefix()
    code = (
        "import sys, time\n"
        "from bcgc_sim.wire.shm import OwnSegment\n"
        f"s = OwnSegment('{prefix}-w0', 1 << 20, 'c'); s.put(0, __import__('numpy').ones(1000))\n"
        "print(s.info.fd, flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        assert {pid for pid, _, _ in mapped_segments(prefix)} == {child.pid}
    finally:
        child.kill()
        child.wait()
    assert mapped_segments(prefix) == []
    assert shm_files(prefix) == []
