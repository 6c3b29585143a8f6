"""Exceptions as one readable line, for the per-case skip reasons of nnQC_predict and nnQC_evaluate.

SimpleITK's messages start with the C++ source file and line ("Exception thrown in SimpleITK
ImageFileReader_Execute: .../sitkImageReaderBase.cxx:99:\\nsitk::ERROR: ..."): the reason a user can act on is
the part after "sitk::ERROR:". Other messages keep their first non-empty line.
"""
from __future__ import annotations

import re

_SITK_ERROR = re.compile(r"sitk::ERROR:\s*(.+)")
_CXX_LOCATION = re.compile(r"\S+\.(?:cxx|cpp|hxx|h|txx):\d+:\s*")


def one_line(error: BaseException, with_type: bool = False) -> str:
    """The message of `error` on one line, without C++ source locations; with_type prefixes the exception type
    (for errors that are not nnQC's own, where the type says what kind of failure it was)."""
    text = str(error)
    found = _SITK_ERROR.search(text)
    if found:
        line = found.group(1).strip()
    else:
        line = next((part.strip() for part in text.splitlines() if part.strip()), "")
        line = _CXX_LOCATION.sub("", line)
    line = line or type(error).__name__
    return f"{type(error).__name__}: {line}" if with_type and line != type(error).__name__ else line
