"""What `reconstruct` and `msk reconstruct` ask of pycolmap's incremental mapper."""

import numpy as np
import pycolmap
import pytest
from PIL import Image

from colmap_plugin.cli import EXIT_USAGE, main
from colmap_plugin.reconstruction import ReconstructionConf, ReconstructionError, reconstruct


@pytest.mark.parametrize(
    "conf, fallback",
    [(ReconstructionConf(seed=3), False), (ReconstructionConf(seed=3, structure_less_fallback=True), True)],
)
def test_the_structure_less_fallback_runs_only_when_asked_for(tmp_path, monkeypatch, conf, fallback):
    asked = []

    def incremental_mapping(database_path, image_dir, output_path, options):
        asked.append(options)
        return {}  # no model: reconstruct says so

    monkeypatch.setattr(pycolmap, "incremental_mapping", incremental_mapping)
    with pytest.raises(ReconstructionError, match="built no model"):
        reconstruct(tmp_path / "database.db", tmp_path, tmp_path / "sparse", conf)
    (options,) = asked
    assert options.structure_less_registration_fallback is fallback
    assert options.random_seed == 3


@pytest.mark.parametrize("flag, fallback", [([], False), (["--structure-less-fallback"], True)])
def test_msk_reconstruct_passes_the_fallback_flag_to_the_mapper(tmp_path, monkeypatch, capsys, flag, fallback):
    asked = []
    monkeypatch.setattr(pycolmap, "incremental_mapping", lambda *args: asked.append(args[-1]) or {})
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "database.db").touch()
    arguments = ["--database", str(tmp_path / "database.db"), "--images", str(tmp_path / "images")]
    assert main(["reconstruct", *arguments, "--output", str(tmp_path / "sparse"), *flag]) == EXIT_USAGE
    assert "the mapper built no model" in capsys.readouterr().err
    assert asked[0].structure_less_registration_fallback is fallback
