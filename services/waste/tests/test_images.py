"""The upload sanitiser: formats judged by bytes, refusals, orientation and metadata removal."""

from __future__ import annotations

import io
import struct
import zlib

import pillow_heif
import pytest
from PIL import ExifTags, Image

from ecosort_waste import images
from ecosort_waste.images import (
    CorruptImage,
    ImageTooLarge,
    TooManyPixels,
    UnsupportedImage,
    sanitise,
)

GPS_LATITUDE = (37.0, 33.0, 59.99)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo(width: int = 640, height: int = 480) -> Image.Image:
    # A gradient rather than a flat colour so encoders produce realistic data.
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return image


def exif_with_gps(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretPhoneMaker"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: GPS_LATITUDE,
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (126.0, 58.0, 41.5),
    }
    return exif


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_each_accepted_format_becomes_a_jpeg(fmt: str) -> None:
    result = sanitise(encode(photo(), fmt))
    assert result.source_format == fmt
    assert result.content_type == "image/jpeg"
    out = Image.open(io.BytesIO(result.data))
    assert out.format == "JPEG"
    assert out.size == (640, 480) == (result.width, result.height)


def test_format_is_judged_by_bytes_not_by_name() -> None:
    # A PNG is a PNG whatever the client calls it; HEIF magic is recognised from the ftyp box.
    assert images.sniff_format(encode(photo(), "PNG")) == "PNG"
    assert images.sniff_format(encode(photo(), "HEIF")) == "HEIF"
    assert images.sniff_format(b"GIF89a" + b"\x00" * 32) is None


def test_long_side_is_downscaled_to_1024() -> None:
    result = sanitise(encode(photo(3000, 1500), "JPEG"))
    assert (result.width, result.height) == (1024, 512)


def test_exif_orientation_is_applied() -> None:
    # Orientation 6 means "rotate 90° clockwise to display": a 400x200 sensor image shows 200x400.
    raw = encode(photo(400, 200), "JPEG", exif=exif_with_gps(orientation=6))
    result = sanitise(raw)
    assert (result.width, result.height) == (200, 400)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_no_location_or_other_metadata_survives(fmt: str) -> None:
    extra: dict[str, object] = {"comment": b"SecretComment"} if fmt == "JPEG" else {}
    if fmt != "PNG":
        extra["xmp"] = b"<x:xmpmeta>SecretXmp</x:xmpmeta>"
    raw = encode(photo(), fmt, exif=exif_with_gps(orientation=1), **extra)
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the input has GPS
    assert all(value in raw for value in extra.values())  # and the other metadata
    stored = sanitise(raw).data
    out = Image.open(io.BytesIO(stored))
    assert not out.getexif()
    assert out.getexif().get_ifd(ExifTags.IFD.GPSInfo) == {}
    assert not {"exif", "icc_profile", "xmp", "comment"} & set(out.info)
    assert b"Exif" not in stored and b"SecretPhoneMaker" not in stored
    assert b"SecretComment" not in stored and b"SecretXmp" not in stored


def test_heic_gps_is_stripped() -> None:
    heif = pillow_heif.from_pillow(photo())
    buf = io.BytesIO()
    heif.save(buf, exif=exif_with_gps(orientation=1).tobytes())
    raw = buf.getvalue()
    assert b"SecretPhoneMaker" in raw
    stored = sanitise(raw).data
    assert b"Exif" not in stored and b"SecretPhoneMaker" not in stored


def test_transparency_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = Image.open(io.BytesIO(sanitise(encode(rgba, "PNG")).data)).convert("RGB")
    assert min(out.getpixel((5, 5))) > 240  # type: ignore[arg-type]


def test_oversize_body_is_413() -> None:
    with pytest.raises(ImageTooLarge) as err:
        sanitise(b"\xff\xd8\xff" + b"\x00" * (10 * 1024 * 1024))
    assert err.value.status == 413


def avif_sequence() -> bytes:
    # Two frames make Pillow write an image sequence: major brand 'avis', not 'avif'.
    return encode(photo(64, 48), "AVIF", save_all=True, append_images=[photo(64, 48)])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is text",
        encode(photo(), "GIF"),
        encode(photo(), "BMP"),
        b"%PDF-1.7\n",
        # AVIF lists the HEIF brand 'mif1' (or 'msf1') among its compatible brands.
        pytest.param(encode(photo(64, 48), "AVIF"), id="avif"),
        pytest.param(avif_sequence(), id="avif-sequence"),
    ],
)
def test_unsupported_or_non_image_is_415(data: bytes) -> None:
    with pytest.raises(UnsupportedImage) as err:
        sanitise(data)
    assert err.value.status == 415


def test_truncated_jpeg_is_422() -> None:
    raw = encode(photo(), "JPEG")
    with pytest.raises(CorruptImage) as err:
        sanitise(raw[: len(raw) // 2])
    assert err.value.status == 422


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "HEIF"])
def test_truncated_other_formats_are_422(fmt: str) -> None:
    raw = encode(photo(), fmt)
    with pytest.raises(CorruptImage):
        sanitise(raw[: len(raw) // 2])


def test_garbage_after_magic_is_422() -> None:
    with pytest.raises(CorruptImage):
        sanitise(b"\x89PNG\r\n\x1a\n" + b"\x13" * 200)


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # 8000x6000 = 48 MP claimed, a few bytes of data: only a header check can call it a bomb
    # (decoding would have failed as truncated instead).
    with pytest.raises(TooManyPixels) as err:
        sanitise(png_header_only(8000, 6000))
    assert err.value.status == 422
    assert "48000000 pixels" in err.value.detail


def test_huge_bomb_beyond_pillow_limit_is_422() -> None:
    with pytest.raises(TooManyPixels):
        sanitise(png_header_only(60000, 60000))


def test_just_under_the_pixel_limit_is_not_a_bomb() -> None:
    with pytest.raises(CorruptImage):  # 39.9 MP passes the header check, then fails as truncated
        sanitise(png_header_only(7000, 5700))
