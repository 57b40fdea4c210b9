"""DICOM parse checks: the header facts a manifest records, and the full check of a restored file.

Two entry points:

* `header_facts(head, path)` reads only the header (from the bytes already read for hashing when they hold
  it, else from the file) and returns the UIDs a manifest records. Cheap: it runs for every file of
  every backup.
* `check_file(path, expected, decode)` is the full check of a restored file: file meta, every element of
  the dataset readable and complete (pydicom reads truncated files silently, so lengths are compared with
  what each element declares), native pixel data as long as pydicom's pixel API says the image pixel
  module needs, encapsulated pixel data made of whole items with as many fragments as frames, UIDs equal
  to the manifest's, and optionally a decode of the pixel data with pydicom's decoders (pylibjpeg plugins).

Two classes of DICOM file: Part 10 files (128-byte preamble, 'DICM', file meta) and datasets written
without preamble or file meta (`dicom-no-meta`, as old modalities and some archives store them), which
pydicom reads with `force=True`; the latter are recognised by a plausible first element and SOP UIDs, so
that arbitrary bytes are never taken for DICOM. Non-image objects (SR, KOS, presentation states, RT plans
and structures, waveforms, encapsulated documents) have no pixel data element and are never decoded.
See docs/dicom.md.

pydicom's reading validation is switched off: we check what matters ourselves, and its warnings quote
element values, which may be patient data and must not reach any log.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import BinaryIO

import pydicom
import pydicom.config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from backupctl.errors import NotDicom

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

PREAMBLE = 128
MAGIC = b"DICM"
# Pixel Data (7FE0,0010) as it appears on disk: little endian, then big endian
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_TAG_BE = b"\x7f\xe0\x00\x10"
_UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NO_META = "no-meta"              # the 'format' fact of a dataset stored without preamble and file meta

# the facts of a manifest entry, in the order they are stored; patient is the keyed hash, never the ID
FACT_KEYWORDS = {
    "sop_class": "SOPClassUID",
    "sop_instance": "SOPInstanceUID",
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "modality": "Modality",
}
UID_FACTS = ("sop_class", "sop_instance", "study", "series", "transfer_syntax")
# read in clear for the caller to hash or seal at once (see backupctl.identifiers); never kept as they are
IDENTIFIERS = ("patient_id", "accession", "patient_name")

# a preamble is free for applications, so it can hold an executable's header: such a file runs as a program
# and reads as DICOM (CVE-2019-11687); PS3.10 asks for zeros or a TIFF header there
_EXECUTABLE_HEADERS = {b"MZ": "a Windows PE (MZ) header", b"\x7fELF": "an ELF header",
                       b"\xcf\xfa\xed\xfe": "a Mach-O header", b"#!": "a script interpreter line"}


def looks_like_dicom(head: bytes) -> bool:
    return len(head) >= PREAMBLE + 4 and head[PREAMBLE:PREAMBLE + 4] == MAGIC


# a dataset stored without file meta starts with a low group: identifying elements (0008,xxxx), or a file
# meta group written without the preamble (0002,xxxx); anything else is not worth trying to read
_NO_META_GROUPS = (0x0002, 0x0008)
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def looks_like_no_meta(head: bytes) -> bool:
    """Whether `head` starts like a dataset written without preamble and file meta (little or big endian,
    implicit or explicit VR): a first element of group 0002 or 0008 with a length that fits a header."""
    if len(head) < 8 or looks_like_dicom(head):
        return False
    for order in "<>":
        group, element = struct.unpack(order + "HH", head[:4])
        if group not in _NO_META_GROUPS or element > 0x1FFF:
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True     # explicit VR: the two letters of a VR
        (length,) = struct.unpack(order + "I", head[4:8])
        if length < 0x10000:
            return True     # implicit VR: a header element is short
    return False


def _uid_text(ds: Dataset, keyword: str) -> str | None:
    elem = ds.get(keyword)
    value = str(elem).strip(" \0") if elem is not None else ""
    return value if len(value) <= 64 and _UID.fullmatch(value) else None


def is_instance(ds: Dataset) -> bool:
    """A dataset read with `force=True` is DICOM only if it names its SOP class and instance with UIDs:
    pydicom reads arbitrary bytes into a dataset of nonsense elements without complaint."""
    return _uid_text(ds, "SOPClassUID") is not None and _uid_text(ds, "SOPInstanceUID") is not None


def transfer_syntax_of(ds: Dataset) -> UID | None:
    """The dataset's transfer syntax: the file meta's, else (no file meta) the encoding pydicom read it in."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(str(syntax).strip(" \0"))
    encoding = getattr(ds, "original_encoding", None)
    return {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
            (False, False): ExplicitVRBigEndian}.get(tuple(encoding)) if encoding else None


