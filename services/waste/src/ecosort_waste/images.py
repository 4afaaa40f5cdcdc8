"""Judging and sanitising uploaded photos.

Everything here works on bytes: the file name and the declared content type are never trusted.
The result is always a metadata-free sRGB JPEG no larger than ``MAX_LONG_SIDE`` on its long side.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import pillow_heif
import structlog
from PIL import ExifTags, Image, ImageCms, PngImagePlugin, UnidentifiedImageError

pillow_heif.register_heif_opener()
log = structlog.get_logger(__name__)

MAX_UPLOAD_BYTES: Final = 10 * 1024 * 1024
MAX_PIXELS: Final = 40_000_000
MAX_LONG_SIDE: Final = 1024
JPEG_QUALITY: Final = 85
# libjpeg decodes a progressive JPEG scan by scan, and nothing else bounds how many there are:
# at 40 MP each ~66-byte scan cost ~2.7 ms, so a 2 MB file held a core for 80 s. Encoders
# write about ten.
MAX_JPEG_SCANS: Final = 100
# Pillow parses headers in Python, a record at a time: ~1.3 µs for each JPEG marker segment
# before the first scan (and ~0.5 µs for each stray byte between them), ~4 µs for each PNG
# chunk, wherever it lies. 10 MB of empty ones held a core for 3-5 s; these caps hold it for
# well under 0.2 s. Camera JPEGs have fewer than 30 segments there, PNGs fewer than 50 chunks
# besides their image data; an APNG has one more (fcTL) a frame, and its image data comes in
# IDAT/fdAT chunks (8-64 kB each from common encoders: ~1,300 for 10 MB at 8 kB). Markers
# between scans are read by libjpeg, in C (10 MB of them: 30 ms), and need no cap; nor do WebP
# chunks or HEIF boxes (libwebp, libheif: ~0.1 s for 10 MB of them).
MAX_JPEG_SEGMENTS: Final = 1_000
MAX_JPEG_STRAY_BYTES: Final = 64 * 1024
MAX_PNG_CHUNKS: Final = 10_000
MAX_PNG_DATA_CHUNKS: Final = 40_000
# Decoding holds every pixel at full size, except for baseline JPEG (decoded at a reduced
# scale): with the copies that follow, up to ~16 bytes a pixel, 620 MB for a 40 MP WebP.
# Decodes share this budget so that a burst of them cannot take the API process past its
# memory limit (1 GiB in the chart); one larger than the whole budget runs alone.
DECODE_MEMORY_BUDGET: Final = 640 * 1024 * 1024
_DECODE_BYTES_PER_PIXEL: Final = 16

# ISO-BMFF brands of HEIC/HEIF still images.
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
# AVIF is HEIF with AV1 inside: its files list the generic 'mif1'/'msf1' too (Pillow writes
# `avif` + `avif mif1 miaf MA1B`, sequences `avis` + `avif avis msf1 iso8 mif1 miaf MA1B`).
# We do not accept it, so these brands outrank the generic ones: without that, an AVIF upload
# passed as HEIF and pillow_heif (no AV1) answered 422 "header could not be read", not 415.
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_SRGB_PROFILE: Final = ImageCms.createProfile("sRGB")
# EXIF orientation → the transposition that shows the photo upright (as ImageOps.exif_transpose).
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow's EXIF parser raises on a block it cannot read (PNG, WebP and HEIF carry any
# bytes as EXIF): SyntaxError for one that is not TIFF, struct.error for a TIFF header cut
# short, ValueError for a PNG "Raw profile type exif" that is not hex. Broken IFDs only warn.
# Pillow's JPEG plugin catches SyntaxError the same way when it reads the resolution from EXIF.
_UNREADABLE_EXIF: Final = (SyntaxError, struct.error, ValueError)
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I"})
# What Pillow's JPEG reader steps over a byte at a time between marker segments: bytes that are
# not 0xFF, 0xFF fill bytes (0xFF before another 0xFF), and 0xFF 0x00.
_JPEG_STRAY: Final = re.compile(rb"(?:[^\xff]|\xff\x00|\xff(?=\xff))*")
# Markers Pillow reads without a length: JPG, RSTn, SOI, EOI, JPGn. It refuses those below 0xC0.
_JPEG_BARE_MARKERS: Final = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
_PNG_DATA_CHUNKS: Final = frozenset({b"IDAT", b"fdAT"})
# Pillow's widening of 2- and 4-bit grey PNG samples to 8 bits (1-bit: mode "1", key done).
_LOW_BIT_GREY_SCALE: Final = {"L;2": 85, "L;4": 17}


class ImageRejected(Exception):
    """An upload we refuse; ``status`` is the HTTP status the API answers with."""

    status: int = 422
    title: str = "Invalid image"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ImageTooLarge(ImageRejected):
    status = 413
    title = "Image too large"


class UnsupportedImage(ImageRejected):
    status = 415
    title = "Unsupported image type"


class CorruptImage(ImageRejected):
    status = 422
    title = "Corrupt image"


class TooManyPixels(ImageRejected):
    status = 422
    title = "Image has too many pixels"


class TooManyScans(ImageRejected):
    status = 422
    title = "Image has too many scans"


class TooManySegments(ImageRejected):
    status = 422
    title = "Image has too many segments"


class MemoryBudget:
    """Bytes that decodes running at once (on the API's threads) may hold between them. Taken
    in arrival order: a large decode waiting for room is not overtaken by smaller ones that
    would otherwise keep the budget from ever being free enough for it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._free = capacity
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0  # the ticket whose turn it is to take from the budget

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        amount = min(amount, self._capacity)
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket and self._free >= amount)
            self._free -= amount
            self._serving += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._free += amount
                self._changed.notify_all()


