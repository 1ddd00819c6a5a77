"""Output names that fit the filesystem whatever the input's name."""

from __future__ import annotations

import pytest

from jobs.files import NAME_MAX, TEMPORARY_EXTRA, fitting_name, name_max, temporary_prefix


@pytest.mark.parametrize("name", ["a" * 237 + ".mp4", "é" * 125 + ".mp4", "x" * 251 + ".mp4", "✓" * 80 + ".mp4",
                                  "b" * 255, "c" * 200 + "." + "d" * 54])
def test_a_long_name_is_cut_on_a_character_and_tagged_so_its_temporary_name_fits(name):
    fitted = fitting_name(name, "1a2b3c4d")
    assert len(fitted.encode()) + TEMPORARY_EXTRA <= NAME_MAX
    assert fitted.endswith("~1a2b3c4d.mp4" if name.endswith(".mp4") else "~1a2b3c4d")
    assert name.startswith(fitted[: fitted.index("~1a2b3c4d")])  # a prefix of the name, whole characters


def test_a_name_that_fits_is_kept_and_temporary_prefixes_fit_too(tmp_path):
    assert fitting_name("café 1.mp4", "1a2b3c4d") == "café 1.mp4"
    assert len(temporary_prefix("z" * 255).encode()) + 8 + len(".part") == NAME_MAX
    assert name_max(tmp_path / "not" / "yet") == name_max(tmp_path) >= 255
