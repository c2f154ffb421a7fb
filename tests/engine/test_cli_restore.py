"""``photomend restore``: exit codes 0/1/2, the JSON report's schema, --summary, no bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bundle import RESTORER, ModelBundle, bundled_model_dir
from engine.cli import main
from tests.builders import write_photo
from tests.engine.inference.test_runtime import tiny_bundle  # noqa: F401  (a fixture)

FILE_KEYS = {"path": str, "status": str, "output": (str, type(None)), "degradations": list, "scores": dict,
             "settings": dict, "seconds": (int, float), "error": (str, type(None)),
             "guard": (dict, type(None)), "strength": (int, float, type(None))}


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "in"
    write_photo(root / "one.jpg", size=(72, 56))
    write_photo(root / "sub" / "two.png", size=(72, 56), seed=1)
    return root


def check_report_schema(report: dict) -> None:
    assert report["version"] == 1
    assert set(report) == {"version", "model", "settings", "summary", "seconds", "files"}
    assert set(report["model"]) == {"name", "path", "device"}
    assert set(report["summary"]) == {"done", "skipped", "failed", "cancelled"}
    assert {"steps", "tile", "degradations", "format", "quality", "model"} <= set(report["settings"])
    for entry in report["files"]:
        assert set(entry) == set(FILE_KEYS)
        for key, kind in FILE_KEYS.items():
            assert isinstance(entry[key], kind), key
        assert entry["status"] in ("done", "skipped", "failed", "cancelled")
        assert all(isinstance(v, float) for v in entry["scores"].values())


def test_restore_ok_report_and_summary(photos, tmp_path, tiny_bundle, capsys):  # noqa: F811
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = main(["restore", str(photos), "-o", str(out), "--recursive", "--model", str(tiny_bundle),
                 "--report", str(report), "--summary", "--tile", "64", "--device", "cpu", "--suffix", "_r"])
    assert code == 0
    assert (out / "one_r.jpg").is_file() and (out / "sub" / "two_r.png").is_file()
    data = json.loads(report.read_text())
    check_report_schema(data)
    assert data["summary"] == {"done": 2, "skipped": 0, "failed": 0, "cancelled": 0}
    assert data["model"]["name"] == "tiny"
    printed = capsys.readouterr().out
    assert "degradations (probability)" in printed and "one.jpg" in printed and "two.png" in printed

    # a rerun skips both
    assert main(["restore", str(photos), "-o", str(out), "-r", "--model", str(tiny_bundle), "--tile", "64",
                 "--suffix", "_r", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["summary"]["skipped"] == 2


def test_some_failed_exits_1(photos, tmp_path, tiny_bundle):  # noqa: F811
    (photos / "bad.jpg").write_text("this is not a jpeg")
    report = tmp_path / "r.json"
    code = main(["restore", str(photos), "-o", str(tmp_path / "out"), "--model", str(tiny_bundle),
                 "--report", str(report), "--degradations", "noisy,hazy", "--format", "png"])
    assert code == 1
    data = json.loads(report.read_text())
    check_report_schema(data)
    by_name = {Path(f["path"]).name: f for f in data["files"]}
    assert by_name["bad.jpg"]["status"] == "failed" and "bad.jpg" in by_name["bad.jpg"]["error"]
    assert by_name["one.jpg"]["status"] == "done" and by_name["one.jpg"]["output"].endswith("one.png")
    assert by_name["one.jpg"]["degradations"] == ["hazy", "noisy"]


@pytest.mark.parametrize("extra", [
    ["--format", "gif"], ["--degradations", "sunburnt"], ["--steps", "0"], ["--quality", "101"],
    ["--strength", "1.5"], ["--model", "/nonexistent/model"], ["MISSING"],
])
def test_usage_errors_exit_2(photos, tmp_path, tiny_bundle, extra, capsys):  # noqa: F811
    args = ["restore", str(photos), "-o", str(tmp_path / "out")]
    if extra == ["MISSING"]:
        args[1] = str(tmp_path / "missing")
    else:
        args += extra
    if "--model" not in extra:
        args += ["--model", str(tiny_bundle)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) == 1


def test_output_over_input_is_a_usage_error(photos, tiny_bundle):  # noqa: F811
    assert main(["restore", str(photos), "-o", str(photos), "--model", str(tiny_bundle)]) == 2


def test_no_bundled_model_says_so_and_exits_0(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PHOTOMEND_RESOURCES", str(tmp_path / "empty-resources"))
    assert main(["restore", str(photos), "-o", str(tmp_path / "out")]) == 0
    assert "no model is bundled" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def fake_resources(tmp_path, bundle) -> Path:
    import shutil

    res = tmp_path / "resources"
    shutil.copytree(bundle, bundled_model_dir(res))
    write_photo(res / "samples" / "first.jpg", size=(96, 64))
    return res


def test_self_test_passes_with_a_bundle(tmp_path, tiny_bundle, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("PHOTOMEND_RESOURCES", str(fake_resources(tmp_path, tiny_bundle)))
    assert main(["--self-test"]) == 0
    assert "self-test: ok" in capsys.readouterr().out


def test_self_test_fails_without_a_model(tmp_path, tiny_bundle, monkeypatch, capsys):  # noqa: F811
    res = fake_resources(tmp_path, tiny_bundle)
    ModelBundle(bundled_model_dir(res)).weights_file(RESTORER).unlink()
    monkeypatch.setenv("PHOTOMEND_RESOURCES", str(res))
    assert main(["--self-test"]) == 1
    assert "FAILED" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_writes_its_table_and_keeps_notes(tmp_path, tiny_bundle, capsys):  # noqa: F811
    out = tmp_path / "PERF.md"
    out.write_text("## Notes\nkept\n")
    assert main(["bench", "--sizes", "0.05", "--model", str(tiny_bundle), "--device", "cpu",
                 "--out", str(out), "--repeat", "1", "--end-to-end", "0.05", "--no-compute"]) == 0
    text = out.read_text()
    assert "| MP | size |" in text and "peak RSS" in text and "## Notes\nkept" in text
    row = [line for line in text.splitlines() if line.startswith("| 0.05")][0]
    assert int(row.rstrip(" |").split("|")[-1]) > 0  # a peak RSS was measured
    assert "## Cold start" in text and "## End to end" in text and "Ratio: **" in text
    e2e = [line for line in text.split("## End to end")[1].splitlines() if line.startswith("| ")]
    assert e2e[0].startswith("| runs s") and float(e2e[1].rstrip(" |").split("|")[-1]) > 100  # peak RSS, MB


def test_guard_on_by_default_and_off_on_request(photos, tmp_path, tiny_bundle):  # noqa: F811
    on, off = tmp_path / "on.json", tmp_path / "off.json"
    args = ["restore", str(photos / "one.jpg"), "--model", str(tiny_bundle), "--tile", "64", "--device", "cpu",
            "--format", "png"]
    assert main(args + ["-o", str(tmp_path / "a"), "--report", str(on)]) == 0
    assert main(args + ["-o", str(tmp_path / "b"), "--report", str(off), "--guard", "off", "--strength", "0.5"]) == 0
    guarded, plain = json.loads(on.read_text()), json.loads(off.read_text())
    check_report_schema(guarded)
    entry = guarded["files"][0]
    assert set(entry["guard"]) == {"estimate", "strength", "name"}
    assert 0.0 <= entry["guard"]["estimate"] <= 1.0 and entry["strength"] == min(1.0, entry["guard"]["strength"])
    assert guarded["settings"]["guard"] is not None
    assert plain["files"][0]["guard"] is None and plain["files"][0]["strength"] == 0.5
    assert plain["settings"]["guard"] is None
    with pytest.raises(SystemExit) as exc:
        main(args + ["-o", str(tmp_path / "c"), "--guard", "maybe"])
    assert exc.value.code == 2
