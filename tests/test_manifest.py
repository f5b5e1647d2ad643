import pytest
from PIL import Image

from psdistill.data.manifest import read_manifest, write_manifest
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (10, 20, 30)).save(path)
    return path


def test_round_trip(tmp_path):
    recs = [ImageRecord(id=f"im{i}", path=str(_image(tmp_path / "img" / f"{i}.png")), category="c",
                        scores={"overall": 5.0 - i} if i else {"overall": 5.0, "color": 2.5}, series="s", rank=i)
            for i in range(3)]
    path = write_manifest(recs, tmp_path / "manifest.csv")
    assert "img/0.png" in path.read_text()  # stored relative to the manifest
    back = read_manifest(path)
    assert [r.id for r in back] == ["im0", "im1", "im2"]
    assert back[0].scores == {"overall": 5.0, "color": 2.5} and back[1].scores == {"overall": 4.0}
    assert back[2].rank == 2 and back[2].path == str((tmp_path / "img" / "2.png").resolve())


@pytest.mark.parametrize("rows, message", [
    ("path,overall\nmissing.png,3\n", "line 2: image file"),
    ("path,overall\na.png,high\n", "line 2: field 'overall' is not a number: 'high'"),
    ("path,overall\na.png,nan\n", "line 2: field 'overall' is not finite"),
    ("path,id\na.png,x\na.png,x\n", "line 3: duplicate id 'x' (first on line 2)"),
    ("path,rank\na.png,first\n", "line 2: field 'rank' is not an integer"),
    ("path,overall\na.png,1,2\n", "line 2: 3 cells, the header has 2 columns"),
    ("id,overall\nx,1\n", "missing column(s) ['path']"),
    ("path,overall\n", "no rows"),
])
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    _image(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    path.write_text(rows)
    with pytest.raises(DataError) as e:
        read_manifest(path)
    assert str(path) in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gbk"])  # Excel's "CSV UTF-8" (BOM), Chinese Windows
def test_manifests_as_spreadsheets_save_them_are_read(tmp_path, encoding):
    _image(tmp_path / "a.png")
    path = tmp_path / "m.csv"
    path.write_bytes("path,category,overall\na.png,山水画,7.5\n".encode(encoding))
    [record] = read_manifest(path)
    assert record.category == "山水画" and record.scores == {"overall": 7.5}


def test_a_jsonl_manifest_reads_like_the_csv(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text('{"path": "a.png", "category": "c", "scores": {"overall": 3}}\n')
    (tmp_path / "m.csv").write_text("path,category,overall\na.png,c,3\n")
    assert read_manifest(tmp_path / "m.jsonl") == read_manifest(tmp_path / "m.csv")
