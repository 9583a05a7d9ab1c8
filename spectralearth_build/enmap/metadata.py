"""Reading and writing EnMAP L2A ``METADATA.XML``.

The parser reads only what the pipeline needs (times, corner polygon, cover percentages, sun
elevation, per-band wavelength/FWHM/gain/offset, projection, datatake and tile) and raises
:class:`MetadataError` naming the file and the missing or malformed element.  Real files are
several MB (per-band RPCs and frame times), so the large ``product/navigation`` and
``product/time`` subtrees are discarded while parsing.  The writer produces the same structure
for synthetic products.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from io import BytesIO
from typing import Any
from xml.dom import minidom

from ..errors import MetadataError

CORNER_FRAMES = ("upper_left", "upper_right", "lower_right", "lower_left")


def parse_time(text: str) -> datetime:
    """Parse ``2017-06-26T10:20:20.999936Z`` (fraction optional) as an aware UTC datetime."""
    text = text.strip().rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


_UTM_RE = re.compile(r"UTM_?Zone_?(\d{1,2})_?(North|South)", re.IGNORECASE)


def projection_to_epsg(projection: str) -> int:
    """``UTM_Zone32_North`` -> 32632.  Raises ValueError for projections the pipeline cannot use."""
    m = _UTM_RE.search(projection)
    if not m:
        raise ValueError(f"unknown map projection {projection!r} (expected UTM_ZoneNN_North/South)")
    zone = int(m.group(1))
    if not 1 <= zone <= 60:
        raise ValueError(f"invalid UTM zone {zone} in {projection!r}")
    return (32600 if m.group(2).lower() == "north" else 32700) + zone


@dataclass(frozen=True)
class ProductMetadata:
    """What METADATA.XML says about one product.  Angles in degrees, covers in percent."""

    name: str
    start_time: datetime
    stop_time: datetime
    corners_lonlat: tuple[tuple[float, float], ...]
    """Scene corners (lon, lat) in the order upper_left, upper_right, lower_right, lower_left."""
    cloud_cover: float
    haze_cover: float
    cirrus_cover: float
    snow_cover: float
    sun_elevation: float
    wavelengths: tuple[float, ...]
    fwhm: tuple[float, ...]
    gains: tuple[float, ...]
    offsets: tuple[float, ...]
    projection: str
    datatake_id: int
    tile_id: int
    number_of_tiles: int
    revision: str
    processing_time: datetime | None = None

    @property
    def band_count(self) -> int:
        return len(self.wavelengths)

    @property
    def epsg(self) -> int:
        return projection_to_epsg(self.projection)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("start_time", "stop_time", "processing_time"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        d["corners_lonlat"] = [list(c) for c in self.corners_lonlat]
        for k in ("wavelengths", "fwhm", "gains", "offsets"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProductMetadata:
        d = dict(d)
        for k in ("start_time", "stop_time", "processing_time"):
            d[k] = datetime.fromisoformat(d[k]) if d.get(k) else None
        d["corners_lonlat"] = tuple(tuple(c) for c in d["corners_lonlat"])
        for k in ("wavelengths", "fwhm", "gains", "offsets"):
            d[k] = tuple(float(v) for v in d[k])
        return cls(**d)


def _text(root: ET.Element, path: str, source: str) -> str:
    el = root.find(path)
    if el is None or el.text is None or not el.text.strip():
        raise MetadataError(f"{source}: METADATA.XML has no <{path}>")
    return el.text.strip()


def _number(root: ET.Element, path: str, source: str, cast: type = float) -> Any:
    text = _text(root, path, source)
    try:
        return cast(text)
    except ValueError as exc:
        raise MetadataError(f"{source}: <{path}> is not a number: {text!r}") from exc


_SKIP = {"navigation", "time", "bandStatistics"}


def _parse_tree(data: bytes, source: str) -> ET.Element:
    """Parse, dropping the bulky subtrees of ``product`` as soon as they are complete."""
    try:
        parser = ET.iterparse(BytesIO(data), events=("start", "end"))
        stack: list[ET.Element] = []
        root: ET.Element | None = None
        for event, el in parser:
            if event == "start":
                if root is None:
                    root = el
                stack.append(el)
            else:
                stack.pop()
                if el.tag in _SKIP and stack and stack[-1].tag == "product":
                    stack[-1].remove(el)
    except ET.ParseError as exc:
        raise MetadataError(f"{source}: METADATA.XML is not well-formed XML ({exc})") from exc
    if root is None:
        raise MetadataError(f"{source}: METADATA.XML is empty")
    return root


def parse_metadata(data: bytes, source: str = "METADATA.XML") -> ProductMetadata:
    """Parse the bytes of an L2A METADATA.XML; ``source`` names the file in error messages."""
    if not data.strip():
        raise MetadataError(f"{source}: METADATA.XML is empty")
    root = _parse_tree(data, source)
    if root.tag != "level_X":
        raise MetadataError(f"{source}: root element is <{root.tag}>, expected <level_X>")

    corners: dict[str, tuple[float, float]] = {}
    for pt in root.iterfind("base/spatialCoverage/boundingPolygon/point"):
        frame = (pt.findtext("frame") or "").strip()
        if frame in CORNER_FRAMES and frame not in corners:
            corners[frame] = (
                _number(pt, "longitude", source),
                _number(pt, "latitude", source),
            )
    missing = [f for f in CORNER_FRAMES if f not in corners]
    if missing:
        raise MetadataError(f"{source}: boundingPolygon lacks corner point(s) {missing}")

    wavelengths, fwhm, gains, offsets = [], [], [], []
    bands = root.findall("specific/bandCharacterisation/bandID")
    if not bands:
        raise MetadataError(f"{source}: METADATA.XML has no <specific/bandCharacterisation/bandID>")
    numbered = []
    for b in bands:
        try:
            number = int(b.get("number", "0"))
        except ValueError as exc:
            raise MetadataError(f"{source}: bandID has a non-integer number") from exc
        numbered.append((number, b))
    numbered.sort(key=lambda nb: nb[0])
    for number, b in numbered:
        where = f"{source} band {number}"
        wavelengths.append(_number(b, "wavelengthCenterOfBand", where))
        fwhm.append(_number(b, "FWHMOfBand", where))
        gains.append(_number(b, "GainOfBand", where))
        offsets.append(_number(b, "OffsetOfBand", where))

    processing = root.findtext("specific/processingDateTime")
    try:
        return ProductMetadata(
            name=_text(root, "metadata/name", source),
            start_time=parse_time(_text(root, "base/temporalCoverage/startTime", source)),
            stop_time=parse_time(_text(root, "base/temporalCoverage/stopTime", source)),
            corners_lonlat=tuple(corners[f] for f in CORNER_FRAMES),
            cloud_cover=_number(root, "specific/qualityFlag/cloudCover", source),
            haze_cover=_number(root, "specific/qualityFlag/hazeCover", source),
            cirrus_cover=_number(root, "specific/qualityFlag/cirrusCover", source),
            snow_cover=_number(root, "specific/qualityFlag/snowCover", source),
            sun_elevation=_number(root, "specific/sunElevationAngle/center", source),
            wavelengths=tuple(wavelengths),
            fwhm=tuple(fwhm),
            gains=tuple(gains),
            offsets=tuple(offsets),
            projection=_text(root, "product/ortho/projection", source),
            datatake_id=_number(root, "specific/datatakeID", source, int),
            tile_id=_number(root, "specific/tileID", source, int),
            number_of_tiles=_number(root, "specific/numberOfTiles", source, int),
            revision=_text(root, "base/revision", source),
            processing_time=parse_time(processing) if processing and processing.strip() else None,
        )
    except ValueError as exc:
        if isinstance(exc, MetadataError):
            raise
        raise MetadataError(f"{source}: malformed time value ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Writing (synthetic products)
# ---------------------------------------------------------------------------------------------
def _sub(parent: ET.Element, tag: str, text: Any = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = str(text)
    return el


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def metadata_to_xml(
    meta: ProductMetadata,
    center_lonlat: tuple[float, float],
    file_names: list[str],
    width: int,
    height: int,
) -> bytes:
    """Serialise ``meta`` in the L2A METADATA.XML structure (the subset the readers use)."""
    root = ET.Element("level_X")
    md = _sub(root, "metadata")
    schema = _sub(md, "schema")
    _sub(schema, "versionSchema", "00.06.00")
    _sub(schema, "name", "metadata_Lx_00-06-00.xsd")
    _sub(schema, "processingLevel", "L2A")
    _sub(md, "name", meta.name)
    _sub(
        md, "comment", f"EnMAP Level 2A Product of datatake {meta.datatake_id}, tile {meta.tile_id}"
    )
    proc = _sub(root, "processing")
    _sub(proc, "productFormat", "GeoTIFF+Metadata")
    _sub(proc, "mapProjection", "UTM_Zone_of_Scene_Center")
    _sub(proc, "correctionType", "Land_Mode")

    base = _sub(root, "base")
    poly = _sub(_sub(base, "spatialCoverage"), "boundingPolygon")
    pts = [*zip(CORNER_FRAMES, meta.corners_lonlat), (CORNER_FRAMES[0], meta.corners_lonlat[0])]
    pts.append(("center", center_lonlat))
    for frame, (lon, lat) in pts:
        p = _sub(poly, "point")
        _sub(p, "frame", frame)
        _sub(p, "latitude", f"{lat:.7f}", unit="DEG")
        _sub(p, "longitude", f"{lon:.7f}", unit="DEG")
        _sub(p, "utcTime", _iso(meta.start_time))
    tc = _sub(base, "temporalCoverage")
    _sub(tc, "startTime", _iso(meta.start_time))
    _sub(tc, "stopTime", _iso(meta.stop_time))
    _sub(base, "revision", meta.revision)
    _sub(base, "format", "GeoTIFF")
    _sub(base, "level", "L2A")

    spec = _sub(root, "specific")
    qf = _sub(spec, "qualityFlag")
    _sub(qf, "cloudCover", f"{meta.cloud_cover:g}")
    _sub(qf, "hazeCover", f"{meta.haze_cover:g}")
    _sub(qf, "cirrusCover", f"{meta.cirrus_cover:g}")
    _sub(qf, "snowCover", f"{meta.snow_cover:g}")
    _sub(qf, "cloudShadow", "0")
    if meta.processing_time is not None:
        _sub(spec, "processingDateTime", _iso(meta.processing_time))
    _sub(spec, "mission", "ENMAP")
    _sub(spec, "datatakeID", f"{meta.datatake_id:010d}")
    _sub(spec, "numberOfSWIRBands", str(sum(w > 1000 for w in meta.wavelengths)))
    _sub(spec, "numberOfVNIRBands", str(sum(w <= 1000 for w in meta.wavelengths)))
    _sub(spec, "productType", "L2A")
    _sub(spec, "backgroundValue", "-32768")
    _sub(spec, "tileID", f"{meta.tile_id:02d}")
    _sub(spec, "numberOfTiles", f"{meta.number_of_tiles:02d}")
    _sub(spec, "widthOfScene", str(width))
    _sub(spec, "heightOfScene", str(height))
    sun = _sub(spec, "sunElevationAngle")
    for frame in (*CORNER_FRAMES, "center"):
        _sub(sun, frame, f"{meta.sun_elevation:.6f}")
    _sub(spec, "pixelSize", "30")
    bc = _sub(spec, "bandCharacterisation")
    for i, (wl, fw, g, o) in enumerate(
        zip(meta.wavelengths, meta.fwhm, meta.gains, meta.offsets), start=1
    ):
        b = _sub(bc, "bandID", number=str(i))
        _sub(b, "wavelengthCenterOfBand", f"{wl:g}")
        _sub(b, "FWHMOfBand", f"{fw:g}")
        _sub(b, "GainOfBand", f"{g:g}")
        _sub(b, "OffsetOfBand", f"{o:g}")

    product = _sub(root, "product")
    ortho = _sub(product, "ortho")
    _sub(ortho, "projection", meta.projection)
    _sub(ortho, "resolution", "30")
    _sub(ortho, "resampling", "bilinear")
    pfi = _sub(product, "productFileInformation")
    for i, fname in enumerate(file_names, start=1):
        f = _sub(pfi, "file", number=str(i))
        _sub(f, "name", fname)
        _sub(f, "version", meta.revision)
    raw = ET.tostring(root, encoding="utf-8")
    return minidom.parseString(raw).toprettyxml(indent="  ", encoding="utf-8")
