"""Finding EnMAP L2A products in a folder tree, as the portal delivers them.

A product is a group of files sharing one product id (``ENMAP01-____L2A-DT..._V..._...Z``).  They
may sit in a product folder, flat beside other products' files, inside a ``.ZIP`` holding the
product folder, or inside a ``.tar.gz`` holding several such ZIPs.  Nothing is unpacked: archive
members are listed with :mod:`zipfile`/:mod:`tarfile` and later read through GDAL's virtual file
systems (``/vsizip/``, ``/vsitar/``), so a product's location is a :class:`ProductSource` whose
``gdal_path(suffix)`` works with rasterio and whose ``read_bytes(suffix)`` reads small files.

Crafted inputs stay harmless: member names are only looked up inside their archive (``../`` or
absolute names never reach the file system), archive symlinks are ignored, symlinks under the
root that lead outside it are reported instead of followed, small files are read only up to
:data:`MAX_SMALL_FILE_BYTES`, and an archive whose members declare more than
:data:`MAX_EXPANSION` times its own size (a gzip or ZIP bomb) or more than
:data:`MAX_MEMBERS` members is reported as unreadable before it is decompressed.

Files named only by their suffix (``METADATA.xml``, ``SPECTRAL_IMAGE.TIF``) inside a folder named
like a product belong to that product.  Containers that cannot be listed (zero-byte or corrupt
archives) are returned as :class:`DiscoveryProblem` entries, never raised.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .naming import ProductName, ProductNameError

IMAGE = "SPECTRAL_IMAGE"
METADATA = "METADATA"
QUALITY_LAYERS = ("CLASSES", "CLOUD", "CLOUDSHADOW", "HAZE", "CIRRUS", "SNOW", "TESTFLAGS")
KNOWN_SUFFIXES = {
    METADATA,
    IMAGE,
    "SPECTRAL_IMAGE_COG",
    "QL_PIXELMASK",
    "QL_VNIR",
    "QL_SWIR",
    *(f"QL_QUALITY_{q}" for q in QUALITY_LAYERS),
}
MAX_SMALL_FILE_BYTES = 64 * 2**20
"""Largest METADATA.XML (or other small file) read into memory; real ones are about 4 MB."""
MAX_EXPANSION = 100
"""Largest ratio of an archive's declared content to its size (products are compressed already:
real deliveries are close to 1); checked once the content exceeds :data:`EXPANSION_FLOOR`."""
EXPANSION_FLOOR = 64 * 2**20
SYMLINK_OUTSIDE = "symlink outside --tiles"
MAX_MEMBERS = 100_000
"""Most members listed from one archive."""


class FileTooLargeError(OSError):
    """A small product file (METADATA.XML) is larger than :data:`MAX_SMALL_FILE_BYTES`."""


class ArchiveBombError(OSError):
    """An archive declares far more content than its size allows (see :data:`MAX_EXPANSION`)."""


_DATA_EXTS = {".tif", ".tiff", ".xml", ".jp2", ".bsq", ".bil", ".bip"}
_ZIP_EXTS = (".zip",)
_TAR_EXTS = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class Container:
    """One archive level of a product's location.

    ``kind`` is ``"zip"`` or ``"tar"``; ``path`` is a filesystem path for the outermost level and
    a member name inside the previous level otherwise.
    """

    kind: str
    path: str
    offset: int | None = None
    """Byte offset of this member's data inside the previous level's (uncompressed) tar stream,
    set when GDAL cannot address the member by name (PAX long names: ``/vsitar/`` reads only
    the truncated ustar name); GDAL then reads it as ``/vsisubfile/``."""
    size: int | None = None


@dataclass(frozen=True)
class ProductSource:
    """Where one product's files are: a folder, or a folder inside (nested) archives."""

    product_id: str
    containers: tuple[Container, ...]
    """Archive chain from the outermost file inward; empty for plain folders."""
    folder: str
    """Folder holding the files: a filesystem path, or a member path in the innermost archive."""
    files: tuple[tuple[str, str], ...]
    """``(SUFFIX, file name)`` pairs, e.g. ``("SPECTRAL_IMAGE", "ENMAP01-...-SPECTRAL_IMAGE.TIF")``.
    """

    @property
    def name(self) -> ProductName:
        return ProductName.parse(self.product_id)

    @property
    def location(self) -> str:
        """A human-readable location for reports: the outer file and the path inside it."""
        if not self.containers:
            return self.folder
        inner = [c.path for c in self.containers[1:]]
        return (
            "!".join([self.containers[0].path, *inner, self.folder])
            if self.folder
            else "!".join([self.containers[0].path, *inner])
        )

    def file_name(self, suffix: str) -> str | None:
        for s, n in self.files:
            if s == suffix:
                return n
        return None

    def has(self, suffix: str) -> bool:
        return self.file_name(suffix) is not None

    def gdal_path(self, suffix: str) -> str:
        """A path GDAL/rasterio opens.

        For example ``/vsizip//vsitar//a.tar.gz/p.ZIP/P/P-QL_QUALITY_CLASSES.TIF``.
        """
        name = self.file_name(suffix)
        if name is None:
            raise FileNotFoundError(f"{self.location}: product has no {suffix} file")
        if not self.containers:
            return os.path.join(self.folder, name)
        vsi = {"zip": "/vsizip/", "tar": "/vsitar/"}
        outer = self.containers[0]
        file_path, path = outer.path, vsi[outer.kind] + outer.path
        for c in self.containers[1:]:
            if c.offset is not None and c.size is not None:
                stream = file_path
                if stream.lower().endswith((".gz", ".tgz")):
                    stream = "/vsigzip/" + stream
                file_path = f"/vsisubfile/{c.offset}_{c.size},{stream}"
                path = vsi[c.kind] + "{" + file_path + "}"
            else:
                file_path = path + "/" + c.path
                path = vsi[c.kind] + file_path
        inner = posixpath.join(self.folder, name) if self.folder else name
        return path + "/" + inner

    def read_bytes(self, suffix: str) -> bytes:
        """Read a (small) file of the product, through the archive chain if there is one."""
        name = self.file_name(suffix)
        if name is None:
            raise FileNotFoundError(f"{self.location}: product has no {suffix} file")
        if not self.containers:
            path = Path(self.folder, name)
            _check_small(path.stat().st_size, str(path))
            return path.read_bytes()
        member = posixpath.join(self.folder, name) if self.folder else name
        with _open_chain(self.containers) as opener:
            return opener(member)