_PYDICOM_LOG = logging.getLogger("pydicom")
_silenced = False


def silence_for_process() -> None:
    """In a process that only parses (a pool worker): pydicom's warnings and logs are off for the process's
    life, rather than switched off and on around every parse (which costs about 10 % of a full check)."""
    global _silenced
    _PYDICOM_LOG.setLevel(logging.CRITICAL + 1)
    warnings.simplefilter("ignore")
    _silenced = True


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom warns *and logs* with element values in the text, and values may identify a patient: while
    we parse, neither reaches anyone (we report what matters ourselves, without values)."""
    if _silenced:
        yield
        return
    level = _PYDICOM_LOG.level
    _PYDICOM_LOG.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _PYDICOM_LOG.setLevel(level)


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip()


_FACT_TAGS = {name: tag_for_keyword(kw) for name, kw in FACT_KEYWORDS.items()}


def _ascii_text(ds: Dataset, name: str) -> str | None:
    """A UI or CS value read from its raw bytes: these VRs are ASCII by the standard, so converting the
    element (what `ds.get` does) would only cost time. Anything already converted goes through `_text`."""
    elem = ds.get_item(_FACT_TAGS[name])
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").strip(" \0") or None
    return _text(ds, FACT_KEYWORDS[name])


def facts_of(ds: Dataset, no_meta: bool = False) -> dict[str, str | None]:
    """The manifest facts of a parsed dataset, plus the IDENTIFIERS in clear for the caller to hash at once.
    The Patient ID (LO, in the dataset's character set) is converted by pydicom, never decoded by hand.
    A dataset without file meta gets the transfer syntax it was read in and 'format': 'no-meta'."""
    facts = {name: _ascii_text(ds, name) for name in FACT_KEYWORDS}
    if no_meta:
        syntax = transfer_syntax_of(ds)
        facts["transfer_syntax"] = str(syntax) if syntax else None
        facts["format"] = NO_META
    else:
        meta = getattr(ds, "file_meta", None)
        facts["transfer_syntax"] = _text(meta, "TransferSyntaxUID") if meta is not None else None
    facts["patient_id"] = _text(ds, "PatientID")
    facts["accession"] = _plain_text(ds, "AccessionNumber")
    facts["patient_name"] = _plain_text(ds, "PatientName")
    date = _plain_text(ds, "StudyDate")
    facts["date"] = date if date and len(date) == 8 and date.isdigit() else None
    return facts


_TEXT_TAGS = {kw: tag_for_keyword(kw) for kw in ("AccessionNumber", "PatientName", "StudyDate")}


def _plain_text(ds: Dataset, keyword: str) -> str | None:
    """A text value read from its raw bytes when they are plain ASCII (the same string pydicom would give,
    without its conversion, which costs more than the rest of the header read); else converted by pydicom
    in the dataset's character set."""
    elem = ds.get_item(_TEXT_TAGS[keyword])
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes) and value.isascii() and b"\x1b" not in value:   # ESC: ISO 2022 code extensions
        return value.decode("ascii").strip(" \0") or None
    return _text(ds, keyword)


