"""A corpus of real-world-shaped DICOM files for tests, collected into one folder by `build_corpus`.

Most files are pydicom's own test files (real modality output, downsized, shipped inside the pydicom
wheel: nothing is downloaded), covering every transfer syntax the decoders handle, files without preamble
or file meta, YBR_FULL_422, padded and odd-length pixel data, multi-frame, 1-bit, palette, SR, RT and
waveforms. The rest is made here with pydicom and the decoders' own encoders: float and double float pixel
data, multi-frame JPEG 2000 and RLE with offset tables, key objects, presentation states, encapsulated PDF,
private sequences, datasets written without file meta; then the hostile ones: truncated at every depth,
bit flips in the header and the codestream, garbage, an empty file, huge declared lengths, an executable
preamble.

Each `Sample` says what a full check must find: no problem at all for a valid file (`kinds` empty), else
the kinds of problem (`backupctl.dicom.parse.DicomCheck.kinds`); `decodes` names the transfer syntax of a
valid file with pixel data, which a decode must cover.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)


@dataclass(frozen=True)
class Sample:
    name: str                        # its file name in the corpus folder
    what: str
    kinds: frozenset[str] = frozenset()   # the problems a full check finds; empty: a valid file
    file_class: str = "dicom"        # dicom | dicom-no-meta | other (not DICOM at all)
    decodes: str | None = None       # a valid image's transfer syntax UID: its pixel data decodes

    @property
    def valid(self) -> bool:
        return not self.kinds


def _copy(source: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        shutil.copyfile(get_testdata_file(source), path)
    return make


def _read(source: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(source))


# valid files made here ---------------------------------------------------------------------------------


def _meta(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _identity(ds: Dataset, sop_class: str, modality: str, n: int) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["corpus", str(n)])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["corpus-study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["corpus-series", str(n)])
    ds.PatientID = "CORPUS01"
    ds.PatientName = "Corpus^Test"
    ds.Modality = modality
    ds.StudyDate = "20240105"


def _float_image(keyword: str, dtype: str) -> Callable[[Path], None]:
    """A parametric map (float or double float pixel data, 2 frames), as MR diffusion maps are stored."""
    def make(path: Path) -> None:
        ds = Dataset()
        _identity(ds, "1.2.840.10008.5.1.4.1.1.30", "MR", 100 + len(keyword))
        ds.Rows, ds.Columns, ds.NumberOfFrames = 12, 10, 2
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = 32 if dtype == "<f4" else 64
        values = np.linspace(0.0, 3.5e-3, 2 * 12 * 10, dtype=dtype).reshape(2, 12, 10)
        setattr(ds, keyword, values.tobytes())
        _meta(ds)
        ds.save_as(path, enforce_file_format=True)
    return make


def _multiframe(syntax: str) -> Callable[[Path], None]:
    """Three CT frames compressed by the decoders' own encoders (openjpeg, RLE), with a Basic Offset Table."""
    def make(path: Path) -> None:
        ds = _read("CT_small.dcm")
        frames = np.stack([ds.pixel_array + i for i in range(3)]).astype(ds.pixel_array.dtype)
        ds.NumberOfFrames = 3
        ds.PixelData = frames.tobytes()
        ds.compress(syntax, frames)
        ds.save_as(path, enforce_file_format=True)
    return make


def _kos(path: Path) -> None:
    ds = Dataset()
    _identity(ds, "1.2.840.10008.5.1.4.1.1.88.59", "KO", 201)
    ds.ValueType = "CONTAINER"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = generate_uid(entropy_srcs=["corpus-ref"])
    series = Dataset()
    series.SeriesInstanceUID = generate_uid(entropy_srcs=["corpus-ref-series"])
    series.ReferencedSOPSequence = [ref]
    study = Dataset()
    study.StudyInstanceUID = ds.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    _meta(ds)
    ds.save_as(path, enforce_file_format=True)


def _presentation_state(path: Path) -> None:
    ds = Dataset()
    _identity(ds, "1.2.840.10008.5.1.4.1.1.11.1", "PR", 202)
    ds.ContentLabel = "CORPUS"
    ds.PresentationCreationDate = "20240105"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    text = Dataset()
    text.UnformattedTextValue = "lesion"
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.AnchorPoint = [10.0, 12.0]
    text.AnchorPointVisibility = "Y"
    annotation.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [annotation]
    _meta(ds)
    ds.save_as(path, enforce_file_format=True)


def _encapsulated_pdf(path: Path) -> None:
    ds = Dataset()
    _identity(ds, "1.2.840.10008.5.1.4.1.1.104.1", "DOC", 203)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    _meta(ds)
    ds.save_as(path, enforce_file_format=True)


