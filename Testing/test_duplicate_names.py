"""Two structures whose names map to one canonical name are refused by every reader, in one wording."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import refuse_duplicate
from DoseSegLib.io.patient import read_patient, read_segmentation, write_segmentation
from DoseSegLib.io.phantom import make_phantom


def test_refuse_duplicate_names_both_names_and_the_fix() -> None:
    refuse_duplicate("f", "Parotid_L", "LeftParotid", {"Brainstem": "BRSTEM"})  # no clash: nothing happens
    with pytest.raises(DoseSegError) as error:
        refuse_duplicate("f", "Parotid_L", "LeftParotid", {"LeftParotid": "Parotid Lt"}, "rename one")
    assert str(error.value) == "f: 'Parotid_L' and 'Parotid Lt' both map to structure 'LeftParotid' (rename one)"


def test_a_segmentation_with_two_segments_for_one_structure_is_refused(tmp_path: Path) -> None:
    mask = make_phantom().structures["LeftParotid"]
    path = tmp_path / "two.seg.nrrd"
    write_segmentation(path, {"LeftParotid": mask, "Parotid_L": mask})
    with pytest.raises(DoseSegError, match="'Parotid_L' and 'LeftParotid' both map to structure 'LeftParotid'"):
        read_segmentation(path)


def test_a_structures_folder_with_two_files_for_one_structure_is_refused(phantom_dir: Path) -> None:
    structures = phantom_dir / "structures"
    shutil.copy(structures / "LeftParotid.nrrd", structures / "Parotid_L.nrrd")
    with pytest.raises(DoseSegError, match="'Parotid_L' and 'LeftParotid' both map to structure 'LeftParotid' "
                                           r"\(remove one, or rename it\)"):
        read_patient(phantom_dir)