def header_facts(head: bytes, path: Path | str, whole_file: bool) -> dict[str, str | None]:
    """Header facts of a DICOM file whose first bytes are `head` (all of it when `whole_file`).

    Parses `head` in memory when it holds the whole header (it reaches Pixel Data, or is the whole file);
    otherwise reads the header from `path`. A dataset without preamble and file meta is read with `force`
    when its first element looks like one (see `looks_like_no_meta`) and it names its SOP UIDs.
    Raises NotDicom, or ValueError for a header pydicom rejects.
    """
    no_meta = not looks_like_dicom(head)
    if no_meta and not looks_like_no_meta(head):
        raise NotDicom("no DICM marker after the 128-byte preamble")
    complete = whole_file or _PIXEL_TAG_LE in head or _PIXEL_TAG_BE in head
    source: io.BytesIO | str = io.BytesIO(head) if complete else str(path)
    try:
        with _quiet():
            ds = pydicom.dcmread(source, stop_before_pixels=True, force=no_meta)  # values convert lazily
            if no_meta and not is_instance(ds):
                raise NotDicom("no DICM marker, and not a dataset naming its SOP class and instance")
            return facts_of(ds, no_meta)
    except InvalidDicomError as exc:
        raise NotDicom(str(exc)) from None
    except NotDicom:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom and zlib raise many types on damaged headers
        if no_meta:
            raise NotDicom("no DICM marker, and not a readable dataset") from None
        raise ValueError(f"header does not parse ({type(exc).__name__})") from None


# full check of a restored file --------------------------------------------------------------------------


@dataclass
class DicomCheck:
    """What the full parse of one file found. `status` is 'ok' or the first problem's kind."""

    # ok | not-dicom | truncated | no-pixel-data | corrupt | pixel-length | uid-mismatch | decode | meta-mismatch
    # | executable-preamble | unreadable
    status: str = "ok"
    problems: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)    # the kind of each problem, in order
    facts: dict[str, str | None] = field(default_factory=dict)
    file_class: str = "dicom"        # dicom | dicom-no-meta (when it parsed as DICOM at all)
    decoded: bool = False
    notes: list[str] = field(default_factory=list)   # not failures: padding, a syntax with no decoder
    no_decoder: str | None = None    # the transfer syntax's name when decoding was asked for but impossible

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, status: str, problem: str) -> None:
        if self.status == "ok":
            self.status = status
        self.problems.append(problem)
        self.kinds.append(status)

    def by_kind(self) -> dict[str, str]:
        """Each kind of problem found, with its problems in words (one finding per kind)."""
        out: dict[str, list[str]] = {}
        for kind, problem in zip(self.kinds, self.problems, strict=True):
            out.setdefault(kind, []).append(problem)
        return {k: "; ".join(v) for k, v in out.items()}


def _pixel_keyword(ds: Dataset) -> str | None:
    return next((kw for kw in PIXEL_KEYWORDS if kw in ds), None)


def expected_pixel_bytes(ds: Dataset, syntax: UID | None = None) -> tuple[int, float]:
    """(bytes, bytes per frame) of native pixel data the image pixel module describes, as pydicom's decoder
    computes them: subsampled YBR_FULL_422, 1-bit packing, frames, float and double float pixel data.
    Raises ValueError or AttributeError (with pydicom's words) for a module that describes no valid image."""
    from pydicom.pixels.decoders.base import DecodeRunner
    from pydicom.pixels.utils import as_pixel_options

    syntax = syntax or transfer_syntax_of(ds)
    # the native length does not depend on the syntax; an unknown one is measured as explicit VR LE
    runner = DecodeRunner(syntax if syntax is not None and known_syntax(syntax) and not syntax.is_encapsulated
                          else ExplicitVRLittleEndian)
    keyword = _pixel_keyword(ds)
    # the options from the dataset, without `set_source`'s check that the file meta names the runner's syntax
    runner.set_options(**as_pixel_options(ds))
    runner.set_option("pixel_keyword", keyword)
    # the options check alone: the runner's buffer check raises for short data and only warns for long data,
    # and we say which
    runner._validate_options()
    frame = runner.frame_length(unit="bytes")
    return ceil(frame * runner.number_of_frames), frame


def _truncated_elements(ds: Dataset) -> list[str]:
    """Top-level elements holding fewer bytes than their declared length (pydicom reads short files quietly)."""
    short = []
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        length = getattr(elem, "length", None)
        value = getattr(elem, "value", None)
        if length is None or length == _UNDEFINED_LENGTH or not isinstance(value, bytes | bytearray):
            continue
        if len(value) < length:
            short.append(f"{tag} holds {len(value)} of {length} bytes")
    return short