class _ChainReader:
    """Context manager opening an archive chain and returning a member-reader function."""

    def __init__(self, containers: tuple[Container, ...]):
        self.containers = containers
        self._closers: list[object] = []

    def __enter__(self):  # noqa: ANN204
        handle = None
        for c in self.containers:
            if handle is None:
                if c.kind == "zip":
                    handle = zipfile.ZipFile(c.path)
                else:
                    handle = tarfile.open(c.path)
            else:
                fileobj = _member_file(handle, c.path)
                handle = (
                    zipfile.ZipFile(fileobj) if c.kind == "zip" else tarfile.open(fileobj=fileobj)
                )
            self._closers.append(handle)
        final = handle

        def read(member: str) -> bytes:
            return _read_member(final, member)

        return read

    def __exit__(self, *exc: object) -> None:
        for h in reversed(self._closers):
            h.close()  # type: ignore[attr-defined]


def _open_chain(containers: tuple[Container, ...]) -> _ChainReader:
    return _ChainReader(containers)


def _member_file(handle: zipfile.ZipFile | tarfile.TarFile, member: str) -> IO[bytes]:
    """A seekable file object for an archive member, streamed rather than loaded whole.

    Products are hundreds of MB: a ZIP inside a tar.gz is opened in place so that reading its
    METADATA.XML decompresses up to it instead of copying the whole ZIP into memory.
    """
    if isinstance(handle, zipfile.ZipFile):
        f: IO[bytes] = handle.open(member)
        if not f.seekable():  # stored members of old Python versions; fall back to memory
            return io.BytesIO(f.read())
        return f
    ext = handle.extractfile(member)
    if ext is None:
        raise FileNotFoundError(member)
    return ext


