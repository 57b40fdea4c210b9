"""The manifest: what it records, incremental reuse, signatures, and no Patient ID in clear."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.errors import IntegrityError, SignatureInvalid
from backupctl.manifest import (
    DICOM,
    MANIFEST_NAME,
    OTHER,
    SIGNATURE_NAME,
    build_manifest,
    is_excluded,
    load_manifest,
    parse,
    serialize,
    write_manifest,
)
from backupctl.signing import SigningKey, generate_key

SPEC = ArchiveSpec(patients=3, studies_per_patient=2, series_per_study=2, instances_per_series=5,
                   rows=16, columns=16, seed=5)   # 60 files: enough for the process pool to be used


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("manifest") / "archive"
    written = write_archive(root, SPEC)
    (root / "notes.txt").write_text("not an image")
    (root / "scan.dcm").write_bytes(b"not DICOM at all" * 40)
    return root, written


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return generate_key(tmp_path_factory.mktemp("key") / "signing.key")


def test_every_file_is_listed_with_its_hash_and_dicom_facts(archive: tuple[Path, list], key: SigningKey) -> None:
    root, written = archive
    manifest, stats = build_manifest("j", [root], key, workers=2)
    by_path = manifest.by_path()
    assert stats.files == len(written) + 2 and stats.dicom == len(written) and stats.hashed == stats.files
    for w in written:
        e = by_path[str(w.path)]
        assert e.kind == DICOM and e.sha256 == hashlib.sha256(w.path.read_bytes()).hexdigest()
        assert e.dicom["study"] == w.study_uid and e.dicom["sop_instance"] == w.sop_uid
        assert e.dicom["modality"] == w.modality and e.dicom["transfer_syntax"] == "1.2.840.10008.1.2.1"
    assert by_path[str(root / "scan.dcm")].kind == OTHER       # listed as not DICOM, not dropped
    assert by_path[str(root / "notes.txt")].kind == OTHER
    assert len(manifest.studies()) == SPEC.patients * SPEC.studies_per_patient


def test_pool_and_single_process_agree(archive: tuple[Path, list], key: SigningKey) -> None:
    root, _ = archive
    one, _ = build_manifest("j", [root], key, workers=1)
    two, _ = build_manifest("j", [root], key, workers=2)
    assert serialize(one) == serialize(two)


def test_no_patient_id_in_clear(archive: tuple[Path, list], key: SigningKey, tmp_path: Path) -> None:
    root, written = archive
    manifest, _ = build_manifest("j", [root], key)
    path, _, _ = write_manifest(manifest, tmp_path / "m", key)
    text = gzip.decompress(path.read_bytes()).decode()
    patients = {w.patient_id for w in written}
    assert all(p not in text for p in patients)
    hashes = {e.dicom["patient"] for e in manifest.entries if e.kind == DICOM}
    assert len(hashes) == len(patients)                        # one stable pseudonym per patient


def test_unchanged_files_are_reused_changed_ones_read(archive: tuple[Path, list], key: SigningKey,
                                                       tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(archive[0], root)
    first, _ = build_manifest("j", [root], key)
    again, stats = build_manifest("j", [root], key, previous=first)
    assert stats.hashed == 0 and stats.reused == stats.files and serialize(again) == serialize(first)
    victim, replaced = sorted(root.rglob("*.dcm"))[:2]
    victim.write_bytes(victim.read_bytes() + b"\0\0")
    # same size and mtime but a new inode (a file replaced by a copy): must be read again too
    st = replaced.stat()
    tmp = replaced.with_suffix(".new")
    shutil.copyfile(replaced, tmp)
    os.replace(tmp, replaced)
    os.utime(replaced, ns=(st.st_atime_ns, st.st_mtime_ns))
    third, stats = build_manifest("j", [root], key, previous=first)
    assert stats.hashed == 2 and stats.reused == stats.files - 2
    assert third.by_path()[str(victim)].sha256 == hashlib.sha256(victim.read_bytes()).hexdigest()


def test_signature_protects_the_manifest(archive: tuple[Path, list], key: SigningKey, tmp_path: Path) -> None:
    manifest, _ = build_manifest("j", [archive[0]], key)
    folder = tmp_path / "m"
    write_manifest(manifest, folder, key)
    assert len(load_manifest(folder, key.verify_key).entries) == len(manifest.entries)
    other = generate_key(tmp_path / "other.key")
    with pytest.raises(SignatureInvalid, match="another key"):
        load_manifest(folder, other.verify_key)
    # an entry changed and the manifest re-compressed: the signature no longer covers it
    rows = gzip.decompress((folder / MANIFEST_NAME).read_bytes()).decode().splitlines()
    entry = json.loads(rows[1])
    entry["sha256"] = "0" * 64
    rows[1] = json.dumps(entry)
    (folder / MANIFEST_NAME).write_bytes(gzip.compress("\n".join(rows).encode() + b"\n"))
    with pytest.raises(SignatureInvalid, match="does not (verify|match its signature)"):
        load_manifest(folder, key.verify_key)
    (folder / SIGNATURE_NAME).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        load_manifest(folder, key.verify_key)


def test_truncated_manifest_is_refused_even_before_signatures() -> None:
    with pytest.raises(IntegrityError, match="not a readable manifest"):
        parse(b"\x1f\x8b\x08\x00garbage")


def test_excludes_follow_restic_patterns() -> None:
    assert is_excluded("/a/b/tmp/x.dcm", ["tmp"])                 # relative: any component
    assert is_excluded("/a/b/c.tmp", ["*.tmp"])
    assert not is_excluded("/a/b/c.dcm", ["*.tmp"])
    assert is_excluded("/data/cache/x", ["/data/cache"])          # absolute: anchored
    assert not is_excluded("/other/data/cache", ["/data/cache"])
    assert is_excluded("/data/x/y/z.log", ["/data/**/*.log"])


def _tricky_tree(root: Path, files: int) -> list[Path]:
    """Names whose string order differs from the walk's (a '-' or '.' sorts before '/'), several levels."""
    paths = []
    for i in range(files):
        folder = root / f"p{i % 7}" / ("s" if i % 3 else "s-x") / ("e.1" if i % 2 else "e")
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"f{i:03d}{'-a' if i % 5 == 0 else ''}.bin")
        paths[-1].write_bytes(os.urandom(64 + i))
    (root / "p1-z").write_bytes(b"a file beside the folder p1")
    return paths


