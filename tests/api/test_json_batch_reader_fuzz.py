"""The JSON batch reader (services/api/json_batch.py: fits found in the body's bytes, each decoded
by msgspec) against the reader of earlier versions (tests/earlier_batch_reader.py: the body parsed
whole), on generated bodies: valid and invalid fits, values of every JSON type where readings go,
strings holding quotes, backslashes and brackets, non-strict JSON (NaN), any indentation. The same
fits stored, or the same problem (status, detail, every error's location)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.earlier_batch_reader import read
from tests.in_process import assert_answers_as

_TEXT = st.text(alphabet=st.sampled_from(list('ab"\\[]{},: \u00e9')), max_size=6)
_READING = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: round(v, 3)),
    st.integers(-1000, 1000),
    st.just(math.nan),
    st.booleans(),
    _TEXT,
    st.none(),
)
_READINGS = st.one_of(
    st.lists(st.floats(0, 100).map(lambda v: round(v, 2)), min_size=0, max_size=5), st.lists(_READING, max_size=4)
)
_FIT = st.fixed_dictionaries(
    {"t_u": _READINGS, "t_c": _READINGS},
    optional={
        "labels": st.dictionaries(st.sampled_from(["k", "site"]), _TEXT, max_size=2),
        "instrument": st.sampled_from(["TT-1", "TT-2", "", 'a"b']),
        "epochs": st.sampled_from([5, 0, -1, 2.5, "5"]),
        "note": _TEXT,
    },
)
_FITS = st.lists(st.one_of(_FIT, _FIT, _FIT, st.integers(), _TEXT, st.lists(st.integers(), max_size=2)), max_size=5)
_BODY = st.fixed_dictionaries(
    {"fits": _FITS},
    optional={
        "defaults": st.sampled_from([{"epochs": 5}, {"epochs": -1}, {}, 3]),
        "callback_url": st.sampled_from([5, None]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODY, indent=st.sampled_from([None, 0, 2]))
def test_the_same_fits_or_the_same_problem_as_parsing_the_body_whole(
    make_client: Callable[..., FlaskClient], body: dict[str, Any], indent: int | None
) -> None:
    client = make_client(rate_limit="1000000/minute")  # the app is made once per test, its client each example
    raw = json.dumps(body, indent=indent).encode()
    expected = read("json", raw, {}, client.application.extensions["calib"].settings)
    answer = client.post("/v1/batches", data=raw, content_type="application/json")
    assert_answers_as(client, answer, expected)


def test_a_body_of_many_top_level_arrays_is_refused_as_it_arrives(client: FlaskClient) -> None:
    # A batch's top level holds one array, fits (its other fields are an object and a string): past
    # 1,000 the body is refused at once, whatever the keys, rather than each array's key read.
    body = b"{" + b"".join(b'"a%d": [1, 2],' % i for i in range(1001)) + b'"fits": []}'
    answer = client.post("/v1/batches", data=body, content_type="application/json")
    assert answer.status_code == 413 and answer.get_json()["errors"][0]["loc"] == ["body"]
    fewer = b"{" + b"".join(b'"a%d": [1, 2],' % i for i in range(999)) + b'"fits": []}'
    assert client.post("/v1/batches", data=fewer, content_type="application/json").status_code == 422
