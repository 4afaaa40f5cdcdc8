"""The upload sanitiser: formats judged by bytes, refusals, orientation and metadata removal."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pillow_heif
import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from ecosort_waste import images
from ecosort_waste.images import (
    CorruptImage,
    ImageTooLarge,
    TooManyPixels,
    UnsupportedImage,
    sanitise,
)

GPS_LATITUDE = (37.0, 33.0, 59.99)
SHARED_PHOTOS = Path(__file__).resolve().parents[4] / "shared" / "data" / "waste-images"


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
    with pytest.raises(TooManyPixels) as refused:
        sanitise(png_header_only(60000, 60000))
    # Our limit, in our words: Pillow's message names its own, larger one.
    assert refused.value.detail == f"The image has more than {images.MAX_PIXELS} pixels."


def test_a_decoder_error_is_not_quoted_to_the_client() -> None:
    with pytest.raises(CorruptImage) as refused:
        sanitise(encode(photo(), "JPEG")[:2000])
    assert refused.value.detail == "The JPEG image could not be decoded."


def test_just_under_the_pixel_limit_is_not_a_bomb() -> None:
    with pytest.raises(CorruptImage):  # 39.9 MP passes the header check, then fails as truncated
        sanitise(png_header_only(7000, 5700))


def raw_exif_profile(hex_text: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(hex_text) // 2:8}\n{hex_text}\n")
    return info


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {"exif": b"Exif\x00\x00XXXXXXXXjunk"}),  # not TIFF: SyntaxError
        ("WEBP", {"exif": b"junkjunk"}),
        ("HEIF", {"exif": b"Exif\x00\x00XXXXXXXXjunk"}),
        ("PNG", {"exif": b"Exif\x00\x00MM\x00*\xbc"}),  # a TIFF header cut short: struct.error
        ("PNG", {"pnginfo": raw_exif_profile("not hex!")}),  # ValueError
    ],
    ids=["png-not-tiff", "webp-not-tiff", "heif-not-tiff", "png-short-header", "png-raw-not-hex"],
)
def test_unreadable_exif_counts_as_no_orientation(fmt: str, params: dict[str, object]) -> None:
    result = sanitise(encode(photo(400, 200), fmt, **params))
    assert (result.width, result.height) == (400, 200)
    assert b"junk" not in result.data and b"Exif" not in result.data


# Orientation → where the sensor image's top-left corner shows (left/right, top/bottom).
UPRIGHT_TOP_LEFT = {
    1: (0, 0),
    2: (1, 0),
    3: (1, 1),
    4: (0, 1),
    5: (0, 0),
    6: (1, 0),
    7: (1, 1),
    8: (0, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_right_after_downscaling(orientation: int) -> None:
    sensor = Image.new("RGB", (3000, 1500), (0, 0, 255))
    sensor.paste((255, 0, 0), (0, 0, 300, 300))  # the top-left corner is red
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    result = sanitise(encode(sensor, "JPEG", exif=exif))
    out = Image.open(io.BytesIO(result.data)).convert("RGB")
    assert out.size == ((1024, 512) if orientation < 5 else (512, 1024))
    right, bottom = UPRIGHT_TOP_LEFT[orientation]
    corner = (right * (out.width - 1), bottom * (out.height - 1))
    assert out.getpixel(corner)[0] > 200, orientation  # type: ignore[index]


def test_flattening_and_colour_conversion_come_after_downscaling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At full size they cost several copies of the image: a 40 MP RGBA PNG of 166 kB took
    # ~800 MB. What they are given shows where they ran.
    sizes: list[tuple[int, int]] = []

    def spy(real: Callable[..., Image.Image]) -> Callable[..., Image.Image]:
        def call(image: Image.Image, *args: object, **kwargs: object) -> Image.Image:
            sizes.append(image.size)
            return real(image, *args, **kwargs)

        return call

    monkeypatch.setattr(Image, "alpha_composite", spy(Image.alpha_composite))
    monkeypatch.setattr(ImageCms, "profileToProfile", spy(ImageCms.profileToProfile))
    rgba = Image.new("RGBA", (3000, 2000), (200, 0, 0, 128))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    result = sanitise(encode(rgba, "PNG", icc_profile=srgb, compress_level=1))
    assert (result.width, result.height) == (1024, 683)
    assert sizes == [(1024, 683), (1024, 683)]


@pytest.mark.parametrize(
    ("mode", "key", "other"),
    [("L", 7, 0), ("RGB", (1, 2, 3), (0, 0, 0)), ("I;16", 60000, 0), ("I;16", 7, 0)],
    ids=["grey", "rgb", "16-bit-grey", "16-bit-grey-low-key"],
)
def test_colour_key_transparency_is_flattened_on_white(
    mode: str, key: int | tuple[int, int, int], other: int | tuple[int, int, int]
) -> None:
    # A tRNS colour key: every pixel of exactly that value is transparent.
    image = Image.new(mode, (40, 20), key)
    image.paste(other, (20, 0, 40, 20))  # the right half is opaque black
    out = Image.open(io.BytesIO(sanitise(encode(image, "PNG", transparency=key)).data))
    assert min(out.convert("RGB").getpixel((5, 10))) > 240  # type: ignore[arg-type]
    assert max(out.convert("RGB").getpixel((35, 10))) < 15  # type: ignore[arg-type]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def sixteen_bit_rgb_png(key: tuple[int, int, int], other: tuple[int, int, int]) -> bytes:
    """40x8, 16 bits a channel: the left half is the tRNS colour key, the right half `other`.
    Pillow cannot write one."""
    row = b"\0" + b"".join(struct.pack(">3H", *(key if x < 20 else other)) for x in range(40))
    header = struct.pack(">IIBBBBB", 40, 8, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"tRNS", struct.pack(">3H", *key))
        + png_chunk(b"IDAT", zlib.compress(row * 8))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("key", "other", "opaque"),
    [
        ((0xFF00, 0x1234, 0), (0, 0, 0xFFFF), (0, 0, 255)),
        # The key's low bytes alone would name the other half's 8-bit colour.
        ((0x00FF, 0, 0), (0xFFFF, 0, 0), (255, 0, 0)),
    ],
    ids=["key-in-high-bytes", "key-in-low-bytes"],
)
def test_sixteen_bit_rgb_colour_key_makes_the_right_pixels_transparent(
    key: tuple[int, int, int], other: tuple[int, int, int], opaque: tuple[int, int, int]
) -> None:
    out = Image.open(io.BytesIO(sanitise(sixteen_bit_rgb_png(key, other)).data)).convert("RGB")
    assert min(out.getpixel((5, 4))) > 240  # type: ignore[arg-type]
    right = out.getpixel((35, 4))
    assert all(abs(a - b) < 15 for a, b in zip(right, opaque, strict=True))  # type: ignore[arg-type]


def low_bit_grey_png(bits: int, key: int, other: int) -> bytes:
    """40x8 grey at 2 or 4 bits a sample: the left half is the tRNS key, the right half
    `other`. Pillow cannot write one."""
    per_byte = 8 // bits
    samples = [key if x < 20 else other for x in range(40)]
    packed = bytes(
        sum(value << (8 - bits * (i + 1)) for i, value in enumerate(samples[at : at + per_byte]))
        for at in range(0, 40, per_byte)
    )
    header = struct.pack(">IIBBBBB", 40, 8, bits, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"tRNS", struct.pack(">H", key))
        + png_chunk(b"IDAT", zlib.compress((b"\0" + packed) * 8))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("bits", "key", "other"), [(2, 1, 0), (4, 5, 0), (2, 2, 3)], ids=["2-bit", "4-bit", "2-bit-hi"]
)
def test_low_bit_grey_colour_key_makes_the_right_pixels_transparent(
    bits: int, key: int, other: int
) -> None:
    # Pillow widens 2- and 4-bit samples to 8 bits but keeps the tRNS key at the file's depth,
    # where it matches other pixels or none.
    out = Image.open(io.BytesIO(sanitise(low_bit_grey_png(bits, key, other)).data)).convert("L")
    assert out.getpixel((5, 4)) > 240  # type: ignore[operator]
    expected = other * 255 // (2**bits - 1)
    assert abs(out.getpixel((35, 4)) - expected) < 15


def progressive_jpeg_with_extra_scans(count: int) -> bytes:
    """A small progressive JPEG followed by `count` more AC scans, each a run of end-of-band
    codes (a Huffman table whose one code, "0", stands for EOB14): tiny, valid and, at 40 MP,
    ~2.7 ms each to decode."""
    base = encode(Image.new("L", (64, 64), 128), "JPEG", progressive=True)
    table = bytes([0x11]) + bytes([1] + [0] * 15) + bytes([0xE0])  # AC table 1: "0" -> 0xE0
    huffman = b"\xff\xc4" + struct.pack(">H", len(table) + 2) + table
    header = bytes([1, 1, 0x01, 1, 63, 0])  # component 1, AC table 1, spectral 1-63
    scan = b"\xff\xda" + struct.pack(">H", len(header) + 2) + header + b"\x7f\xff\x00"
    return base[:-2] + huffman + scan * count + b"\xff\xd9"


def test_progressive_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    allowed = progressive_jpeg_with_extra_scans(images.MAX_JPEG_SCANS - 20)
    assert sanitise(allowed).width == 64  # such scans decode: only their number is refused
    with pytest.raises(images.TooManyScans) as refused:
        sanitise(progressive_jpeg_with_extra_scans(images.MAX_JPEG_SCANS))
    assert refused.value.status == 422


def jpeg_stuffed(record: bytes, count: int) -> bytes:
    """A small JPEG with `count` copies of `record` after its first segment (APP0)."""
    base = encode(photo(64, 48), "JPEG")
    after_app0 = 4 + int.from_bytes(base[4:6], "big")
    return base[:after_app0] + record * count + base[after_app0:]


def refuse_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*args: object, **kwargs: object) -> Image.Image:
        raise AssertionError("Pillow was asked to read the file")

    monkeypatch.setattr(Image, "open", no_open)


@pytest.mark.parametrize(
    ("record", "cap", "decodes"),
    [
        (b"\xff\xfe\x00\x02", "MAX_JPEG_SEGMENTS", True),  # empty comments
        (b"\xff\xe1\x00\x02", "MAX_JPEG_SEGMENTS", True),  # empty APP1
        # JPG0, a marker without a length: Pillow reads it, libjpeg then refuses it.
        (b"\xff\xf0", "MAX_JPEG_SEGMENTS", False),
        (b"\xff", "MAX_JPEG_STRAY_BYTES", True),  # fill bytes
        (b"\x00", "MAX_JPEG_STRAY_BYTES", True),  # junk between segments
    ],
    ids=["com", "app1", "jpg0", "fill", "junk"],
)
def test_jpeg_stuffed_with_header_records_is_refused_before_pillow_reads_it(
    record: bytes, cap: str, decodes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 MB of these held a core for 3-5 s in Pillow's Python header parser.
    limit = getattr(images, cap)
    under = jpeg_stuffed(record, limit - 10)
    if decodes:
        assert sanitise(under).width == 64
    else:
        with pytest.raises(CorruptImage):
            sanitise(under)
    refuse_pillow(monkeypatch)
    with pytest.raises(images.TooManySegments) as refused:
        sanitise(jpeg_stuffed(record, limit + 1))
    assert refused.value.status == 422
    assert refused.value.title == "Image has too many segments"
    assert str(limit) in refused.value.detail


def test_jpeg_markers_between_scans_are_left_to_libjpeg() -> None:
    # libjpeg reads them in C: 10 MB of empty comments there cost it ~30 ms.
    base = encode(photo(64, 48), "JPEG", progressive=True)
    last_scan = base.rfind(b"\xff\xda")
    stuffed = base[:last_scan] + b"\xff\xfe\x00\x02" * 5_000 + base[last_scan:]
    assert sanitise(stuffed).width == 64


def png_stuffed(chunk: bytes, count: int, *, after_image_data: bool = False) -> bytes:
    base = encode(photo(64, 48), "PNG")
    at = base.rfind(b"IEND" if after_image_data else b"IDAT") - 4
    return base[:at] + chunk * count + base[at:]


@pytest.mark.parametrize(
    ("chunk", "after_image_data", "cap"),
    [
        (png_chunk(b"teXt", b""), False, "MAX_PNG_CHUNKS"),
        (png_chunk(b"zzZz", b""), False, "MAX_PNG_CHUNKS"),  # private, unknown to Pillow
        (png_chunk(b"zzZz", b""), True, "MAX_PNG_CHUNKS"),  # read by load(), after the pixels
        (png_chunk(b"IDAT", b""), True, "MAX_PNG_DATA_CHUNKS"),  # empty image data
    ],
    ids=["text", "private", "private-after-idat", "empty-idat"],
)
def test_png_stuffed_with_chunks_is_refused_before_pillow_reads_it(
    chunk: bytes, after_image_data: bool, cap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 MB of these held a core for 2.5-3.5 s in Pillow's Python chunk reader.
    limit = getattr(images, cap)
    assert sanitise(png_stuffed(chunk, limit - 10, after_image_data=after_image_data)).width == 64
    refuse_pillow(monkeypatch)
    with pytest.raises(images.TooManySegments) as refused:
        sanitise(png_stuffed(chunk, limit + 1, after_image_data=after_image_data))
    assert refused.value.status == 422
    assert str(limit) in refused.value.detail


def test_an_apng_with_many_frames_passes() -> None:
    # Two chunks a frame (fcTL, fdAT): more than a cap sized for still images would allow.
    frames = [Image.new("RGB", (8, 8), (i % 256, i // 256, 0)) for i in range(2_000)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=40)
    assert apng.count(b"fcTL") == 2_000
    assert sanitise(apng).width == 8


def test_real_photos_pass_the_segment_checks() -> None:
    photos = sorted(SHARED_PHOTOS.rglob("*.jpg"))
    assert len(photos) > 1_000
    for path in photos:
        images._check_jpeg_markers(path.read_bytes())  # all of them: ~30 µs each
    for path in photos[::300]:  # and a few all the way
        assert sanitise(path.read_bytes()).source_format == "JPEG"


def test_a_codec_pillow_heif_lacks_is_422_not_a_crash() -> None:
    # AV1 in a box whose brand says HEIC: pillow_heif opens it, then raises RuntimeError.
    disguised = encode(photo(64, 48), "AVIF").replace(b"avif", b"heic")
    assert images.sniff_format(disguised) == "HEIF"
    with pytest.raises(CorruptImage):
        sanitise(disguised)


def test_decodes_share_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode takes memory for its pixels from a budget the process shares: while others
    hold most of it, a small photo still fits and a big PNG waits for its turn."""
    budget = images.MemoryBudget(capacity=100 * 1024 * 1024)
    monkeypatch.setattr(images, "_DECODES", budget)
    big_png = encode(photo(3000, 2000), "PNG")  # 6 MP: 96 MB at 16 bytes a pixel
    with ThreadPoolExecutor(1) as pool:
        with budget.hold(60 * 1024 * 1024):
            assert sanitise(encode(photo(), "JPEG")).width == 640  # 5 MB
            waiting = pool.submit(sanitise, big_png)
            time.sleep(0.3)
            assert not waiting.done()
        assert waiting.result(timeout=30).width == 1024  # once the budget was given back