def _check_small(size: int, where: str) -> None:
    if size > MAX_SMALL_FILE_BYTES:
        raise FileTooLargeError(
            f"{where}: {size} bytes, more than the {MAX_SMALL_FILE_BYTES} read into memory"
        )


def _read_member(handle: zipfile.ZipFile | tarfile.TarFile, member: str) -> bytes:
    if isinstance(handle, zipfile.ZipFile):
        _check_small(handle.getinfo(member).file_size, member)
        return handle.read(member)  # reads no more than the declared size
    _check_small(handle.getmember(member).size, member)
    f = handle.extractfile(member)
    if f is None:
        raise FileNotFoundError(member)
    return f.read()


@dataclass(frozen=True)
class DiscoveryProblem:
    """A file that looks like product data but could not be listed or grouped."""

    path: str
    reason: str
    product_id: str | None = None
    category: str = "unreadable archive"
    """The catalog ``reason``: ``"unreadable archive"`` or ``"symlink outside --tiles"``."""


def _suffix_key(file_name: str) -> str | None:
    """Normalised suffix of a product file, or None for files that are not product data."""
    stem, ext = _split_ext(file_name)
    if ext.lower() not in _DATA_EXTS:
        return None
    suffix = ProductName.suffix_of(stem)
    if suffix is None:
        upper = stem.upper()
        suffix = upper if upper in KNOWN_SUFFIXES else None
    if suffix is None:
        return None
    return IMAGE if suffix == "SPECTRAL_IMAGE_COG" else suffix


