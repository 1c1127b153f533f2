"""Writing a benchmark's markdown report without losing what a person wrote in it.

A report is regenerated whenever its benchmark runs again (a resumed sweep rewrites it after
every cell); the measured part comes from the script, but the ``## Reading`` section, where the
figures are interpreted, is written by hand afterwards. Rewriting keeps that section (everything
from its heading to the end of the file) and appends it to the new text, with a line saying the
figures above it were regenerated, so a reader can check the reading against them.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

READING_HEADING = "## Reading"
NOTE_PREFIX = "(This reading was written for an earlier run"


def write_report_text(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` to ``path``, carrying over an existing hand-written Reading section."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    old = path.read_text() if path.is_file() else ""
    found = _reading_heading(old)
    if found is not None and _reading_heading(text) is None:
        reading = [
            line
            for line in old[found.start() :].rstrip("\n").splitlines()
            if not line.startswith(NOTE_PREFIX)
        ]
        while reading and not reading[-1].strip():
            reading.pop()
        reading += [
            "",
            f"{NOTE_PREFIX}; the figures above were regenerated on "
            f"{datetime.date.today().isoformat()}: check it against them.)",
        ]
        text += "\n" + "\n".join(reading) + "\n"
    path.write_text(text)
    return path


def _reading_heading(text: str) -> re.Match | None:
    """The Reading section's heading line: ``## Reading`` alone or followed by a note, e.g.
    ``## Reading (2026-11-23: the first two parts)``."""
    return re.search(rf"^{READING_HEADING}(?:\s.*)?$", text, flags=re.MULTILINE)