def _ends_early(ds: Dataset, size: int, syntax: UID | None) -> str | None:
    """Whether the dataset stops before the file does. pydicom stops quietly where a file is cut: inside an
    element header it just ends; inside a sequence or encapsulated pixel data it drops every top-level
    element (its EOFError unwinds the whole read). A value cut short is `_truncated_elements`' business."""
    keys = list(ds.keys())
    if not keys:
        return "no data element is readable: the file ends inside a sequence or the pixel data"
    if syntax == DeflatedExplicitVRLittleEndian:
        return None                       # positions are in the inflated stream; zlib checks the end itself
    last = ds.get_item(keys[-1])
    if not isinstance(last, RawDataElement) or last.value_tell is None:
        return None                       # a sequence already converted: a cut inside it empties the dataset
    undefined = last.length == _UNDEFINED_LENGTH
    end = last.value_tell + (len(last.value or b"") + 8 if undefined else last.length)
    if end < size:
        return f"the file ends {size - end} byte(s) into an element after its last whole one"
    return None


def _check_meta(ds: Dataset, result: DicomCheck) -> None:
    if result.file_class == "dicom-no-meta":
        return
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        result.fail("corrupt", "file meta has no Transfer Syntax UID")
        return
    stored = _text(meta, "MediaStorageSOPInstanceUID")
    if stored and result.facts.get("sop_instance") and stored != result.facts["sop_instance"]:
        result.fail("meta-mismatch", "the file meta's Media Storage SOP Instance UID differs from the dataset's "
                                     "SOP Instance UID (a PACS may file it under either)")


def _check_pixels(ds: Dataset, result: DicomCheck, syntax: UID | None) -> bool:
    """Pixel data against the image pixel module; returns whether there is an image to decode."""
    keyword = _pixel_keyword(ds)
    module = [kw for kw in ("Rows", "Columns", "BitsAllocated") if kw in ds]
    if keyword is None:
        if len(module) == 3:
            result.fail("truncated", "image pixel module but no pixel data (file cut short?)")
        elif "Image Storage" in _sop_class_name(ds):
            # a complete file stored header-only reads the same as one cut at an element boundary
            result.fail("no-pixel-data", f"a {_sop_class_name(ds)} instance without pixel data: cut short "
                                         "at an element boundary, or stored without its image")
        return False
    if not module:
        result.notes.append("pixel data without an image pixel module: its length is not checked")
        return False
    if keyword == "PixelData" and _is_encapsulated(ds, syntax):
        return _check_encapsulated(ds, result, syntax)
    try:
        with _quiet():
            expected, frame = expected_pixel_bytes(ds, syntax)
    except (AttributeError, ValueError, KeyError, TypeError) as exc:
        result.fail("corrupt", f"the image pixel module describes no valid image: {_first_sentence(exc)}")
        return False
    actual = len(ds[keyword].value)
    padded = expected + expected % 2          # native pixel data is padded to an even length
    if actual < expected:
        result.fail("truncated", f"pixel data is {actual} bytes, the image pixel module needs {expected}")
        return False
    if actual > padded:
        if actual - expected >= max(frame, 1):
            result.fail("pixel-length", f"pixel data is {actual} bytes, the image pixel module describes "
                                        f"{expected} (a whole frame more)")
            return False
        if result.ok:
            result.notes.append(f"pixel data has {actual - expected} byte(s) of trailing padding")
    return True


def _sop_class_name(ds: Dataset) -> str:
    uid = _uid_text(ds, "SOPClassUID")
    return UID(uid).name if uid else ""


def known_syntax(syntax: UID | None) -> bool:
    """A transfer syntax this pydicom knows (a private or newer one raises on `is_encapsulated`)."""
    if syntax is None:
        return False
    try:
        _ = syntax.is_encapsulated
    except ValueError:
        return False
    return True


def _is_encapsulated(ds: Dataset, syntax: UID | None) -> bool:
    """Encapsulated pixel data has an undefined length: that settles it whatever the transfer syntax is,
    which matters for one this pydicom does not know (JPEG XL, private ones)."""
    if getattr(ds["PixelData"], "is_undefined_length", False):
        return True
    return known_syntax(syntax) and bool(syntax is not None and syntax.is_encapsulated)


