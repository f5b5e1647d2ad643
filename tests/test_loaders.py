import io
import math

import numpy as np
import pytest
from PIL import Image

from _fixtures_datasets import PNG_BYTES, write_images

from psdistill.data.loaders import (DataWarning, from_hf_dataset, load_apddv2, load_ava, load_fg_series,
                                    load_manifest, load_ppaint, read_text)
from psdistill.data.manifest import read_manifest
from psdistill.core.errors import DataError


def _load(fn, *args, **kwargs):
    with pytest.warns(DataWarning):  # a load with issues always says so
        return fn(*args, **kwargs)


# ---- generic CSV / JSONL manifests ---------------------------------------------------------------

MANIFEST_CSV = """path,id,category,overall,color
img/a.png,a,c1,5,2
img/b.png,b,c1,nan,3
img/missing.png,m,c1,4,
img/a.png,a,c1,5,
img/c.png,c,c2,50,1
img/d.png,d,c2,1,2,3
"""


def test_csv_manifest_reports_bad_rows(tmp_path):
    write_images(tmp_path, "img/a.png", "img/b.png", "img/c.png", "img/d.png")
    path = tmp_path / "m.csv"
    path.write_text(MANIFEST_CSV)
    result = _load(load_manifest, path, score_range=(0, 10))
    assert [r.id for r in result.records] == ["a", "b", "c"]
    assert result.records[1].scores == {"color": 3.0}  # the NaN score is left out, the image kept
    assert result.records[2].scores == {"color": 1.0}
    rep = result.report
    assert rep.counts == {"bad_score": 1, "missing_file": 1, "duplicate_id": 1, "out_of_range": 1, "malformed": 1}
    assert rep.rows == 6 and rep.records == 3
    assert rep.examples["bad_score"] == [f"{path}, line 3: field 'overall' is not finite: 'nan'"]
    assert rep.examples["missing_file"][0].startswith(f"{path}, line 4: image file")
    assert rep.examples["duplicate_id"] == [f"{path}, line 5: duplicate id 'a' (first on line 2)"]
    assert rep.examples["out_of_range"] == [f"{path}, line 6: field 'overall'=50 is outside [0, 10]"]
    assert rep.examples["malformed"] == [f"{path}, line 7: 6 cells, the header has 5 columns"]
    assert "3 records from 6 rows" in rep.summary()
    with pytest.raises(DataError, match=r"m\.csv, line 3: field 'overall' is not finite"):
        load_manifest(path, strict=True)


def test_jsonl_manifest(tmp_path):
    write_images(tmp_path, "img/a.png", "img/b.png")
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "img/a.png", "id": "a", "category": "c1", "series": "s", "rank": 0, '
                    '"scores": {"overall": 7.5, "color": null}}\n'
                    "\n"
                    "not json\n"
                    '{"path": "img/b.png", "overall": "high", "color": 2}\n'
                    '["a list"]\n')
    result = _load(load_manifest, path)
    a, b = result.records
    assert (a.id, a.category, a.series, a.rank, a.scores) == ("a", "c1", "s", 0, {"overall": 7.5})
    assert (b.id, b.scores) == ("img/b", {"color": 2.0})  # id defaults to the path without suffix
    assert result.report.counts == {"malformed": 2, "bad_score": 1}
    assert result.report.examples["malformed"][0].startswith(f"{path}, line 3: not JSON")
    with pytest.raises(DataError, match=r"m\.jsonl, line 3: not JSON"):
        load_manifest(path, strict=True)


