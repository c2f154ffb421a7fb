"""The model manager: add a bundle from disk, refuse a folder that is not one, show the model card."""

from __future__ import annotations

from desktop.model_manager import ModelManager, check_bundle, model_card
from engine.bundle import ModelBundle


def fake_bundle(folder):
    folder.mkdir(parents=True)
    bundle = ModelBundle(folder)
    for file in bundle.files():
        file.write_bytes(b"{}")
    bundle.write_card("# My model\n\nTrained on holiday photos.\n")
    return folder


def test_check_bundle(tmp_path):
    assert check_bundle(fake_bundle(tmp_path / "good")) == ""
    (tmp_path / "empty").mkdir()
    msg = check_bundle(tmp_path / "empty")
    assert "empty" in msg and "detector" in msg
    assert "not a folder" in check_bundle(tmp_path / "missing")


def test_add_use_and_remove_a_bundle(qtbot, store, tmp_path):
    dialog = ModelManager(store)
    qtbot.addWidget(dialog)
    assert dialog.list.count() == 1  # the bundled model
    bundle = fake_bundle(tmp_path / "mine")
    assert dialog.add_bundle(bundle) == ""
    assert store.settings.models == [str(bundle.resolve())]
    assert "holiday photos" in dialog.card.toPlainText()
    dialog.use_selected()
    assert store.settings.model_dir == str(bundle.resolve())
    assert "not a model bundle" in dialog.add_bundle(tmp_path)
    dialog.remove_selected()
    assert store.settings.models == [] and store.settings.model_dir == ""


def test_model_card_without_readme(tmp_path):
    assert "No model card" in model_card(tmp_path)