_DECODES: Final = MemoryBudget(DECODE_MEMORY_BUDGET)


@dataclass(frozen=True, slots=True)
class SanitisedImage:
    data: bytes
    width: int
    height: int
    source_format: str
    sha256: str
    content_type: str = "image/jpeg"


def sniff_format(data: bytes) -> str | None:
    """The format named by the leading magic bytes, or None when it is none we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    # HEIF: an 'ftyp' box first; the major brand sits at offset 8, compatible brands follow.
    if len(data) >= 16 and data[4:8] == b"ftyp":
        box_size = int.from_bytes(data[:4], "big")
        brands = data[8:12] + data[16 : max(16, min(box_size, 64))]
        listed = {brands[i : i + 4] for i in range(0, len(brands) - 3, 4)}
        if listed & _HEIF_BRANDS and not listed & _AVIF_BRANDS:
            return "HEIF"
    return None


def check_size(size: int) -> None:
    if size > MAX_UPLOAD_BYTES:
        raise ImageTooLarge(f"The image is {size} bytes; the limit is {MAX_UPLOAD_BYTES} bytes.")


def sanitise(data: bytes) -> SanitisedImage:
    """Validate ``data`` and return the cleaned JPEG, or raise an ``ImageRejected``."""
    check_size(len(data))
    if not data:
        raise UnsupportedImage("The upload is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedImage("Only JPEG, PNG, WebP and HEIC/HEIF images are accepted.")
    # Before Pillow reads a header: reading one of too many records is the cost refused here.
    if fmt == "JPEG":
        _check_jpeg_markers(data)
    elif fmt == "PNG":
        _check_png_chunks(data)
    image = _open_header(data, fmt)
    try:
        pixels = _check_pixels(image, data, fmt)
        _eight_bit_colour_key(image)
        # For JPEG, let libjpeg decode at a reduced DCT scale: far less work for big photos.
        image.draft("RGB", (MAX_LONG_SIDE, MAX_LONG_SIDE))
        if fmt == "JPEG" and not image.info.get("progressive"):
            pixels = image.width * image.height  # the reduced size draft() chose
        with _DECODES.hold(pixels * _DECODE_BYTES_PER_PIXEL):
            try:
                image.load()
            # RuntimeError: pillow_heif's for anything (a codec it lacks, such as AV1 in a HEIF
            # box; a stream larger than its header said).
            except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
                # The decoder's own words go to the log: they name its internals and limits.
                log.info("image.undecodable", format=fmt, error=f"{type(exc).__name__}: {exc}")
                raise CorruptImage(f"The {fmt} image could not be decoded.") from exc
            return _clean(image, fmt)
    finally:
        image.close()


def _open_header(data: bytes, fmt: str) -> Image.Image:
    """Parse only the header (Pillow is lazy), so the size is known before any decoding."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is stricter; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:  # its message quotes Pillow's limit, not ours
        raise TooManyPixels(f"The image has more than {MAX_PIXELS} pixels.") from exc
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        RuntimeError,
    ) as exc:
        # The magic bytes said this format, so a header Pillow cannot read means a broken file.
        raise CorruptImage(f"The {fmt} image header could not be read.") from exc