def test_hf_dataset_images_are_saved_with_their_bytes(tmp_path):
    datasets = pytest.importorskip("datasets")
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(jpeg, format="JPEG")
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string"),
                                  "style": datasets.Value("string"), "score": datasets.Value("float32")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": PNG_BYTES, "path": None},
                                               {"bytes": jpeg.getvalue(), "path": None},
                                               {"bytes": PNG_BYTES, "path": None}],
                                     "name": ["x", "y", "x"], "style": ["ink", "oil", "ink"],
                                     "score": [6.5, float("nan"), 1.0]}, features=features)
    result = _load(from_hf_dataset, ds, tmp_path / "out", id_column="name", category_column="style")
    x, y = result.records
    assert (x.id, x.category, x.scores) == ("x", "ink", {"score": 6.5})
    assert y.scores == {} and y.path.endswith("1.jpg")
    assert open(y.path, "rb").read() == jpeg.getvalue()  # not re-encoded
    assert result.report.counts == {"bad_score": 1, "duplicate_id": 1}
    assert result.report.examples["duplicate_id"] == ["dataset, row 2: duplicate id 'x' (first in row 0)"]
    assert [r.id for r in read_manifest(tmp_path / "out" / "manifest.csv")] == ["x", "y"]
    with pytest.raises(DataError, match="not an Image column"):
        from_hf_dataset(ds, tmp_path / "o2", image_column="name")


# ---- PPaint --------------------------------------------------------------------------------------

RATINGS = """expert,image_id,dimension,score
专家1,l1,composition,7
专家2,l1,composition,8
专家1,l2,composition,5
专家1,l1,brushwork,6
专家1,zz,composition,5
专家1,l2,composition,6
专家2,l2,brushwork,11
专家2,f1,composition,nan
"""
PAIRS = """expert,dimension,first_id,second_id,winner
专家1,composition,l1,l2,first
专家2,composition,l2,l3,tie
专家1,brushwork,l3,l1,Second
专家1,composition,l1,l1,first
专家1,composition,l1,f9,first
专家1,composition,l1,l3,maybe
"""


def test_ppaint_layout(tmp_path):
    write_images(tmp_path / "images", "landscape/l1.png", "landscape/l2.png", "landscape/l3.png",
            "figure/f1.png", "figure/f2.jpg", "figure/notes.txt", "stray.png")
    (tmp_path / "ratings.csv").write_bytes(RATINGS.encode("gbk"))  # Chinese expert names, GBK
    (tmp_path / "pairs.csv").write_text(PAIRS, encoding="utf-8")
    data = _load(load_ppaint, tmp_path, rating_scale=(1, 10))
    assert [(r.id, r.category) for r in data.records] == [
        ("f1", "figure"), ("f2", "figure"), ("l1", "landscape"), ("l2", "landscape"), ("l3", "landscape")]
    by_id = {r.id: r for r in data.records}
    assert by_id["l1"].scores == {"composition": 7.5, "brushwork": 6.0}  # mean over the 2 experts
    assert by_id["l2"].scores == {"composition": 5.0}
    assert by_id["f1"].scores == {}
    assert data.experts == ["专家1", "专家2"] and data.dimensions == ["composition", "brushwork"]
    assert data.ratings.image.tolist() == [2, 2, 3, 2]
    assert data.ratings.expert.tolist() == [0, 1, 0, 0]
    assert data.ratings.dimension.tolist() == [0, 0, 0, 1]
    assert data.ratings.score.tolist() == [7.0, 8.0, 5.0, 6.0]
    assert data.pairs.pairs.tolist() == [[2, 3], [3, 4], [4, 2]]
    assert data.pairs.outcome.tolist() == [1.0, 0.5, 0.0]  # P(first preferred)
    assert data.pairs.dimension.tolist() == [0, 0, 1] and data.pairs.expert.tolist() == [0, 1, 0]
    rep = data.report
    assert rep.counts == {"unexpected_file": 2, "unknown_id": 2, "duplicate_rating": 1, "out_of_range": 1,
                          "bad_score": 1, "malformed": 2}
    ratings, pairs = tmp_path / "ratings.csv", tmp_path / "pairs.csv"
    assert rep.examples["unknown_id"][0].startswith(f"{ratings}, line 6: image 'zz'")
    assert rep.examples["duplicate_rating"][0].startswith(f"{ratings}, line 7:")
    assert rep.examples["out_of_range"] == [f"{ratings}, line 8: score=11 is outside [1, 10]"]
    assert rep.examples["malformed"] == [f"{pairs}, line 5: 'l1' is compared with itself",
                                         f"{pairs}, line 7: winner must be first, second or tie, got 'maybe'"]
    assert rep.encoding == "utf-8-sig"  # the last file read

    (tmp_path / "images" / "stray.png").unlink()
    (tmp_path / "images" / "figure" / "notes.txt").unlink()
    with pytest.raises(DataError, match=r"ratings\.csv, line 6: image 'zz' is not under"):
        load_ppaint(tmp_path, strict=True)