def large_decode(budget: images.MemoryBudget) -> bool:
    with budget.hold(100):
        return True


def test_a_large_decode_is_not_overtaken_for_ever_by_small_ones() -> None:
    """Small decodes that overlap one another never leave the whole budget free at once; the
    large one, once waiting, goes next."""
    budget = images.MemoryBudget(capacity=100)
    stop = threading.Event()
    started = threading.Barrier(3)

    def small_decodes() -> None:
        started.wait()
        while not stop.is_set():
            with budget.hold(30):
                time.sleep(0.02)

    with ThreadPoolExecutor(3) as pool:
        smalls = [pool.submit(small_decodes) for _ in range(2)]
        started.wait()
        time.sleep(0.05)
        large = pool.submit(large_decode, budget)
        try:
            assert large.result(timeout=2)  # admitted once the decodes before it finished
        finally:
            stop.set()
            for small in smalls:
                small.result(timeout=5)


def heif_cropped_to(coded: tuple[int, int], shown: tuple[int, int]) -> bytes:
    """A HEIF of ``coded`` pixels with a `clap` (clean aperture) property showing only the
    centre ``shown`` of it: a small image to Pillow, a large one to decode."""
    data = encode(Image.new("L", coded, 90), "HEIF", quality=1)

    def box(kind: bytes, within: tuple[int, int]) -> tuple[int, int]:
        at, end = within
        while at < end:
            size = int.from_bytes(data[at : at + 4], "big")
            if data[at + 4 : at + 8] == kind:
                return at, at + size
            at += size
        raise AssertionError(kind)

    meta = box(b"meta", (0, len(data)))
    iprp = box(b"iprp", (meta[0] + 12, meta[1]))
    ipco = box(b"ipco", (iprp[0] + 8, iprp[1]))
    ipma = box(b"ipma", (iprp[0] + 8, iprp[1]))
    iloc = box(b"iloc", (meta[0] + 12, meta[1]))
    properties, at = 0, ipco[0] + 8
    while at < ipco[1]:
        properties, at = properties + 1, at + int.from_bytes(data[at : at + 4], "big")
    clap = struct.pack(">I4s8I", 40, b"clap", shown[0], 1, shown[1], 1, 0, 1, 0, 1)
    # ipma (version 0, one item): item id, association count, then one byte per property.
    entry = bytearray(data[ipma[0] : ipma[1]])
    assert entry[8] == 0 and int.from_bytes(entry[12:16], "big") == 1
    entry[18] += 1
    entry[19 + entry[18] - 1 : 19 + entry[18] - 1] = bytes([0x80 | (properties + 1)])
    struct.pack_into(">I", entry, 0, len(entry))
    out = bytearray(
        data[: ipco[1]] + clap + data[ipco[1] : ipma[0]] + bytes(entry) + data[ipma[1] :]
    )
    grown = len(clap) + 1
    for start, more in ((meta[0], grown), (iprp[0], grown), (ipco[0], len(clap))):
        struct.pack_into(">I", out, start, int.from_bytes(out[start : start + 4], "big") + more)
    # The pixel data (mdat) comes after meta: its offset in iloc (version 0, one item, one
    # extent, 4-byte base offset) moved by what was inserted.
    assert data.index(b"mdat") > meta[1] and out[iloc[0] + 8] == 0 and out[iloc[0] + 13] >> 4 == 4
    base = iloc[0] + 20  # after the sizes, the item count, its id and data reference index
    struct.pack_into(">I", out, base, int.from_bytes(out[base : base + 4], "big") + grown)
    return bytes(out)


def test_a_heif_cropped_small_is_judged_by_the_pixels_it_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A `clap` crop applies after the whole coded image is decoded: an 11 kB file shown as
    # 100x100 decoded all of its 8000x6000. (A lower limit here: a 48 MP HEIC takes x265 long.)
    cropped = heif_cropped_to((1200, 1000), (100, 100))
    with Image.open(io.BytesIO(cropped)) as opened:
        assert opened.size == (100, 100)  # what Pillow, and so the size check, is told
    assert sanitise(cropped).width == 100  # a valid file, under the usual limit
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    with pytest.raises(TooManyPixels) as refused:
        sanitise(cropped)
    assert "1200000 pixels" in refused.value.detail
    assert sanitise(encode(photo(1000, 1000), "HEIF")).width == 1000  # at the limit: fine
