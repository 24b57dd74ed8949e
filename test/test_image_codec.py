"""Decoding sensor_msgs Image / CompressedImage payloads and image files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpa_perception.core.errors import ImageError
from dpa_perception.core.image_codec import decode_compressed, decode_raw, read_image

H, W = 5, 7
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