def _check_pixels(image: Image.Image, data: bytes, fmt: str) -> int:
    """The pixels decoding makes, refused over the limit."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImage("The image has no pixels.")
    if width * height > MAX_PIXELS:
        raise TooManyPixels(
            f"The image is {width}x{height} ({width * height} pixels); "
            f"the limit is {MAX_PIXELS} pixels."
        )
    if fmt != "HEIF":
        return width * height
    # A HEIF's size is after its transformations, and a `clap` crop comes after decoding the
    # whole coded image: an 11 kB file showing 100x100 decoded all of its 8000x6000. Its items'
    # `ispe` properties give the coded sizes (libheif refuses a stream larger than its ispe).
    coded = _heif_largest_item(data)
    if coded > MAX_PIXELS:
        raise TooManyPixels(
            f"The image decodes to {coded} pixels before cropping; "
            f"the limit is {MAX_PIXELS} pixels."
        )
    return max(width * height, coded)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The ISO-BMFF boxes between ``start`` and ``end``: (type, body start, box end)."""
    while start + 8 <= end:
        size, header = int.from_bytes(data[start : start + 4], "big"), 8
        kind = data[start + 4 : start + 8]
        if size == 1 and start + 16 <= end:  # a 64-bit size follows the type
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:  # to the end
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def _heif_largest_item(data: bytes) -> int:
    """The most pixels any image item of a HEIF has as coded: the largest of the `ispe`
    properties in meta/iprp/ipco (the primary image, its grid, tiles, thumbnails)."""
    ranges = [(0, len(data))]
    for container in (b"meta", b"iprp", b"ipco"):
        skip = 4 if container == b"meta" else 0  # meta is a full box: version and flags first
        ranges = [
            (body + skip, end)
            for start, stop in ranges
            for kind, body, end in _boxes(data, start, stop)
            if kind == container
        ]
    largest = 0
    for start, stop in ranges:
        for kind, body, end in _boxes(data, start, stop):
            if kind == b"ispe" and end - body >= 12:  # version and flags, then the size
                width = int.from_bytes(data[body + 4 : body + 8], "big")
                height = int.from_bytes(data[body + 8 : body + 12], "big")
                largest = max(largest, width * height)
    return largest


def _check_jpeg_markers(data: bytes) -> None:
    """Walk the marker segments before the first scan as Pillow will (from segment length to
    segment length), then count the scans."""
    end = len(data)
    pos = 2  # after SOI
    segments = stray = 0
    while True:
        # Bounded, so that a run of stray bytes costs no more to scan than the cap allows.
        skipped = _JPEG_STRAY.match(data, pos, min(end, pos + MAX_JPEG_STRAY_BYTES + 2))
        stop = skipped.end() if skipped else pos  # (the pattern always matches)
        stray += stop - pos
        pos = stop
        if stray > MAX_JPEG_STRAY_BYTES:
            raise TooManySegments(
                f"The JPEG has more than {MAX_JPEG_STRAY_BYTES} bytes between its marker "
                "segments before the first scan."
            )
        if pos + 4 > end:
            return  # no scan: Pillow will refuse the file
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise TooManySegments(
                f"The JPEG has more than {MAX_JPEG_SEGMENTS} marker segments before the first scan."
            )
        marker = data[pos + 1]
        if marker == 0xDA:
            break
        if marker < 0xC0:
            return  # Pillow refuses the file at this marker
        if marker in _JPEG_BARE_MARKERS:
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    # Counting this marker from here is exact enough: entropy-coded data never holds 0xFF 0xDA
    # (an 0xFF there is followed by 0x00 or a restart marker); only metadata between scans
    # could add to the count.
    scans = data.count(b"\xff\xda", pos)
    if scans > MAX_JPEG_SCANS:
        raise TooManyScans(f"The JPEG has {scans} scans; the limit is {MAX_JPEG_SCANS}.")


def _check_png_chunks(data: bytes) -> None:
    """Count the chunks up to IEND, image data (IDAT, APNG's fdAT) apart from the rest: Pillow
    reads every one in Python. Stops at a length beyond the end, which Pillow refuses."""
    end = len(data)
    pos = 8  # after the signature
    chunks = data_chunks = 0
    while pos + 8 <= end:
        kind = data[pos + 4 : pos + 8]
        if kind in _PNG_DATA_CHUNKS:
            data_chunks += 1
            if data_chunks > MAX_PNG_DATA_CHUNKS:
                raise TooManySegments(
                    f"The PNG has more than {MAX_PNG_DATA_CHUNKS} image data chunks."
                )
        else:
            chunks += 1
            if chunks > MAX_PNG_CHUNKS:
                raise TooManySegments(
                    f"The PNG has more than {MAX_PNG_CHUNKS} chunks besides its image data."
                )
            if kind == b"IEND":
                return
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")


