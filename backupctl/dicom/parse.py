"""DICOM parse checks: the header facts a manifest records, and the full check of a restored file.

Two entry points:

* `header_facts(head, path)` reads only the header (from the bytes already read for hashing when they hold
  it, else from the file) and returns the UIDs a manifest records. Cheap: it runs for every file of
  every backup.
* `check_file(path, expected, decode)` is the full check of a restored file: file meta, every element of
  the dataset readable and complete (pydicom reads truncated files silently, so lengths are compared with
  what each element declares), pixel data length equal to rows x columns x samples x frames x bits
  allocated for uncompressed transfer syntaxes, UIDs equal to the manifest's, and optionally a decode of
  the pixel data.

pydicom's reading validation is switched off: we check what matters ourselves, and its warnings quote
element values, which may be patient data and must not reach any log.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pydicom
import pydicom.config
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UncompressedTransferSyntaxes

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

PREAMBLE = 128
MAGIC = b"DICM"
# Pixel Data (7FE0,0010) as it appears on disk: little endian, then big endian
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_TAG_BE = b"\x7f\xe0\x00\x10"
_UNDEFINED_LENGTH = 0xFFFFFFFF

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


class NotDicom(Exception):
    """The bytes are not a DICOM Part 10 file (no 'DICM' after the preamble)."""


def looks_like_dicom(head: bytes) -> bool:
    return len(head) >= PREAMBLE + 4 and head[PREAMBLE:PREAMBLE + 4] == MAGIC


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


def facts_of(ds: Dataset) -> dict[str, str | None]:
    """The manifest facts of a parsed dataset, plus the IDENTIFIERS in clear for the caller to hash at once.
    The Patient ID (LO, in the dataset's character set) is converted by pydicom, never decoded by hand."""
    facts = {name: _ascii_text(ds, name) for name in FACT_KEYWORDS}
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
    otherwise reads the header from `path`. Raises NotDicom, or ValueError for a header pydicom rejects.
    """
    if not looks_like_dicom(head):
        raise NotDicom("no DICM marker after the 128-byte preamble")
    complete = whole_file or _PIXEL_TAG_LE in head or _PIXEL_TAG_BE in head
    source: io.BytesIO | str = io.BytesIO(head) if complete else str(path)
    try:
        with _quiet():
            return facts_of(pydicom.dcmread(source, stop_before_pixels=True))  # values convert lazily
    except InvalidDicomError as exc:
        raise NotDicom(str(exc)) from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        raise ValueError(f"header does not parse ({type(exc).__name__})") from None


# full check of a restored file --------------------------------------------------------------------------


@dataclass
class DicomCheck:
    """What the full parse of one file found. `status` is 'ok' or the first problem's kind."""

    status: str = "ok"               # ok | not-dicom | truncated | corrupt | pixel-length | uid-mismatch | decode
    problems: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)    # the kind of each problem, in order
    facts: dict[str, str | None] = field(default_factory=dict)
    decoded: bool = False
    notes: list[str] = field(default_factory=list)   # not failures: e.g. no decoder for a compressed syntax

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


def expected_pixel_bytes(ds: Dataset) -> int | None:
    """Bytes of native (uncompressed) pixel data the header promises, or None when it cannot say."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    pixels = rows * cols * samples * frames
    if bits == 1:
        return (pixels + 7) // 8
    return pixels * (bits // 8) if bits % 8 == 0 else None


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


def _check_meta(ds: Dataset, result: DicomCheck) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        result.fail("corrupt", "file meta has no Transfer Syntax UID")
        return
    stored = _text(meta, "MediaStorageSOPInstanceUID")
    if stored and result.facts.get("sop_instance") and stored != result.facts["sop_instance"]:
        result.fail("corrupt", "file meta SOP Instance UID differs from the dataset's")


def _check_pixels(ds: Dataset, result: DicomCheck) -> None:
    has_image = "Rows" in ds and "Columns" in ds
    if "PixelData" not in ds:
        if has_image:
            result.fail("truncated", "image header but no pixel data (file cut short?)")
        return
    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
    if syntax not in UncompressedTransferSyntaxes:
        return  # encapsulated: fragment lengths are checked by decoding
    expected = expected_pixel_bytes(ds)
    if expected is None:
        return
    actual = len(ds.PixelData)
    # native pixel data is padded to an even length
    if actual not in (expected, expected + (expected % 2)):
        kind = "truncated" if actual < expected else "pixel-length"
        result.fail(kind, f"pixel data is {actual} bytes, header promises {expected}")


def _decode(ds: Dataset, result: DicomCheck) -> None:
    try:
        with _quiet():
            array = ds.pixel_array
        result.decoded = array.size > 0
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        # no decoder installed for this transfer syntax: not a fault of the file
        if "handler" in str(exc).lower() or "plugin" in str(exc).lower() or isinstance(exc, ImportError):
            result.notes.append(f"not decoded: no decoder for transfer syntax {result.facts.get('transfer_syntax')}")
        else:
            result.fail("decode", f"pixel data does not decode ({type(exc).__name__})")
    except (ValueError, TypeError, AttributeError, KeyError, EOFError) as exc:
        result.fail("decode", f"pixel data does not decode ({type(exc).__name__})")


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


def _check_stream(fh: BinaryIO, expected: dict[str, str | None] | None, decode: bool) -> DicomCheck:
    result = DicomCheck()
    head = fh.read(PREAMBLE + 4)
    if not looks_like_dicom(head):
        result.fail("truncated" if len(head) < PREAMBLE + 4 else "not-dicom",
                    "too short to be DICOM" if len(head) < PREAMBLE + 4 else "no DICM marker: not DICOM")
        return result
    fh.seek(0)
    try:
        with _quiet():
            ds = pydicom.dcmread(fh, defer_size=None)
    except InvalidDicomError:
        result.fail("not-dicom", "not a DICOM file")
        return result
    except (EOFError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError, OverflowError) as exc:
        result.fail("corrupt", f"does not parse ({type(exc).__name__})")
        return result
    for problem in _truncated_elements(ds):
        result.fail("truncated", problem)
    try:
        with _quiet():
            for elem in ds.iterall():  # converts every raw value: a malformed one raises here
                _ = elem.value
    except (ValueError, TypeError, KeyError, AttributeError, EOFError, OverflowError, NotImplementedError) as exc:
        result.fail("corrupt", f"an element does not parse ({type(exc).__name__})")
        return result
    result.facts = facts_of(ds)
    for name in IDENTIFIERS:   # never kept in clear
        result.facts.pop(name, None)
    _check_meta(ds, result)
    _check_pixels(ds, result)
    if expected:
        differing = compare_facts(result.facts, expected)
        if differing:
            result.fail("uid-mismatch", "differs from the manifest: " + ", ".join(differing))
    if decode and result.ok:
        _decode(ds, result)
    return result