def _first_sentence(exc: BaseException) -> str:
    """The gist of a pydicom or codec message: pydicom's decoder puts each plugin's error on a line of its
    own under a general first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return text.split(" - ")[0][:200] or type(exc).__name__


def _check_encapsulated(ds: Dataset, result: DicomCheck, syntax: UID | None) -> bool:
    """Encapsulated pixel data: a Basic Offset Table item then fragment items, each whole, at least one
    fragment per frame, and offset tables that list one offset per frame inside the data."""
    data = ds.PixelData
    order = "<"                               # every encapsulated syntax is little endian
    items: list[tuple[int, int]] = []         # (offset of the item tag, value length)
    at = 0
    while at + 8 <= len(data):
        group, element, length = struct.unpack(order + "HHI", data[at:at + 8])
        tag = group << 16 | element
        if tag == 0xFFFEE0DD:
            break
        if tag != 0xFFFEE000 or length == _UNDEFINED_LENGTH:
            result.fail("corrupt", f"encapsulated pixel data: no item at byte {at} of {len(data)}")
            return False
        if at + 8 + length > len(data):
            result.fail("truncated", f"encapsulated pixel data: item {len(items)} needs {length} bytes, "
                                     f"{len(data) - at - 8} left")
            return False
        items.append((at, length))
        at += 8 + length
    if not items:
        result.fail("truncated", "encapsulated pixel data holds no item (not even the offset table)")
        return False
    fragments = items[1:]
    frames = _frames(ds)
    if not fragments or sum(length for _, length in fragments) == 0:
        result.fail("truncated", "encapsulated pixel data holds no compressed data")
        return False
    if len(fragments) < frames:
        result.fail("pixel-length", f"encapsulated pixel data has {len(fragments)} fragment(s) for {frames} frames")
        return False
    bot_at, bot_length = items[0]
    if bot_length:
        offsets = list(struct.unpack(f"{order}{bot_length // 4}I", data[bot_at + 8:bot_at + 8 + bot_length // 4 * 4]))
        _check_offsets("basic offset table", offsets, fragments, frames, result)
    if "ExtendedOffsetTable" in ds:
        raw = ds.ExtendedOffsetTable or b""
        offsets = list(struct.unpack(f"{order}{len(raw) // 8}Q", raw[:len(raw) // 8 * 8]))
        _check_offsets("extended offset table", offsets, fragments, frames, result)
    return result.ok


def _check_offsets(name: str, offsets: list[int], fragments: list[tuple[int, int]], frames: int,
                   result: DicomCheck) -> None:
    """Offsets count from the first fragment's item tag; each must land on a fragment's item tag."""
    first = fragments[0][0]
    starts = {at - first for at, _ in fragments}
    if len(offsets) != frames:
        result.fail("pixel-length", f"the {name} lists {len(offsets)} frame(s), the header {frames}")
    elif any(o not in starts for o in offsets) or offsets != sorted(offsets):
        result.fail("corrupt", f"the {name} points outside the fragments")


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def has_decoder(syntax: UID | None) -> bool:
    """Whether an installed decoder covers this transfer syntax (the native ones always are)."""
    from pydicom.pixels import get_decoder

    if syntax is None:
        return False
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def _decode(ds: Dataset, result: DicomCheck, syntax: UID | None) -> None:
    """Decode every frame. Only called for a dataset with a pixel data element: SR, KOS, presentation
    states, RT plans and waveforms have none and are never sent to a decoder."""
    from pydicom.pixels import get_decoder

    if not has_decoder(syntax):
        name = syntax.name if syntax is not None else "unknown"
        result.no_decoder = f"{name} ({syntax})" if syntax is not None and name != str(syntax) else name
        return
    assert syntax is not None
    try:
        with _quiet():
            # raw: the stored colour space; converting YCbCr to RGB proves nothing more about the file
            array, _ = get_decoder(syntax).as_array(ds, raw=True)
        result.decoded = array.size > 0
    except BaseException as exc:
        # third-party codecs raise anything on damaged data; a Rust codec's panic is a BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        result.fail("decode", f"pixel data does not decode ({type(exc).__name__}: {_first_sentence(exc)})")


def decode_pixels(ds: Dataset) -> DicomCheck:
    """Decode a parsed dataset's pixel data as the full check does (`decoded`, `no_decoder`, or a 'decode'
    problem); for measuring the decode step on its own."""
    result = DicomCheck()
    _decode(ds, result, transfer_syntax_of(ds))
    return result


def compare_facts(facts: dict[str, str | None], expected: dict[str, str | None]) -> list[str]:
    """Names of the UIDs (and modality) that differ from what the manifest recorded."""
    keys = (*UID_FACTS, "modality")
    return [k for k in keys if expected.get(k) is not None and facts.get(k) != expected.get(k)]


def check_file(path: Path, expected: dict[str, str | None] | None = None, decode: bool = False) -> DicomCheck:
    """Full parse check of one DICOM file; `expected` are the manifest's facts to compare UIDs with."""
    try:
        with open(path, "rb") as fh:
            return _check_stream(fh, expected, decode)
    except OSError as exc:
        result = DicomCheck()
        result.fail("unreadable", f"cannot read: {exc.strerror}")
        return result


