"""Bad inputs not covered by test_data_readers.py / test_config.py: each is a clear error or a correct image.

Images: headers that claim a huge size, every EXIF orientation, the remaining Pillow modes and bit depths, files
whose extension lies. Annotations: COCO entries with missing keys or wrong types, VOC external entities and the
full "billion laughs". Run folders: --resume without a checkpoint, checkpoints without --resume.
Known gaps are strict xfails: they start failing (and must be promoted to plain tests) once fixed.
"""

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from detres.config import load_config
from detres.data.coco import read_coco
from detres.data.image_io import read_image_rgb
from detres.data.voc import read_voc
from detres.engine.memory import peak_rss_mb, reset_peak_rss
from detres.engine.run_dir import prepare_run_dir
from detres.errors import ConfigError, DataError, UserError


def _png(width: int, height: int, pixel_bytes: bytes) -> bytes:
    """A PNG whose header says width x height RGB and whose data is `pixel_bytes` compressed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixel_bytes, 1))
            + chunk(b"IEND", b""))


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


@pytest.mark.parametrize("name, content, message", [
    ("bomb.png", _png(100_000, 100_000, b"\x00" * 16),  # past Pillow's own decompression-bomb limit
     r"bomb.png: the header claims a decompression-bomb size; refused"),
    ("claim.jpg", _jpeg_claiming(12_000, 10_000),  # under Pillow's limit, over data.input.max_pixels
     r"claim.jpg: 12000x10000 = 120000000 pixels exceeds the limit of 100000000 \(data.input.max_pixels\)"),
])
def test_a_header_claiming_a_huge_size_is_refused_before_decoding(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    reset_peak_rss()
    before = peak_rss_mb()
    with pytest.raises(DataError, match=message):
        read_image_rgb(tmp_path / name)
    assert peak_rss_mb() - before < 20  # 120 Mpixel decoded would be 343 MiB


@pytest.mark.skipif(not reset_peak_rss(), reason="needs a resettable peak RSS (/proc/self/clear_refs)")
def test_a_valid_png_over_the_pixel_limit_is_refused_without_decoding_it(tmp_path):
    path = tmp_path / "valid_bomb.png"
    path.write_bytes(_png(4000, 3000, b"\x00" * ((3 * 4000 + 1) * 3000)))  # 35 kB on disk, 34 MiB decoded
    reset_peak_rss()
    before = peak_rss_mb()
    with pytest.raises(DataError, match="exceeds the limit of 1000000"):
        read_image_rgb(path, max_pixels=1_000_000)
    assert peak_rss_mb() - before < 10


def _quadrants() -> np.ndarray:
    """32x48 RGB, a different colour in each quadrant: any wrong flip or rotation moves a colour."""
    image = np.zeros((32, 48, 3), np.uint8)
    image[:16, :24], image[:16, 24:], image[16:, :24], image[16:, 24:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), 255
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_brought_upright(tmp_path, orientation):
    image = Image.fromarray(_quadrants())
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"exif{orientation}.jpg"
    image.save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB")).astype(int)  # Pillow's reference
    upright = read_image_rgb(path).astype(int)
    assert upright.shape == expected.shape
    assert np.abs(upright - expected).mean() < 8  # JPEG decoders differ by a few levels, a wrong turn by ~100


def _red_left() -> np.ndarray:
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :10] = (255, 0, 0)
    return image


def _save_pillow(mode: str, name: str):
    def write(path: Path) -> None:
        Image.fromarray(_red_left()).convert(mode).save(path / name)
    return write


def _save_opencv(name: str, array: np.ndarray):
    def write(path: Path) -> None:
        cv2.imwrite(str(path / name), array)
    return write


_BGRA16 = np.dstack([_red_left()[:, :, ::-1], np.full((20, 30), 255, np.uint8)]).astype(np.uint16) * 257


@pytest.mark.parametrize("write, name, left, right", [
    (_save_pillow("LA", "gray_alpha.png"), "gray_alpha.png", (76, 76, 76), (0, 0, 0)),  # ITU-R 601 luma of red
    (_save_pillow("1", "bilevel.png"), "bilevel.png", (0, 0, 0), (0, 0, 0)),            # 76 < 128: black
    (_save_pillow("F", "float.tif"), "float.tif", (76, 76, 76), (0, 0, 0)),
    (_save_pillow("RGBA", "alpha.webp"), "alpha.webp", (255, 0, 0), (0, 0, 0)),
    (_save_pillow("CMYK", "cmyk.tif"), "cmyk.tif", (255, 0, 0), (0, 0, 0)),
    (_save_pillow("P", "palette.gif"), "palette.gif", (255, 0, 0), (0, 0, 0)),
    (_save_opencv("bgra16.png", _BGRA16), "bgra16.png", (255, 0, 0), (0, 0, 0)),
    (_save_opencv("gray16.png", np.full((20, 30), 200 * 257, np.uint16)), "gray16.png", (200, 200, 200),
     (200, 200, 200)),
])
def test_other_modes_and_depths_become_8bit_rgb(tmp_path, write, name, left, right):
    write(tmp_path)
    image = read_image_rgb(tmp_path / name)
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    np.testing.assert_allclose(image[5, 2], left, atol=6)
    np.testing.assert_allclose(image[5, 20], right, atol=6)


def test_the_extension_does_not_decide_the_format(tmp_path):
    cv2.imwrite(str(tmp_path / "real.png"), _red_left()[:, :, ::-1])
    (tmp_path / "png_named.jpg").write_bytes((tmp_path / "real.png").read_bytes())
    assert (read_image_rgb(tmp_path / "png_named.jpg") == _red_left()).all()
    (tmp_path / "text.png").write_text("<html>an error page saved as an image</html>")
    with pytest.raises(DataError, match=r"text.png: not a readable image"):
        read_image_rgb(tmp_path / "text.png")


def _coco(tmp_path: Path, edit) -> Path:
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 30], "iscrowd": 0}],
            "categories": [{"id": 3, "name": "thing"}]}
    edit(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\]: missing key 'file_name'"),
    (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\]: missing key 'bbox'"),
    (lambda d: d["annotations"][0].pop("category_id"), r"annotations\[0\]: missing key 'category_id'"),
    (lambda d: d["categories"][0].pop("name"), r"categories\[0\]: missing key 'name'"),
    (lambda d: d["images"][0].update(height=float("nan")), r"'height' must be int, got nan"),
    (lambda d: d["images"][0].update(width=True), r"'width' must be int, got True"),
    (lambda d: d["images"][0].update(height=0), r"non-positive size 100x0"),
    (lambda d: d["images"][0].update(id="1"), r"'id' must be int"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, float("inf"), 4]), r"bbox must be 4 finite numbers"),
    (lambda d: d["annotations"][0].update(bbox=["1", 2, 3, 4]), r"bbox must be 4 finite numbers"),
    (lambda d: d["annotations"][0].update(bbox="10 10 20 30"), r"'bbox' must be list"),
    (lambda d: d.update(annotations={"1": {}}), r"'annotations' must be a list"),
])
def test_coco_missing_keys_and_wrong_types_are_named(tmp_path, edit, message):
    with pytest.raises(DataError, match=message):
        read_coco(_coco(tmp_path, edit), tmp_path)


def test_coco_entry_that_is_not_an_object_is_named(tmp_path):
    with pytest.raises(DataError, match=r"images\[0\]"):
        read_coco(_coco(tmp_path, lambda d: d["images"].__setitem__(0, 5)), tmp_path)


def test_coco_iscrowd_that_is_not_0_or_1_is_named(tmp_path):
    with pytest.raises(DataError, match=r"annotations\[0\]: iscrowd must be 0 or 1"):
        read_coco(_coco(tmp_path, lambda d: d["annotations"][0].update(iscrowd="no")), tmp_path)


def test_coco_duplicate_category_ids_are_refused(tmp_path):
    with pytest.raises(DataError, match="duplicate category id 3"):
        read_coco(_coco(tmp_path, lambda d: d["categories"].append({"id": 3, "name": "other"})), tmp_path)


def _voc(tmp_path: Path, xml_text: str) -> Path:
    year = tmp_path / "VOCdevkit" / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    (year / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    (year / "Annotations" / "000001.xml").write_text(xml_text)
    return tmp_path / "VOCdevkit"


_BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                   + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(2, 10))
                   + "]><annotation><size><width>&lol9;</width><height>4</height></size></annotation>"
                   ).replace("&lol1;", "&lol;")


@pytest.mark.parametrize("xml", [
    _BILLION_LAUGHS,  # 10^8 "lol"s if expanded
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<annotation><size><width>&xxe;</width><height>4</height></size></annotation>",  # external entity (XXE)
    "\x00\x01 binary garbage",
])
def test_voc_entity_payloads_and_garbage_are_refused(tmp_path, xml):
    with pytest.raises(DataError, match=r"000001.xml: malformed or unsafe xml"):
        read_voc(_voc(tmp_path, xml), ["2007:test"])


def test_voc_non_positive_size_is_refused(tmp_path):
    with pytest.raises(DataError, match="000001.xml"):
        read_voc(_voc(tmp_path, "<annotation><size><width>0</width><height>-4</height></size></annotation>"),
                 ["2007:test"])


def test_config_list_type_and_unknown_nested_key_in_a_file_are_named(tmp_path):
    (tmp_path / "steps.yaml").write_text("solver: {steps: 5}\n")
    with pytest.raises(ConfigError, match=r"steps.yaml: bad value for 'solver.steps'"):
        load_config(tmp_path / "steps.yaml")
    (tmp_path / "base.yaml").write_text("_base_: 5\n")
    with pytest.raises(ConfigError, match=r"base.yaml: _base_ must be a file name"):
        load_config(tmp_path / "base.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list.yaml: a config file must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_config_file_that_is_not_text_is_named(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match="binary.yaml"):
        load_config(tmp_path / "binary.yaml")


def test_run_folder_rules_without_training(tmp_path):
    cfg = load_config(None, [f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match=r"--resume: no checkpoint in .*run.*drop --resume"):
        prepare_run_dir(cfg, resume=True)
    assert not (tmp_path / "run").exists()  # nothing created by a refused resume
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "weights.pth").write_bytes(b"")  # a checkpoint without the last_checkpoint pointer
    with pytest.raises(UserError, match="already holds checkpoints; pass --resume"):
        prepare_run_dir(cfg, resume=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["weights.pth"]


def _geotiff(path: Path) -> Path:
    """A TIFF with a GeoTIFF tag (34737, GeoAsciiParams) that libtiff does not know, as aerial imagery has."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[34737], tags.tagtype[34737] = "WGS 84|", 2  # ASCII
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(path, tiffinfo=tags)
    return path


def test_opencv_warnings_are_silent_by_default_and_shown_at_debug(tmp_path, capfd, caplog):
    import logging

    geotiff = _geotiff(tmp_path / "aerial.tif")
    assert read_image_rgb(geotiff).shape == (24, 32, 3)
    assert "TIFF_Warning" not in capfd.readouterr().err
    with caplog.at_level(logging.DEBUG, logger="detres.data"):
        read_image_rgb(geotiff)
    shown = capfd.readouterr().err
    assert "TIFF_Warning" in shown and "34737" in shown