def test_an_incremental_manifest_streams_in_walk_order_and_reuses_every_unchanged_file(
        tmp_path: Path, key: SigningKey) -> None:
    from backupctl.manifest import order_key, walk_sources

    root = tmp_path / "tree"
    paths = _tricky_tree(root, 200)          # more than a batch: the pool and the ordered window are used
    walked = [f.path for f in walk_sources([root])]
    assert walked == sorted(walked, key=order_key) and len(walked) == 201
    first, _ = build_manifest("j", [root], key, workers=2)
    assert [e.path for e in first.entries] == walked
    for victim in paths[10:15]:
        victim.write_bytes(b"changed" + victim.read_bytes())
    again, stats = build_manifest("j", [root], key, previous=first, workers=2)
    fresh, _ = build_manifest("j", [root], key, workers=2)
    assert stats.hashed == 5 and stats.reused == 196
    assert serialize(again) == serialize(fresh)      # reused entries land exactly where a full read puts them


def test_a_written_manifest_streams_back_as_written(tmp_path: Path, key: SigningKey) -> None:
    from backupctl.manifest import iter_entries, verified_entries, write_manifest_stream

    root = tmp_path / "tree"
    _tricky_tree(root, 40)
    manifest, _ = build_manifest("j", [root], key)
    written = write_manifest_stream(manifest.header, iter(manifest.entries), tmp_path / "m", key)
    assert written.path.read_bytes() == serialize(manifest) and written.index.files == 41
    header, entries = verified_entries(tmp_path / "m", key.verify_key)
    assert header == manifest.header and list(entries) == manifest.entries
    # the same content again is not rewritten (restic then sees the manifest unmodified)
    mtime = written.path.stat().st_mtime_ns
    again = write_manifest_stream(manifest.header, iter(manifest.entries), tmp_path / "m", key)
    assert not again.rewritten and again.sha256 == written.sha256 and written.path.stat().st_mtime_ns == mtime
    # a truncated manifest is refused, not read as a shorter list
    data = gzip.decompress(written.path.read_bytes()).splitlines(keepends=True)
    written.path.write_bytes(gzip.compress(b"".join(data[:-1])))
    with pytest.raises(IntegrityError):
        list(iter_entries(written.path))