def check_bytes(data: bytes, expected: dict[str, str | None] | None = None, decode: bool = False) -> DicomCheck:
    """`check_file` of a file's content already in memory: a restore check reads each file once, for its
    SHA-256 and for this parse."""
    return _check_stream(io.BytesIO(data), expected, decode)


def executable_preamble(head: bytes) -> str | None:
    """What executable header the preamble of a Part 10 file starts with, if any."""
    return next((what for magic, what in _EXECUTABLE_HEADERS.items() if head.startswith(magic)), None)


def _check_stream(fh: BinaryIO, expected: dict[str, str | None] | None, decode: bool) -> DicomCheck:
    result = DicomCheck()
    head = fh.read(PREAMBLE + 4)
    no_meta = False
    if not looks_like_dicom(head):
        if looks_like_no_meta(head):
            no_meta, result.file_class = True, "dicom-no-meta"
        elif len(head) < PREAMBLE + 4:
            result.fail("truncated", "too short to be DICOM")
            return result
        else:
            result.fail("not-dicom", "no DICM marker: not DICOM")
            return result
    elif (what := executable_preamble(head)) is not None:
        result.fail("executable-preamble", f"the preamble holds {what}: the file is also a program "
                                           "(DICOM/executable polyglot, CVE-2019-11687)")
    fh.seek(0)
    try:
        with _quiet():
            ds = pydicom.dcmread(fh, defer_size=None, force=no_meta)
    except InvalidDicomError:
        result.fail("not-dicom", "not a DICOM file")
        return result
    except Exception as exc:  # noqa: BLE001 - pydicom (and zlib for deflated files) raise many types
        result.fail("not-dicom" if no_meta else "corrupt", f"does not parse ({type(exc).__name__})")
        return result
    try:
        with _quiet():             # values convert lazily, and pydicom's warnings may quote them
            _check_dataset(ds, fh, result, no_meta, expected, decode)
    except Exception as exc:  # noqa: BLE001 - a value pydicom converts lazily may raise anything
        result.fail("corrupt", f"an element does not parse ({type(exc).__name__})")
    return result


def _check_dataset(ds: Dataset, fh: BinaryIO, result: DicomCheck, no_meta: bool,
                   expected: dict[str, str | None] | None, decode: bool) -> None:
    if no_meta and not is_instance(ds):
        result.fail("not-dicom", "no DICM marker, and not a dataset naming its SOP class and instance")
        return
    for problem in _truncated_elements(ds):
        result.fail("truncated", problem)
    size = fh.seek(0, io.SEEK_END)
    syntax = transfer_syntax_of(ds)
    if not result.kinds and (early := _ends_early(ds, size, syntax)) is not None:
        result.fail("truncated", early)
        if not len(ds):
            return                        # nothing read: its UIDs cannot be compared, its pixels not checked
    try:
        with _quiet():
            for elem in ds.iterall():  # converts every raw value: a malformed one raises here
                _ = elem.value
    except Exception as exc:  # noqa: BLE001 - pydicom's converters raise many types
        result.fail("corrupt", f"an element does not parse ({type(exc).__name__})")
        return
    result.facts = facts_of(ds, no_meta)
    for name in IDENTIFIERS:   # never kept in clear
        result.facts.pop(name, None)
    _check_meta(ds, result)
    image = _check_pixels(ds, result, syntax)
    if expected:
        differing = compare_facts(result.facts, expected)
        if differing:
            result.fail("uid-mismatch", "differs from the manifest: " + ", ".join(differing))
    if decode and image and result.ok:
        _decode(ds, result, syntax)