# ---- APDDv2 --------------------------------------------------------------------------------------

ATTRS = ("Theme and logic,Creativity,Layout and composition,Space and perspective,The sense of order,"
         "Light and shadow,Color,Details and texture,The overall,Mood")
APDD_MAIN = f"""filename,Artistic Categories,Total aesthetic score,{ATTRS},Language Comment
a1.png,中国画*工笔*山水,65.83,7.17,,6,5.83,6,6.17,5.67,6.5,6.5,6.67,"构图饱满，
细节丰富"
a2.jpg,素描*古典*静物,60.71,5.71,,6.71,6.43,5.71,5.71,,5.14,5.86,6,
a3.jpg,油画*浪漫*风景,120,6.2,5.6,6.2,,6.8,,6.6,6.4,6.6,6.4,
a4.jpg,油画*浪漫*风景,50,abc,5,5,,5,,5,5,5,5,
a5.jpg,油画*浪漫*风景,50,5,5,5,,5,,5,5,5,5,
a2.jpg,素描*古典*静物,60.71,5.71,,6.71,6.43,5.71,5.71,,5.14,5.86,6,
"""
APDD_SPLIT = f"""filename,Artistic Categories,Score,{ATTRS}
a1.png,中国画*工笔*山水,6.583,7.17,,6,5.83,6,6.17,5.67,6.5,6.5,6.67
a2.jpg,素描*古典*静物,7.5,5.71,,6.71,6.43,5.71,5.71,,5.14,5.86,6
zz.jpg,素描*古典*静物,5,5,,5,5,5,5,,5,5,5
"""


def test_apddv2_gbk_with_blank_attributes(tmp_path):
    write_images(tmp_path / "APDDv2image", "a1.png", "a2.jpg", "a3.jpg", "a4.jpg")
    main = tmp_path / "APDDv2-10023.csv"
    main.write_bytes(APDD_MAIN.encode("gbk"))
    result = _load(load_apddv2, main, tmp_path / "APDDv2image")
    assert result.report.encoding == "gbk"
    a1, a2, a3, a4 = result.records
    assert a1.category == "中国画*工笔*山水" and a1.comment == "构图饱满，\n细节丰富"
    assert a1.scores["total"] == 65.83 and a1.scores["theme_and_logic"] == 7.17
    assert "creativity" not in a1.scores  # blank: the attribute does not apply
    assert set(a2.scores) == {"total", "theme_and_logic", "layout_and_composition", "space_and_perspective",
                              "the_sense_of_order", "light_and_shadow", "details_and_texture", "the_overall", "mood"}
    assert "total" not in a3.scores and a3.scores["mood"] == 6.4
    assert "theme_and_logic" not in a4.scores
    rep = result.report
    assert rep.counts == {"out_of_range": 1, "bad_score": 1, "missing_file": 1, "duplicate_id": 1}
    # a1's comment spans lines 2-3, so a3 is on line 5
    assert rep.examples["out_of_range"] == [f"{main}, line 5: column 'Total aesthetic score'=120 is outside [0, 100]"]
    assert rep.examples["bad_score"] == [f"{main}, line 6: column 'Theme and logic' is not a number: 'abc'"]
    assert rep.examples["missing_file"][0].startswith(f"{main}, line 7: image file")
    assert rep.examples["duplicate_id"] == [f"{main}, line 8: duplicate image 'a2.jpg' (first on line 4)"]
    with pytest.raises(DataError, match=r"APDDv2-10023\.csv, line 5: column 'Total aesthetic score'=120"):
        load_apddv2(main, tmp_path / "APDDv2image", strict=True)


