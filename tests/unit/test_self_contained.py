"""The project stands on its own: no file reads or links a folder beside the checkout.

A user clones the repository and nothing else. Developers keep private notes in a folder
next to their checkout; a test or a doc that reaches into it passes for them and fails for
everyone else (three tests did, until their data moved into tests/data/).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Built from parts so that this file does not name what it looks for.
PRIVATE = "sha" + "red"
NAMES_THE_FOLDER_BESIDE = re.compile(
    r"\.\./" + PRIVATE + r"\b"  # a relative path or link
    r"|\.parent\s*/\s*['\"]" + PRIVATE + r"['\"]"  # a path built up from the checkout
    r"|celery-" + "wire" + r"\.md"  # the private notes' file itself
)


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def offenders(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        if not path.is_file():
            continue  # deleted in the work tree, still in the index
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if NAMES_THE_FOLDER_BESIDE.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_tracked_file_names_the_folder_beside_the_checkout() -> None:
    files = tracked_files()
    assert len(files) > 100  # the listing worked: the check below saw the project
    assert offenders(files) == []


def test_the_check_finds_each_form(tmp_path: Path) -> None:
    forms = [
        "see ../" + PRIVATE + "/notes.md",
        'CAPTURES = Path(__file__).parents[2].parent / "' + PRIVATE + '" / "x"',
        "the contract is in celery-" + "wire.md",
    ]
    paths = [tmp_path / f"offender-{i}.txt" for i in range(len(forms))]
    for path, form in zip(paths, forms, strict=True):
        path.write_text(f"a fine line\n{form}\n")
    clean = tmp_path / "clean.txt"
    clean.write_text(PRIVATE + "_task, " + PRIVATE + " memory, ./" + PRIVATE + "_data\n")
    found = offenders([*paths, clean], root=tmp_path)
    assert [f.split(":")[:2] for f in found] == [[p.name, "2"] for p in paths]


def test_every_test_module_has_a_name_of_its_own() -> None:
    # The test folders are not packages: pytest imports each test file by its bare name,
    # and a second file of the same name stops the whole run at collection.
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(ROOT.glob("tests/**/test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, f"test modules with the same name: {clashes}"