def _private_sequences(path: Path) -> None:
    """A CT with a vendor's private block holding nested sequences, as scanners write them."""
    ds = _read("CT_small.dcm")
    inner = Dataset()
    inner.private_block(0x0029, "CORPUS VENDOR", create=True).add_new(0x01, "LO", "inner")
    item = Dataset()
    item_block = item.private_block(0x0029, "CORPUS VENDOR", create=True)
    item_block.add_new(0x01, "SQ", [inner])
    item_block.add_new(0x02, "DS", "1.5")
    block = ds.private_block(0x0029, "CORPUS VENDOR", create=True)
    block.add_new(0x10, "SQ", [item])
    block.add_new(0x11, "OB", b"\x01\x02\x03\x04")
    ds.save_as(path, enforce_file_format=True)


def _no_meta(source: str, implicit: bool) -> Callable[[Path], None]:
    """A dataset written bare, without preamble or file meta, as older modalities and archives keep them."""
    def make(path: Path) -> None:
        ds = _read(source)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, ds)
        path.write_bytes(fp.getvalue())
    return make


def _fixed_meta(source: str) -> Callable[[Path], None]:
    """pydicom's RT test files, whose file meta names another SOP instance than the dataset, made right."""
    def make(path: Path) -> None:
        ds = _read(source)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path)
    return make


# hostile files ---------------------------------------------------------------------------------------------


