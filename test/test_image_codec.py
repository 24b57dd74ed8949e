"""Decoding sensor_msgs Image / CompressedImage payloads and image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.core import image_codec
from dpa_perception.core.errors import ImageError
from dpa_perception.core.image_codec import FrameLimits, decode_compressed, read_image

H, W = 5, 7
TINY = FrameLimits(min_side=1)  # the synthetic raw frames here are 7x5, below the default min_frame_side


def decode_raw(*args: object) -> np.ndarray:
    return image_codec.decode_raw(*args, limits=TINY)  # type: ignore[arg-type]
PAD = 3  # bytes of row padding


@pytest.fixture(scope="module")
def rgba() -> np.ndarray:
    return np.random.default_rng(42).integers(0, 256, (H, W, 4), dtype=np.uint8)


def _padded(img: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Rows of ``img`` (H, W[, C]) with ``pad`` bytes of 0xEE after each, as a ROS payload."""
    rows = img.reshape(img.shape[0], -1)
    step = rows.shape[1] + pad
    buf = np.full((img.shape[0], step), 0xEE, np.uint8)
    buf[:, : rows.shape[1]] = rows
    return buf.tobytes(), step


def _cases(rgba: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """encoding -> (payload image, expected BGR), expected written without OpenCV."""
    b, g, r, a = (rgba[..., i] for i in range(4))
    gray = rgba[..., 0]
    return {
        "bgr8": (np.dstack([b, g, r]), np.dstack([b, g, r])),
        "rgb8": (np.dstack([r, g, b]), np.dstack([b, g, r])),
        "mono8": (gray, np.dstack([gray, gray, gray])),
        "bgra8": (np.dstack([b, g, r, a]), np.dstack([b, g, r])),
        "rgba8": (np.dstack([r, g, b, a]), np.dstack([b, g, r])),
    }


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8", "bgra8", "rgba8"])
@pytest.mark.parametrize("pad", [0, PAD])
def test_decode_raw(encoding: str, pad: int, rgba: np.ndarray) -> None:
    payload, expected = _cases(rgba)[encoding]
    data, step = _padded(payload, pad)
    out = decode_raw(encoding, H, W, step, data)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    assert out.flags["C_CONTIGUOUS"]


def test_decode_raw_accepts_numpy_payload_and_case(rgba: np.ndarray) -> None:
    payload, expected = _cases(rgba)["rgb8"]
    data, step = _padded(payload, PAD)
    out = decode_raw("RGB8", H, W, step, np.frombuffer(data, np.uint8))
    np.testing.assert_array_equal(out, expected)


def test_decode_raw_step_too_small(rgba: np.ndarray) -> None:
    payload, _ = _cases(rgba)["bgr8"]
    data, _ = _padded(payload, 0)
    with pytest.raises(ImageError, match="step"):
        decode_raw("bgr8", H, W, W * 3 - 1, data)


def test_decode_raw_truncated(rgba: np.ndarray) -> None:
    payload, _ = _cases(rgba)["bgr8"]
    data, step = _padded(payload, PAD)
    with pytest.raises(ImageError):
        decode_raw("bgr8", H, W, step, data[: step * (H - 1)])  # last row missing
    with pytest.raises(ImageError):
        decode_raw("bgr8", H, W, step, data[: step * (H - 1) + W * 3 - 1])  # last row one byte short
    with pytest.raises(ImageError):
        decode_raw("bgr8", H, W, step, b"")


def test_decode_raw_unknown_encoding() -> None:
    with pytest.raises(ImageError, match="yuv422"):
        decode_raw("yuv422", H, W, W * 2, bytes(H * W * 2))
    with pytest.raises(ImageError):
        decode_raw("16UC1", H, W, W * 2, bytes(H * W * 2))


def test_decode_raw_empty_size() -> None:
    with pytest.raises(ImageError):
        decode_raw("bgr8", 0, W, W * 3, b"")
    with pytest.raises(ImageError):
        decode_raw("mono8", H, 0, 0, bytes(10))


# ---------------------------------------------------------------- compressed


@pytest.fixture(scope="module")
def photo(testdata: Path) -> np.ndarray:
    img = cv2.imread(str(testdata / "images" / "dog.jpg"), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_png_round_trip(photo: np.ndarray) -> None:
    ok, enc = cv2.imencode(".png", photo)
    assert ok
    np.testing.assert_array_equal(decode_compressed("png", enc.tobytes()), photo)


def test_jpeg_round_trip(photo: np.ndarray) -> None:
    ok, enc = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    for fmt in ("jpeg", "bgr8; jpeg compressed bgr8", ""):
        out = decode_compressed(fmt, enc.tobytes())
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert np.abs(out.astype(np.int16) - photo).mean() < 3.0  # lossy, but close


def test_jpeg_keeps_colour_order() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = (255, 0, 0)  # pure blue in BGR
    ok, enc = cv2.imencode(".jpg", img)
    assert ok
    out = decode_compressed("jpeg", enc)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_truncated_jpeg(photo: np.ndarray) -> None:
    ok, enc = cv2.imencode(".jpg", photo)
    assert ok
    data = enc.tobytes()
    with pytest.raises(ImageError, match="truncated"):
        decode_compressed("jpeg", data[: len(data) // 2])


def test_garbage_and_empty_payloads() -> None:
    garbage = np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError):
        decode_compressed("jpeg", garbage)
    with pytest.raises(ImageError):
        decode_compressed("png", b"\x89PNG\r\n\x1a\n" + garbage)
    with pytest.raises(ImageError, match="empty"):
        decode_compressed("jpeg", b"")


def test_unsupported_compressed_format(photo: np.ndarray) -> None:
    ok, enc = cv2.imencode(".png", photo)
    assert ok
    with pytest.raises(ImageError, match="tiff"):
        decode_compressed("tiff", enc.tobytes())


# ---------------------------------------------------------------- files


def test_read_image(testdata: Path) -> None:
    path = testdata / "images" / "kitti_000008.png"
    img = read_image(path)
    assert img.shape == (375, 1242, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, cv2.imread(str(path), cv2.IMREAD_COLOR))


def test_read_image_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg"):
        read_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageError, match="notes.png"):
        read_image(text)
    with pytest.raises(ImageError, match="absent.jpg"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageError):
        read_image(tmp_path)  # a folder is not an image file


# ---------------------------------------------------------------- hostile payloads: limits before decoding


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR for ``width`` x ``height`` followed by a little zlib data (a bomb's head)."""
    import struct
    import zlib

    ihdr = struct.pack(">II5B", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(bytes(1 << 16), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat


def test_decompression_bomb_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(image_codec.cv2, "imdecode", lambda *a: calls.append(a))
    with pytest.raises(ImageError, match="exceeds the limit 4096x4096"):
        decode_compressed("png", _png_header(30000, 30000))
    with pytest.raises(ImageError, match="pixels, over the limit"):
        decode_compressed("png", _png_header(4096, 4096), FrameLimits(max_pixels=1 << 20))
    assert not calls, "nothing is inflated before the header passed the limits"


def test_oversized_jpeg_and_payload_are_refused_before_decoding(photo: np.ndarray) -> None:
    big = cv2.imencode(".jpg", np.zeros((300, 5000, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="5000x300 exceeds"):
        decode_compressed("jpeg", big)
    enc = cv2.imencode(".jpg", photo)[1].tobytes()
    with pytest.raises(ImageError, match="bytes exceeds the limit"):
        decode_compressed("jpeg", enc, FrameLimits(max_compressed_bytes=len(enc) - 1))


@pytest.mark.parametrize("ext", [".tiff", ".bmp", ".webp", ".jp2", ".hdr"])
def test_only_jpeg_and_png_codecs_are_reachable_whatever_the_format_says(photo: np.ndarray, ext: str) -> None:
    img = photo.astype(np.float32) / 255 if ext == ".hdr" else photo
    ok, enc = cv2.imencode(ext, img)
    if not ok:
        pytest.skip(f"this OpenCV build cannot write {ext}")
    for fmt in ("jpeg", "png", ""):
        with pytest.raises(ImageError, match="not a JPEG or PNG"):
            decode_compressed(fmt, enc.tobytes())


def test_jpeg_validity_does_not_depend_on_trailing_bytes(photo: np.ndarray) -> None:
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    out = decode_compressed("jpeg", data + b"\x00\x00")  # a complete image with padding after it
    assert out.shape == photo.shape
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_compressed("jpeg", data[: len(data) // 2] + b"\xff\xd9")  # half an image, end marker glued on
    assert decode_compressed("png", data).shape == photo.shape  # the format string is only a hint


@pytest.mark.parametrize("width, height", [(20000, 1), (1, 3000), (4096, 8), (64, 15)])
def test_strips_and_oversized_raw_frames_are_refused(width: int, height: int) -> None:
    with pytest.raises(ImageError, match="exceeds|narrower"):
        image_codec.decode_raw("mono8", height, width, width, bytes(width * height))