def _split_ext(name: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(name)
    if ext.lower() == ".xml" and stem.lower().endswith(".aux"):
        return name, ".aux.xml"  # GDAL side-car, not product data
    return stem, ext


def _product_id_for(file_name: str, folder: str) -> str | None:
    try:
        return ProductName.parse(_split_ext(file_name)[0].rsplit("-", 1)[0]).stem
    except ProductNameError:
        pass
    try:
        return ProductName.parse(_split_ext(file_name)[0]).stem
    except ProductNameError:
        pass
    try:
        return ProductName.parse(posixpath.basename(folder.rstrip("/"))).stem
    except ProductNameError:
        return None


def _group(
    entries: list[tuple[str, str]],
    containers: tuple[Container, ...],
) -> list[ProductSource]:
    """Group ``(folder, file name)`` entries into products."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for folder, fname in sorted(entries):
        suffix = _suffix_key(fname)
        if suffix is None:
            continue
        pid = _product_id_for(fname, folder)
        if pid is None:
            continue
        files = groups.setdefault((folder, pid), {})
        # Prefer the plain GeoTIFF over the COG variant when both are present.
        if suffix in files and "COG" in fname.upper():
            continue
        files[suffix] = fname
    return [
        ProductSource(pid, containers, folder, tuple(sorted(files.items())))
        for (folder, pid), files in sorted(groups.items())
    ]


def _is_zip(name: str) -> bool:
    return name.lower().endswith(_ZIP_EXTS)


def _is_tar(name: str) -> bool:
    return name.lower().endswith(_TAR_EXTS)


def _archive_members(
    handle: zipfile.ZipFile | tarfile.TarFile, archive_bytes: int
) -> Iterator[tuple[str, int, int | None]]:
    """``(name, size, data offset)`` of the regular files of an archive.

    The offset is given only for tar members with a PAX long name.  Symlinks and other special
    members are skipped; an archive declaring more than :data:`MAX_EXPANSION` x
    ``archive_bytes`` or :data:`MAX_MEMBERS` members raises :class:`ArchiveBombError` as soon
    as its headers say so (a tar is listed lazily, so the bytes of a bomb are never
    decompressed).
    """
    limit = max(EXPANSION_FLOOR, MAX_EXPANSION * archive_bytes)
    total = count = 0

    def account(size: int) -> None:
        nonlocal total, count
        total += size
        count += 1
        if total > limit or count > MAX_MEMBERS:
            raise ArchiveBombError(
                f"members declare {total} bytes in {count} files for {archive_bytes} archive "
                f"bytes (more than {MAX_EXPANSION}x or {MAX_MEMBERS} files: an archive bomb?)"
            )

    if isinstance(handle, zipfile.ZipFile):
        for info in handle.infolist():
            if not info.is_dir():
                account(info.file_size)
                yield info.filename, info.file_size, None
    else:
        for tinfo in handle:
            account(tinfo.size)
            if tinfo.isfile():
                pax = "path" in tinfo.pax_headers
                yield tinfo.name, tinfo.size, tinfo.offset_data if pax else None


def _scan_archive(
    handle: zipfile.ZipFile | tarfile.TarFile,
    containers: tuple[Container, ...],
    sources: list[ProductSource],
    problems: list[DiscoveryProblem],
    archive_bytes: int,
) -> None:
    entries: list[tuple[str, str]] = []
    for member, size, offset in _archive_members(handle, archive_bytes):
        folder, fname = posixpath.split(member)
        if _is_zip(fname) or _is_tar(fname):
            kind = "zip" if _is_zip(fname) else "tar"
            where = "!".join([containers[0].path, *(c.path for c in containers[1:]), member])
            try:
                fileobj = _member_file(handle, member)
                inner = zipfile.ZipFile(fileobj) if kind == "zip" else tarfile.open(fileobj=fileobj)
            except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
                problems.append(
                    DiscoveryProblem(where, f"unreadable archive: {exc}", _maybe_id(fname))
                )
                continue
            with inner:
                level = Container(kind, member, offset, size if offset is not None else None)
                _scan_archive(inner, (*containers, level), sources, problems, size)
        else:
            entries.append((folder, fname))
    sources.extend(_group(entries, containers))


def _maybe_id(name: str) -> str | None:
    try:
        return ProductName.parse(name).stem
    except ProductNameError:
        return None


def _resolves_inside(path: str, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root)


def discover_products(root: str | Path) -> tuple[list[ProductSource], list[DiscoveryProblem]]:
    """Find every product under ``root`` (a folder, or a single archive file).

    Returns the products in a deterministic order and the containers that could not be read.
    """
    root = Path(root)
    sources: list[ProductSource] = []
    problems: list[DiscoveryProblem] = []
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        walk: list[tuple[str, list[str]]] = [(str(root.parent), [root.name])]
    else:
        walk = []
        for dirpath, dirnames, filenames in os.walk(root):  # symlinked folders: not followed
            dirnames.sort()
            for d in dirnames:
                link = os.path.join(dirpath, d)
                if os.path.islink(link) and not _resolves_inside(link, root.resolve()):
                    problems.append(
                        DiscoveryProblem(
                            link,
                            f"symlink outside --tiles: {os.readlink(link)}",
                            category=SYMLINK_OUTSIDE,
                        )
                    )
            walk.append((dirpath, sorted(filenames)))
    entries: list[tuple[str, str]] = []
    inside = root.resolve() if root.is_dir() else root.parent.resolve()
    for dirpath, filenames in walk:
        for fname in filenames:
            path = os.path.join(dirpath, fname)
            if os.path.islink(path) and not _resolves_inside(path, inside):
                problems.append(
                    DiscoveryProblem(
                        path,
                        f"symlink outside --tiles: {os.readlink(path)}",
                        _product_id_for(fname, dirpath),
                        SYMLINK_OUTSIDE,
                    )
                )
                continue
            if _is_zip(fname) or _is_tar(fname):
                kind = "zip" if _is_zip(fname) else "tar"
                try:
                    handle = zipfile.ZipFile(path) if kind == "zip" else tarfile.open(path)
                except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
                    problems.append(
                        DiscoveryProblem(
                            path, f"unreadable {kind} archive: {exc}", _maybe_id(fname)
                        )
                    )
                    continue
                try:
                    with handle:
                        size = os.path.getsize(path)
                        _scan_archive(handle, (Container(kind, path),), sources, problems, size)
                except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
                    problems.append(
                        DiscoveryProblem(
                            path, f"unreadable {kind} archive: {exc}", _maybe_id(fname)
                        )
                    )
            else:
                entries.append((dirpath, fname))
    sources.extend(_group(entries, ()))
    sources.sort(key=lambda s: (s.product_id, s.location))
    return sources, problems
