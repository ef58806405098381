"""A client generated from the served /openapi.json by openapi-python-client (the most used Python
client generator), in a bare venv: it must read every operation's schemas (no `not`, no `if`/`then`
in the document: the rules they stated are in the descriptions and refused with a 422 naming the
rule), and its generated code must submit the seed fit and a batch, and wait for them.

The generator runs in a venv of its own (its dependencies are not the project's); the generated
package is installed into another, bare one, with what it declares and nothing of the server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stacks import T_C, T_U
from tests.stack import Stack
from tests.venvs import bare_venv, run_alone

GENERATOR = "openapi-python-client==0.29.1"
# The CSV and Parquet bodies of POST /v1/batches and /v1/apply are files to a generated client:
# the generator's own setting for media types it has no type for.
CONFIG = """\
package_name_override: calib_generated
project_name_override: calib-generated
content_type_overrides:
  text/csv: application/octet-stream
  application/vnd.apache.parquet: application/octet-stream
"""

SUBMITS_AND_WAITS = """
import json, sys
from calib_generated import AuthenticatedClient
from calib_generated.api.default import create_batch, create_fit, get_batch, get_fit
from calib_generated.models import BatchCreate, BatchFit, FitCreate, FitOptions, ValidationByFraction

client = AuthenticatedClient(base_url=sys.argv[1], token=sys.argv[2], raise_on_unexpected_status=True)
t_u, t_c = json.loads(sys.argv[3]), json.loads(sys.argv[4])
fit = create_fit.sync(client=client, body=FitCreate(t_u=t_u, t_c=t_c, epochs=5000, input_scale=0.1))
while fit.status in ("queued", "running"):
    fit = get_fit.sync(fit.id, client=client, wait=30)
defaults = FitOptions(epochs=5000, input_scale=0.1, validation=ValidationByFraction(fraction=0.2, seed=0))
batch = create_batch.sync(
    client=client, body=BatchCreate(defaults=defaults, fits=[BatchFit(t_u=t_u, t_c=t_c) for _ in range(3)])
)
while batch.status in ("queued", "running"):
    batch = get_batch.sync(batch.id, client=client, wait=30)
print(json.dumps({"status": fit.status, "w_raw": fit.result.w_raw, "b_raw": fit.result.b_raw,
                  "batch": batch.status, "counts": batch.counts.to_dict()}))
"""


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bare_venv(tmp_path_factory.mktemp("generator") / "venv", GENERATOR)


@pytest.fixture
def generated(stack: Stack, generator: Path, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The generated package's folder, and what the generator printed."""
    document = tmp_path / "openapi.json"
    document.write_text(httpx.get(f"{stack.url}/openapi.json", timeout=30).text)
    (tmp_path / "config.yaml").write_text(CONFIG)
    done = subprocess.run(
        [str(generator / "openapi-python-client"), "generate", "--path", str(document)]
        + ["--config", str(tmp_path / "config.yaml"), "--meta", "setup", "--output-path", str(tmp_path / "client")],
        cwd=tmp_path,
        env={"PATH": f"{generator}:{os.environ['PATH']}"},  # its ruff, for its own formatting step
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield tmp_path / "client", done.stdout + done.stderr


def test_the_generator_reads_every_operation(stack: Stack, generated: tuple[Path, str]) -> None:
    folder, said = generated
    assert "Warning" not in said and "WARNING" not in said and "Unable" not in said, said
    document = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    made = {module.stem for module in (folder / "calib_generated" / "api" / "default").glob("*.py")}
    snake = {"".join("_" + c.lower() if c.isupper() else c for c in name) for name in operations}
    assert snake and snake <= made, sorted(snake - made)


def test_the_generated_client_submits_the_seed_fit_and_a_batch(
    stack: Stack, generated: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = generated
    bare = bare_venv(tmp_path / "bare", str(folder))
    stdout = run_alone(
        bare, SUBMITS_AND_WAITS, stack.url, stack.token, json.dumps(T_U), json.dumps(T_C), cwd=tmp_path, timeout=180
    )
    answer = json.loads(stdout)
    # The book's figures for the seed fit: w 5.3671, b -17.3012 at input_scale 0.1 (tests/data/thermometer.json).
    assert answer["status"] == "succeeded" and abs(answer["w_raw"] - 0.53671) < 1e-5
    assert abs(answer["b_raw"] - -17.3012) < 1e-4
    assert answer["batch"] == "completed" and answer["counts"]["succeeded"] == 3, answer["counts"]