def _eight_bit_colour_key(image: Image.Image) -> None:
    """Pillow reads a 16-bit RGB PNG as 8-bit RGB (the high bytes) but keeps its tRNS colour
    key at 16 bits, which then matches the wrong pixels or none: compare high bytes too. (Two
    16-bit colours with the same high bytes become alike; that precision is gone with the
    decode.) Likewise it widens 2- and 4-bit grey to 8 bits (x 85, x 17) but not the grey
    key, which then matches none of the pixels it names: widen it alike."""
    key = image.info.get("transparency")
    if not isinstance(image, PngImagePlugin.PngImageFile) or not image.tile:
        return
    rawmode = image.tile[0].args
    if isinstance(key, tuple) and rawmode == "RGB;16B":
        image.info["transparency"] = tuple(value >> 8 for value in key)
    elif isinstance(key, int) and rawmode in _LOW_BIT_GREY_SCALE:
        image.info["transparency"] = key * _LOW_BIT_GREY_SCALE[rawmode]


def _clean(image: Image.Image, fmt: str) -> SanitisedImage:
    icc_profile = image.info.get("icc_profile")
    upright = _upright(image)
    small = _resamplable(image)
    # Downscaled before anything else touches every pixel: flattening and colour conversion of a
    # 40 MP PNG at full size peaked at ~800 MB. In place wherever Pillow allows. The box is
    # square, so turning the photo upright afterwards gives the same size as before.
    small.thumbnail((MAX_LONG_SIDE, MAX_LONG_SIDE), Image.Resampling.LANCZOS)
    if upright is not None:
        small = small.transpose(upright)
    rgb = _to_srgb(small, icc_profile)
    # The JPEG writer takes metadata only from save()'s arguments (none given here) and from the
    # image's info (the comment): with the info emptied, no EXIF, GPS, XMP, ICC or text follows.
    rgb.info = {}
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    encoded = out.getvalue()
    return SanitisedImage(
        data=encoded,
        width=rgb.width,
        height=rgb.height,
        source_format=fmt,
        sha256=hashlib.sha256(encoded).hexdigest(),
    )


def _upright(image: Image.Image) -> Image.Transpose | None:
    """The transposition the EXIF orientation asks for. EXIF that cannot be read counts as no
    orientation: the photo is still a photo, and its metadata is dropped anyway."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _UNREADABLE_EXIF as exc:
        log.info("image.exif_unreadable", format=image.format, error=f"{type(exc).__name__}: {exc}")
        return None
    return _UPRIGHT.get(orientation)


def _resamplable(image: Image.Image) -> Image.Image:
    """``image`` in a mode Pillow resamples smoothly (it takes the nearest pixel of 1 and P
    images, and would blend PA's palette indices), with any colour-key transparency made alpha:
    the key matches exact source values, which resampling would blend away."""
    key = image.info.get("transparency")
    if image.mode in _SIXTEEN_BIT_MODES:
        return _to_eight_bits(image, key)
    if key is not None and image.mode in ("1", "L"):
        return image.convert("LA")
    if key is not None and image.mode in ("P", "RGB"):
        return image.convert("RGBA")
    if image.mode in ("1", "P", "PA"):
        return image.convert({"1": "L", "P": "RGB", "PA": "RGBA"}[image.mode])
    return image


def _to_eight_bits(image: Image.Image, key: object) -> Image.Image:
    # Scaled instead of letting convert() clip at 255.
    grey = image.point(lambda value: value / 256).convert("L")
    if isinstance(key, int):
        # The key is a 16-bit value: matched before scaling merges 256 values into one.
        # Imported here: numpy costs the API ~10 MB at start, for a kind of PNG seldom seen.
        import numpy as np

        opaque = (np.asarray(image) != key).astype(np.uint8) * 255
        grey.putalpha(Image.fromarray(opaque))
    return grey


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Flatten transparency on white and convert colours to sRGB (the profile is dropped)."""
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if icc_profile and image.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(image, source, _SRGB_PROFILE, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: fall back to a plain conversion below
    return image if image.mode == "RGB" else image.convert("RGB")
