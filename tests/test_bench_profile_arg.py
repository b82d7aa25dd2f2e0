"""``--profile DIR`` of the end-to-end benchmarks: a DIR that cannot hold the profiles is an argument error.

It used to be found by py-spy's start (``mkdir``) once the processes were up, or after the run: a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.e2e import bench_capacity, bench_gateway, bench_sessions

PARSERS: list[Callable[[list[str]], argparse.Namespace]] = [
    bench_capacity.parse_args,
    bench_gateway.parse_args,
    bench_sessions.parse_args,
]


@pytest.mark.parametrize("parse", PARSERS, ids=lambda parse: parse.__module__.rsplit(".", 1)[1])
def test_a_regular_file_is_refused_naming_the_flag_and_the_path(
    parse: Callable[[list[str]], argparse.Namespace], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regular = tmp_path / "prof"
    regular.write_text("")
    for given in (regular, regular / "below"):
        with pytest.raises(SystemExit) as exit_info:
            parse(["--profile", str(given)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --profile: {given} is a file" in err, err
        assert "not a directory" in err and "Traceback" not in err, err
    assert f"({regular} is)" in err, err  # the last, under the file: which one is in the way


@pytest.mark.parametrize("parse", PARSERS, ids=lambda parse: parse.__module__.rsplit(".", 1)[1])
def test_a_directory_or_one_to_make_is_taken(parse: Callable[[list[str]], argparse.Namespace], tmp_path: Path) -> None:
    assert parse(["--profile", str(tmp_path)]).profile == tmp_path
    assert parse(["--profile", str(tmp_path / "new" / "dir")]).profile == tmp_path / "new" / "dir"
    assert parse([]).profile is None
