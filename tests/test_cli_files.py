"""The files `calib fit` reads, through the real command (click's runner, in this process): a CSV as
spreadsheets write it is read, and a file that is not a UTF-8 CSV is a usage error naming it, never a
traceback. The service's URL is a closed port: these are decided before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli.main import cli

CLOSED = "http://127.0.0.1:9"  # discard: nothing listens here, so reaching the service is exit 3
ROWS = "35.7,0.5\n55.9,14.0\n58.2,15.0\n"


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbft_u,t_c\n" + ROWS.encode(),  # Excel's "CSV UTF-8": a byte-order mark before t_u
        ("t_u,t_c\r" + ROWS.replace("\n", "\r")).encode(),  # classic Mac line breaks
    ],
    ids=["byte-order mark", "carriage returns"],
)
def test_a_spreadsheets_csv_is_read_and_sent(tmp_path: Path, content: bytes) -> None:
    data = tmp_path / "thermometer.csv"
    data.write_bytes(content)
    result = CliRunner().invoke(cli, ["fit", str(data), "--input-scale", "0.1", "--url", CLOSED])
    # Read and sent: what stops it is the service that is not there (exit 3), not the file.
    assert result.exit_code == 3, result.output
    assert "header" not in result.output


def test_a_file_that_is_not_utf8_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "latin1.csv"
    data.write_bytes("t_u,t_c\n35,0.5\n55,14\n# mesuré à 20 °C\n".encode("latin-1"))
    result = CliRunner().invoke(cli, ["fit", str(data), "--url", CLOSED])
    assert result.exit_code == 2 and "not a UTF-8 CSV file" in result.output and str(data) in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
