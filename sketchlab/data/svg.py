"""SVG drawings as polylines: every path and basic shape, transforms applied, curves flattened to a tolerance.

Parsing SVG geometry (path data with all its commands, arcs, basic shapes, nested ``transform`` s, ``viewBox``,
``<use>``, CSS styles, units) is left to `svgelements <https://github.com/meerk40t/svgelements>`_, the parser
that vpype and MeerK40t build on. Two things are done here around it:

- **Safety first.** Before svgelements sees a file, it is parsed with ``defusedxml`` and refused if it
  declares a DOCTYPE or entities (entity expansion bombs, external entities), if its ``<use>`` references
  loop or expand past :data:`MAX_ELEMENTS` elements, or if it exceeds :data:`MAX_BYTES`. svgelements itself
  reads nothing beyond the bytes it is given (``<image>`` files are never loaded here).
- **Honest errors.** svgelements skips what it does not understand without a word (a path command ``X``,
  a transform ``bogus(3)``); this module checks path data and transforms first, so such a file is skipped
  with a reason instead of being converted into a different drawing.

Known gap: svgelements places a ``<use>`` d ``<symbol>`` without its own ``viewBox`` scaling.

Each subpath becomes one stroke, in document order; a closed subpath (``Z``) ends at its first point.
Coordinates stay in SVG user units with y pointing down, sketchlab's convention.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError, tostring

import numpy as np
import svgelements as se
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

MAX_BYTES = 20 * 1024 * 1024
MAX_ELEMENTS = 200_000  # after inlining <use> references
MAX_DEPTH = 24  # Bézier subdivisions: 2**24 pieces per curve is far below any sane tolerance

SVG_NS = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# The path commands of SVG 1.1/2 (M L H V C S Q T A Z), plus the digits, signs, exponents and separators of numbers.
_PATH_DATA = re.compile(r"[MmLlHhVvCcSsQqTtAaZz0-9eE+\-.,\s]*")
_TRANSFORM = re.compile(r"\s*(?:(?:matrix|translate|scale|rotate|skewX|skewY)\s*\([^()]*\)[\s,]*)*")
_TRANSFORM_NAME = re.compile(r"([A-Za-z_-]+)\s*\(")


class SvgError(ValueError):
    """An SVG file that cannot be converted; the message says why."""


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _check_path_data(d: str) -> None:
    if not _PATH_DATA.fullmatch(d):
        bad = sorted({c for c in d if not _PATH_DATA.fullmatch(c)})
        letters = [c for c in bad if c.isalpha()]
        what = (f"unknown path command(s) {', '.join(repr(c) for c in letters)}" if letters
                else f"unexpected character(s) {', '.join(repr(c) for c in bad)}")
        raise SvgError(f"{what} in <path d=\"{d[:60]}{'...' if len(d) > 60 else ''}\"> "
                       "(SVG path commands are M L H V C S Q T A Z, either case)")


def _check_transform(value: str) -> None:
    if not _TRANSFORM.fullmatch(value):
        names = [n for n in _TRANSFORM_NAME.findall(value)
                 if n not in ("matrix", "translate", "scale", "rotate", "skewX", "skewY")]
        what = f"unknown transform {', '.join(repr(n) for n in names)}" if names else "malformed transform"
        raise SvgError(f"{what} in transform=\"{value[:60]}\" "
                       "(SVG transforms are matrix, translate, scale, rotate, skewX, skewY)")


def _href(element: Element) -> str | None:
    ref = element.get("href") or element.get(XLINK_HREF)
    return ref[1:] if ref and ref.startswith("#") else None


def _check_uses(root: Element) -> None:
    """Refuse ``<use>`` references that loop, or that expand the document past :data:`MAX_ELEMENTS`."""
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(el: Element) -> int:
        key = id(el)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise SvgError(f"<use> references loop back to element id={el.get('id')!r}")
        active.add(key)
        total = 1 + sum(size(child) for child in el)
        if _local(el.tag) == "use" and (target := by_id.get(_href(el) or "")) is not None:
            total += size(target)
        active.discard(key)
        sizes[key] = total
        if total > MAX_ELEMENTS:
            raise SvgError(f"its <use> references expand it past {MAX_ELEMENTS:,} elements")
        return total

    try:
        size(root)
    except RecursionError:
        raise SvgError("its elements nest too deeply") from None


def check_svg(data: bytes) -> Element:
    """Parse ``data`` safely and check it is an SVG this module can convert faithfully; the root element.

    Raises :class:`SvgError` for malformed XML, DOCTYPE/entity declarations, a root that is not ``<svg>``,
    path data with unknown commands, unknown transforms and runaway ``<use>`` references.
    """
    if len(data) > MAX_BYTES:
        raise SvgError(f"file is {len(data):,} bytes, over the {MAX_BYTES:,} byte limit for one drawing")
    try:
        root = defused_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise SvgError(f"DOCTYPE and ENTITY declarations are refused, as they can expand without bound or "
                       f"read other files ({type(exc).__name__})") from None
    except ParseError as exc:
        raise SvgError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "svg":
        raise SvgError(f"the root element is <{_local(root.tag)}>, not <svg>")
    for el in root.iter():
        if _local(el.tag) == "path":
            _check_path_data(el.get("d", ""))
        for key in ("transform", "gradientTransform", "patternTransform"):
            if key in el.attrib:
                _check_transform(el.attrib[key])
    _check_uses(root)
    return root


def _symbols_into_defs(root: Element) -> bool:
    """Move ``<symbol>`` s that lie outside ``<defs>`` into one: svgelements would draw them in place as well as
    where ``<use>`` puts them, while SVG draws a symbol only where it is used. Returns whether any moved."""
    parents = {child: parent for parent in root.iter() for child in parent}
    loose = [el for el in root.iter() if _local(el.tag) == "symbol" and _local(parents[el].tag) != "defs"]
    if not loose:
        return False
    defs = Element(f"{SVG_NS}defs")
    for el in loose:
        parents[el].remove(el)
        defs.append(el)
    root.insert(0, defs)
    return True


def _flatten(control: np.ndarray, tolerance: float) -> np.ndarray:
    """Points along a Bézier curve of any degree (its (k+1, 2) control points), the start point excluded.

    Adaptive de Casteljau subdivision: a piece is replaced by its chord once every control point lies within
    ``tolerance`` of the chord segment. The curve lies in the convex hull of its control points, and the
    distance to a segment is convex, so the polyline is then within ``tolerance`` of the curve everywhere.
    """
    out: list[np.ndarray] = []
    stack = [(control, 0)]
    while stack:
        pts, depth = stack.pop()
        start, end = pts[0], pts[-1]
        chord = end - start
        length2 = float(chord @ chord)
        inner = pts[1:-1]
        if length2 > 0:
            t = np.clip((inner - start) @ chord / length2, 0.0, 1.0)
            dist = np.hypot(*(inner - start - t[:, None] * chord).T)
        else:
            dist = np.hypot(*(inner - start).T)
        if depth >= MAX_DEPTH or not len(dist) or float(dist.max()) <= tolerance:
            out.append(end)
            continue
        # de Casteljau at t = 1/2: the left halves' first points and the right halves' last points
        left, right, level = [pts[0]], [pts[-1]], pts
        while len(level) > 1:
            level = (level[:-1] + level[1:]) / 2
            left.append(level[0])
            right.append(level[-1])
        stack.append((np.array(right[::-1]), depth + 1))  # popped after the left half
        stack.append((np.array(left), depth + 1))
    return np.array(out).reshape(-1, 2)


def _xy(point: se.Point) -> np.ndarray:
    return np.array([float(point.x), float(point.y)])


def _segments_to_strokes(path: se.Path, tolerance: float) -> Iterator[np.ndarray]:
    """One (K, 2) polyline per subpath of a reified path."""
    current: list[np.ndarray] = []
    for seg in path:
        if isinstance(seg, se.Move):
            if len(current) > 1:
                yield np.vstack(current)
            current = [_xy(seg.end)[None]]
            continue
        if not current:  # a path that does not begin with a move starts where its first segment does
            current = [_xy(seg.start)[None]]
        if isinstance(seg, (se.Line, se.Close)):  # Close is a Line back to the subpath's start
            if seg.end is not None:
                current.append(_xy(seg.end)[None])
        elif isinstance(seg, se.QuadraticBezier):
            current.append(_flatten(np.array([_xy(seg.start), _xy(seg.control), _xy(seg.end)]), tolerance))
        elif isinstance(seg, se.CubicBezier):
            current.append(_flatten(np.array([_xy(seg.start), _xy(seg.control1), _xy(seg.control2),
                                              _xy(seg.end)]), tolerance))
        elif isinstance(seg, se.Arc):
            for cubic in seg.as_cubic_curves():
                current.append(_flatten(np.array([_xy(cubic.start), _xy(cubic.control1), _xy(cubic.control2),
                                                  _xy(cubic.end)]), tolerance))
        else:
            raise SvgError(f"unsupported path segment {type(seg).__name__}")
    if len(current) > 1:
        yield np.vstack(current)


def _drop_repeats(line: np.ndarray) -> np.ndarray:
    keep = np.concatenate([[True], np.any(np.diff(line, axis=0) != 0, axis=1)])
    return line[keep]


def parse_svg(data: bytes, tolerance: float = 0.5, size: float | None = None) -> list[np.ndarray]:
    """The strokes of one SVG drawing: (K, 2) float arrays of absolute x, y, y down, in document order.

    ``tolerance`` bounds how far the polylines stray from the curves. With ``size`` it is measured in the
    units of the drawing scaled so its longest side is ``size`` (as the converter will scale it); without,
    in the SVG's own user units (px, after ``viewBox`` and ``transform`` s). Raises :class:`SvgError`.
    """
    if not tolerance > 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance}")
    root = check_svg(data)
    if _symbols_into_defs(root):
        data = tostring(root)
    try:
        document = se.SVG.parse(io.BytesIO(data), reify=True, on_error="raise")
        shapes = [abs(se.Path(el)) for el in document.elements() if isinstance(el, se.Shape)]
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError,
            RecursionError) as exc:
        raise SvgError(f"malformed SVG geometry ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})") from None
    if size is not None:
        boxes = [box for box in (shape.bbox() for shape in shapes) if box is not None]
        if boxes:
            x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
            extent = max(x1 - x0, y1 - y0)
            if extent > 0:
                tolerance = tolerance * extent / size
    strokes = []
    try:
        for shape in shapes:
            strokes.extend(_drop_repeats(line) for line in _segments_to_strokes(shape, tolerance))
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        if isinstance(exc, SvgError):
            raise
        raise SvgError(f"malformed SVG geometry ({type(exc).__name__}: {exc})") from None
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        skipped = sorted({_local(el.tag) for el in root.iter()} & {"text", "image", "tspan", "foreignObject"})
        raise SvgError("no drawable elements (path, line, polyline, polygon, rect, circle, ellipse)"
                       + (f"; <{'>, <'.join(skipped)}> are not converted" if skipped else ""))
    if not all(np.isfinite(s).all() for s in strokes):
        raise SvgError("its geometry has NaN or infinite coordinates")
    return strokes


def read_svg(path: str | os.PathLike, tolerance: float = 0.5, size: float | None = None) -> list[np.ndarray]:
    """:func:`parse_svg` of a file (read only as bytes: nothing it names is opened)."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise SvgError(f"file is {path.stat().st_size:,} bytes, over the {MAX_BYTES:,} byte limit for one drawing")
    return parse_svg(path.read_bytes(), tolerance, size)
