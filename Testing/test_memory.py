"""NumPy's huge pages are turned off around clinical-size work only (DoseSegLib.core.memory)."""

from __future__ import annotations

import pytest

from DoseSegLib.core import memory


def _state() -> bool:
    """NumPy's current setting (the switch returns the previous one)."""
    switch = memory._switch()
    current = switch(True)
    switch(current)
    return current


@pytest.fixture
def huge_pages_on(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    previous = memory._switch()(True)
    yield
    memory._switch()(previous)


def test_clinical_size_turns_them_off_and_back_on(huge_pages_on) -> None:
    with memory.huge_pages_off(512 * 512 * 300) as off:
        assert off and _state() is False
    assert _state() is True


def test_an_error_inside_still_restores_them(huge_pages_on) -> None:
    with pytest.raises(RuntimeError), memory.huge_pages_off(memory.LARGE_VOXELS):
        raise RuntimeError("boom")
    assert _state() is True


@pytest.mark.parametrize("user_set", [False, True])
def test_small_grids_and_a_user_choice_are_left_alone(huge_pages_on, monkeypatch, user_set: bool) -> None:
    if user_set:
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    voxels = memory.LARGE_VOXELS if user_set else 128**3
    with memory.huge_pages_off(voxels) as off:
        assert not off and _state() is True