def _cut(source: str, keep: Callable[[int], int]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = Path(get_testdata_file(source)).read_bytes()
        path.write_bytes(data[:keep(len(data))])
    return make


def _edited(source: str, edit: Callable[[bytearray], None]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = bytearray(Path(get_testdata_file(source)).read_bytes())
        edit(data)
        path.write_bytes(bytes(data))
    return make


def _declare_length(tag_and_vr: bytes, length: int) -> Callable[[bytearray], None]:
    """Rewrite the length an OB/OW/SQ/UN element declares (explicit VR little endian: tag, VR, 2 reserved
    bytes, 4-byte length), keeping its bytes."""
    def edit(data: bytearray) -> None:
        at = data.index(tag_and_vr, 132)
        data[at + 8:at + 12] = struct.pack("<I", length)
    return edit


def _rows(data: bytearray) -> None:
    """A bit flip in Rows (0028,0010): the header now describes twice the image."""
    at = data.index(b"\x28\x00\x10\x00US\x02\x00", 132)
    (rows,) = struct.unpack("<H", data[at + 8:at + 10])
    data[at + 8:at + 10] = struct.pack("<H", rows * 2)


def _executable_preamble(data: bytearray) -> None:
    stub = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    data[:len(stub)] = stub


def _broken_codestream(data: bytearray) -> None:
    """The JPEG start-of-image marker of the first fragment zeroed: the DICOM structure intact, the image not."""
    at = data.index(b"\xff\xd8", 132)
    data[at:at + 2] = b"\x00\x00"


def _broken_rle(data: bytearray) -> None:
    """The RLE header's second segment offset moved into the first segment: the Rust codec panics."""
    bot = data.index(b"\xfe\xff\x00\xe0", 132)
    fragment = bot + 8 + struct.unpack("<I", data[bot + 4:bot + 8])[0] + 8
    data[fragment + 8:fragment + 12] = struct.pack("<I", 70)


def _bad_offset_table(path: Path) -> None:
    """A three-frame JPEG 2000 whose Basic Offset Table lists two frames (the pixel data element has an
    undefined length, so dropping the third offset leaves the structure readable)."""
    _multiframe(JPEG2000Lossless)(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"\xfe\xff\x00\xe0\x0c\x00\x00\x00", 132)       # the 12-byte Basic Offset Table item
    data[at + 4:at + 8] = struct.pack("<I", 8)
    del data[at + 16:at + 20]
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


# the corpus --------------------------------------------------------------------------------------------------

SAMPLES: list[tuple[Sample, Callable[[Path], None]]] = [
    # native transfer syntaxes
    (Sample("ct-explicit-le.dcm", "CT, explicit VR little endian", decodes="1.2.840.10008.1.2.1"),
     _copy("CT_small.dcm")),
    (Sample("mr-implicit-le.dcm", "MR, implicit VR little endian", decodes="1.2.840.10008.1.2"),
     _copy("MR_small_implicit.dcm")),
    (Sample("mr-big-endian.dcm", "MR, explicit VR big endian", decodes="1.2.840.10008.1.2.2"),
     _copy("MR_small_bigendian.dcm")),
    (Sample("us-deflated.dcm", "deflated explicit VR little endian", decodes="1.2.840.10008.1.2.1.99"),
     _copy("image_dfl.dcm")),
    # compressed transfer syntaxes
    (Sample("jpeg-baseline-rgb.dcm", "JPEG baseline, RGB", decodes="1.2.840.10008.1.2.4.50"),
     _copy("SC_rgb_jpeg_dcmtk.dcm")),
    (Sample("jpeg-baseline-ybr.dcm", "JPEG baseline, YBR_FULL_422", decodes="1.2.840.10008.1.2.4.50"),
     _copy("examples_ybr_color.dcm")),
    (Sample("jpeg-extended-12bit.dcm", "JPEG extended 12-bit", decodes="1.2.840.10008.1.2.4.51"),
     _copy("JPGExtended.dcm")),
    (Sample("jpeg-lossless-sv1.dcm", "JPEG lossless SV1, RGB", decodes="1.2.840.10008.1.2.4.70"),
     _copy("SC_rgb_jpeg_gdcm.dcm")),
    (Sample("jpeg-ls-lossless.dcm", "JPEG-LS lossless", decodes="1.2.840.10008.1.2.4.80"),
     _copy("MR_small_jpeg_ls_lossless.dcm")),
    (Sample("jpeg-ls-near-lossless.dcm", "JPEG-LS near-lossless 16-bit", decodes="1.2.840.10008.1.2.4.81"),
     _copy("JPEGLSNearLossless_16.dcm")),
    (Sample("j2k-lossless.dcm", "JPEG 2000 lossless", decodes="1.2.840.10008.1.2.4.90"),
     _copy("MR_small_jp2klossless.dcm")),
    (Sample("j2k.dcm", "JPEG 2000", decodes="1.2.840.10008.1.2.4.91"), _copy("JPEG2000.dcm")),
    (Sample("rle.dcm", "RLE lossless", decodes="1.2.840.10008.1.2.5"), _copy("MR_small_RLE.dcm")),
    (Sample("rle-rgb-2frame.dcm", "RLE, RGB, two frames", decodes="1.2.840.10008.1.2.5"),
     _copy("SC_rgb_rle_2frame.dcm")),
    (Sample("j2k-3frame.dcm", "three frames by openjpeg, offset table", decodes="1.2.840.10008.1.2.4.90"),
     _multiframe(JPEG2000Lossless)),
    (Sample("rle-3frame.dcm", "three frames by the RLE encoder, offset table", decodes="1.2.840.10008.1.2.5"),
     _multiframe(RLELossless)),
    # odd but valid encodings
    (Sample("ybr-full-422-native.dcm", "uncompressed YBR_FULL_422 (2/3 of RGB)", decodes="1.2.840.10008.1.2.1"),
     _copy("SC_ybr_full_422_uncompressed.dcm")),
    (Sample("padded-pixel-data.dcm", "pixel data with trailing padding", decodes="1.2.840.10008.1.2.1"),
     _copy("MR_small_padded.dcm")),
    (Sample("odd-length-rgb.dcm", "odd-length pixel data padded to even", decodes="1.2.840.10008.1.2.1"),
     _copy("SC_rgb_small_odd.dcm")),
    (Sample("odd-length-rgb-be.dcm", "odd-length pixel data, big endian", decodes="1.2.840.10008.1.2.2"),
     _copy("SC_rgb_small_odd_big_endian.dcm")),
    (Sample("seg-1bit.dcm", "segmentation, 1-bit pixels", decodes="1.2.840.10008.1.2.1"),
     _copy("liver_1frame.dcm")),
    (Sample("palette.dcm", "palette colour", decodes="1.2.840.10008.1.2.1"), _copy("examples_palette.dcm")),
    (Sample("float-pixel-data.dcm", "float pixel data, 2 frames", decodes="1.2.840.10008.1.2.1"),
     _float_image("FloatPixelData", "<f4")),
    (Sample("double-float-pixel-data.dcm", "double float pixel data, 2 frames", decodes="1.2.840.10008.1.2.1"),
     _float_image("DoubleFloatPixelData", "<f8")),
    (Sample("private-sequences.dcm", "CT with nested private sequences", decodes="1.2.840.10008.1.2.1"),
     _private_sequences),
    # no preamble, no file meta
    (Sample("no-meta-implicit-ct.dcm", "CT without file meta, implicit VR", file_class="dicom-no-meta",
            decodes="1.2.840.10008.1.2"), _no_meta("CT_small.dcm", implicit=True)),
    (Sample("no-meta-explicit-mr.dcm", "MR without file meta, explicit VR", file_class="dicom-no-meta",
            decodes="1.2.840.10008.1.2.1"), _no_meta("MR_small.dcm", implicit=False)),
    (Sample("no-meta-explicit-le.dcm", "RT without file meta, explicit VR LE", file_class="dicom-no-meta"),
     _copy("ExplVR_LitEndNoMeta.dcm")),
    (Sample("no-meta-explicit-be.dcm", "RT without file meta, explicit VR BE", file_class="dicom-no-meta"),
     _copy("ExplVR_BigEndNoMeta.dcm")),
    (Sample("rt-struct-no-meta.dcm", "RT structure set without file meta, implicit VR",
            file_class="dicom-no-meta"), _copy("rtstruct.dcm")),
    # objects without pixel data, and RT
    (Sample("sr-comprehensive.dcm", "structured report"), _copy("test-SR.dcm")),
    (Sample("sr-report.dcm", "structured report"), _copy("reportsi.dcm")),
    (Sample("waveform-ecg.dcm", "12-lead ECG waveform"), _copy("waveform_ecg.dcm")),
    (Sample("key-objects.dcm", "key object selection"), _kos),
    (Sample("presentation-state.dcm", "grayscale softcopy presentation state"), _presentation_state),
    (Sample("encapsulated-pdf.dcm", "encapsulated PDF"), _encapsulated_pdf),
    (Sample("rt-plan.dcm", "RT plan"), _fixed_meta("rtplan.dcm")),
    (Sample("rt-dose.dcm", "RT dose, 5 frames, 32-bit", decodes="1.2.840.10008.1.2"), _fixed_meta("rtdose.dcm")),
    (Sample("rt-dose-rle.dcm", "RT dose, 15 frames, RLE", decodes="1.2.840.10008.1.2.5"),
     _copy("rtdose_rle.dcm")),
    # hostile
    (Sample("truncated-pixel-data.dcm", "cut in the pixel data", frozenset({"truncated"})),
     _copy("MR_truncated.dcm")),
    (Sample("truncated-rt-plan.dcm", "RT plan cut in a sequence", frozenset({"truncated", "meta-mismatch"})),
     _copy("rtplan_truncated.dcm")),
    (Sample("truncated-j2k.dcm", "JPEG 2000 cut in half, at an element boundary", frozenset({"no-pixel-data"})),
     _cut("JPEG2000.dcm", lambda n: n // 2)),
    (Sample("truncated-rle-2frame.dcm", "RLE cut in its second frame", frozenset({"truncated"})),
     _cut("SC_rgb_rle_2frame.dcm", lambda n: n - 300)),
    (Sample("truncated-header.dcm", "cut in the header", frozenset({"truncated", "no-pixel-data"})),
     _cut("CT_small.dcm", lambda n: 700)),
    (Sample("huge-declared-length.dcm", "an element declaring 4 GiB", frozenset({"truncated"})),
     _edited("CT_small.dcm", _declare_length(b"\xe0\x7f\x10\x00OW", 0xFFFFFFF0))),
    (Sample("flipped-rows.dcm", "a bit flip doubling Rows", frozenset({"truncated"})), _edited("CT_small.dcm", _rows)),
    (Sample("broken-jpeg.dcm", "JPEG codestream without its start marker", frozenset({"decode"})),
     _edited("SC_rgb_jpeg_dcmtk.dcm", _broken_codestream)),
    (Sample("broken-j2k.dcm", "JPEG 2000 with a delimiter inside the codestream", frozenset({"decode"})),
     _copy("JPEG2000-embedded-sequence-delimiter.dcm")),
    (Sample("broken-rle.dcm", "RLE with a segment offset inside another segment", frozenset({"decode"})),
     _edited("MR_small_RLE.dcm", _broken_rle)),
    (Sample("bad-offset-table.dcm", "offset table listing 2 of 3 frames", frozenset({"pixel-length"})),
     _bad_offset_table),
    (Sample("executable-preamble.dcm", "a PE header in the preamble (CVE-2019-11687)",
            frozenset({"executable-preamble"})), _edited("CT_small.dcm", _executable_preamble)),
    (Sample("meta-mismatch.dcm", "file meta naming another SOP instance", frozenset({"meta-mismatch"})),
     _copy("rtdose.dcm")),
    (Sample("garbage.dcm", "random bytes named .dcm", frozenset({"not-dicom"}), file_class="other"), _garbage),
    (Sample("empty.dcm", "an empty file named .dcm", frozenset({"truncated"}), file_class="other"), _empty),
    (Sample("no-meta-garbled.dcm", "a bare dataset shifted by one byte", frozenset({"not-dicom"}),
            file_class="other"), _copy("no_meta.dcm")),
]


def build_corpus(dest: Path, names: set[str] | None = None) -> list[Sample]:
    """Write the corpus (or the samples named) into `dest` (created); returns its samples."""
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for sample, make in SAMPLES:
        if names is None or sample.name in names:
            make(dest / sample.name)
            made.append(sample)
    return made