def test_apddv2_split_file_score_is_total_over_10(tmp_path):
    write_images(tmp_path, "a1.png", "a2.jpg", "a3.jpg", "a4.jpg", "a5.jpg")
    main, split = tmp_path / "main.csv", tmp_path / "test.csv"
    clean = APDD_MAIN.replace(",120,", ",70,").replace(",abc,", ",5,")
    clean = clean[:clean.rindex("a2.jpg")]  # without the duplicate row; UTF-8 with a BOM this time
    main.write_text(clean, encoding="utf-8-sig")
    split.write_text(APDD_SPLIT)
    direct = load_apddv2(split, check_files=False)  # a split file alone: Score x 10 is the total
    assert direct.records[0].scores["total"] == pytest.approx(65.83)
    result = _load(load_apddv2, main, split=split)
    assert [r.id for r in result.records] == ["a1", "a2"]
    assert result.report.counts == {"mismatch": 1, "unknown_id": 1}
    assert result.report.examples["mismatch"][0].startswith(f"{split}, line 3: Score 7.5 is not total/10 = 6.071")
    assert result.report.examples["unknown_id"][0].startswith(f"{split}, line 4: image 'zz'")


def test_undecodable_csv_names_file_line_and_encodings(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"filename,score\nok,1\n\xff\xfe,1\n")  # the bad bytes start line 3
    with pytest.raises(DataError, match=r"bad\.csv, line 3: cannot decode the text with any of utf-8-sig, gbk, gb18030"):
        read_text(path)
    with pytest.raises(DataError, match=r"bad\.csv, line 3: cannot decode"):
        load_apddv2(path)


# ---- AVA -----------------------------------------------------------------------------------------

AVA_TXT = """1 1001 0 1 5 17 38 36 15 6 5 1 1 22 1396
2 1002 0 0 0 0 0 0 0 0 0 0 0 0 1396
3 1003 1 2 3
4 1004 1 1 1 1 1 1 1 1 1 1 0 0 10
5 1001 0 1 5 17 38 36 15 6 5 1 1 22 1396
6 1005 0 0 0 0 0 0 0 0 0 10 14 0 100
"""


def test_ava(tmp_path):
    write_images(tmp_path / "images", "1001.jpg", "1002.jpg", "1003.jpg", "1005.jpg")
    (tmp_path / "AVA.txt").write_text(AVA_TXT)
    data = _load(load_ava, tmp_path / "AVA.txt", tmp_path / "images")
    assert [r.id for r in data.records] == ["1001", "1005"]
    # 1001: (2*1 + 3*5 + 4*17 + 5*38 + 6*36 + 7*15 + 8*6 + 9*5 + 10*1) / 124 = 699 / 124
    assert data.records[0].scores["overall"] == pytest.approx(699 / 124)
    assert data.records[0].scores["votes_5"] == 38.0 and data.records[1].scores["overall"] == 10.0
    assert data.votes[0].tolist() == [0, 1, 5, 17, 38, 36, 15, 6, 5, 1]
    assert data.distribution[1].tolist() == [0.0] * 9 + [1.0]
    assert data.tags.tolist() == [[1, 22], [14, 0]] and data.challenge.tolist() == [1396, 100]
    ava = tmp_path / "AVA.txt"
    assert data.report.counts == {"bad_score": 1, "malformed": 1, "missing_file": 1, "duplicate_id": 1}
    assert data.report.examples["malformed"] == [f"{ava}, line 3: 5 fields, expected 15 (index, image id, "
                                                 "10 vote counts, 2 tags, challenge)"]
    assert data.report.examples["duplicate_id"] == [f"{ava}, line 5: duplicate image id 1001 (first on line 1)"]
    with pytest.raises(DataError, match=r"AVA\.txt, line 2: vote counts"):
        load_ava(ava, tmp_path / "images", strict=True)


def test_ava_split_list(tmp_path):
    write_images(tmp_path / "images", "1001.jpg", "1005.jpg")
    (tmp_path / "AVA.txt").write_text(AVA_TXT)
    (tmp_path / "test.jpgl").write_text("1005.jpg\n\n9999\n")
    data = _load(load_ava, tmp_path / "AVA.txt", tmp_path / "images", split=tmp_path / "test.jpgl")
    assert [r.id for r in data.records] == ["1005"]
    assert data.report.counts == {"unknown_id": 1}
    assert data.report.examples["unknown_id"][0].startswith(f"{tmp_path / 'test.jpgl'}, line 3: image id 9999")


# ---- FGAesthetics-style series -------------------------------------------------------------------

MEMBERS = """series,image_id,path,category,rank
s1,a,img/a.png,Natural,
s1,b,img/b.png,Natural,
s1,c,img/c.png,Natural,
s2,d,img/d.png,AIGC,0
s2,e,img/e.png,AIGC,0
s3,f,img/f.png,Cropping,
s3,g,img/g.png,Cropping,
s3,h,img/h.png,Cropping,
s1,a,img/a.png,Natural,
s4,x,img/missing.png,,
"""
FG_PAIRS = """series,first_id,second_id,p_first
s1,a,b,0.9
s1,b,c,0.2
s1,a,c,0.5
s2,d,e,1.0
s3,f,g,0.8
s3,g,h,0.7
s3,h,f,0.9
s1,a,z,0.6
s2,d,e,1.5
"""


def test_fg_series_ranks_from_pairs(tmp_path):
    write_images(tmp_path, *(f"img/{k}.png" for k in "abcdefgh"))
    members, pairs = tmp_path / "members.csv", tmp_path / "pairs.csv"
    members.write_text(MEMBERS)
    pairs.write_text(FG_PAIRS)
    result = _load(load_fg_series, members, pairs)
    # s1: wins minus losses a = 1 (beats b, ties c), c = 1 (beats b), b = -2 -> ranks a 0, c 0, b 1
    # s2: d beats e -> d 0, e 1 (the rank column said e 0: mismatch)
    # s3: f > g > h > f is a cycle: every image scores 0, the series is left out
    assert [(r.id, r.series, r.category, r.rank) for r in result.records] == [
        ("a", "s1", "Natural", 0), ("b", "s1", "Natural", 1), ("c", "s1", "Natural", 0),
        ("d", "s2", "AIGC", 0), ("e", "s2", "AIGC", 1)]
    rep = result.report
    assert rep.counts == {"duplicate_id": 1, "missing_file": 1, "unknown_id": 1, "out_of_range": 1,
                          "conflict": 1, "mismatch": 1}
    assert rep.examples["conflict"][0].startswith(f"{pairs}, line 6: series 's3' has contradicting pairwise labels "
                                                  "(3 pair(s)")
    assert rep.examples["mismatch"] == [f"{members}, line 6: rank 0 of 'e' disagrees with rank 1 from {pairs}; using 1"]
    assert rep.examples["unknown_id"][0].startswith(f"{pairs}, line 9: image(s) ['z'] are not members of series 's1'")
    assert rep.examples["duplicate_id"] == [f"{members}, line 10: duplicate image id 'a' (first on line 2)"]
    with pytest.raises(DataError, match=r"members\.csv, line 10: duplicate image id 'a'"):
        load_fg_series(members, pairs, strict=True)


def test_fg_series_ranks_from_the_rank_column(tmp_path):
    write_images(tmp_path, "img/d.png", "img/e.png")
    members = tmp_path / "members.csv"
    members.write_text("series,image_id,path,rank\ns2,d,img/d.png,1\ns2,e,img/e.png,0\n")
    result = load_fg_series(members)
    assert [(r.id, r.rank) for r in result.records] == [("d", 1), ("e", 0)] and result.report.ok
    assert math.isnan(result.records[0].score("overall"))
    assert np.isfinite(result.report.to_dict()["records"])
