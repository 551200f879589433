"""Fuzzing the API from its own OpenAPI document, and with hostile bodies no schema describes.

1. schemathesis, as its command line runs it (`st run --mode all --checks all` with every phase:
   examples, coverage, fuzzing, stateful), against the real gunicorn with a valid key: no
   response is a server error, every response matches the document, a request the document
   forbids is refused and a request it allows is accepted (so the document and the code say the
   same thing, both ways).
2. Bodies built to break parsers (integers of hundreds or thousands of digits, arrays nested
   100,000 deep, ...): each is a JSON 4xx, never a 500, and nothing is logged as an error.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import make_team, report
from tests.support.databases import stack_on_a_clone
from tests.support.stack import BIN, ROOT

HERE = Path(__file__).parent


@pytest.fixture
def web(pg_admin_url, template_db):
    with stack_on_a_clone(
        pg_admin_url,
        template_db,
        "asyncqueue-fuzz-",
        WEB_CONCURRENCY="2",
        ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS="false",
    ) as s:
        s.start_web()
        yield s


def test_api_and_its_openapi_document_agree_in_every_mode(web):
    examples = os.environ.get("ASYNCQUEUE_FUZZ_EXAMPLES", "100")
    run = subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "--no-color",
            "run",
            web.url("/v1/openapi.json"),
            "--mode",
            "all",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            examples,
            "--max-time",
            os.environ.get("ASYNCQUEUE_FUZZ_SECONDS", "40"),
            "--header",
            f"Authorization: Bearer {web.key}",
        ],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.fuzz_hooks"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    generated = re.search(r"(\d+) generated", run.stdout)
    report(
        f"fuzz: schemathesis --mode all --checks all, all phases: "
        f"{generated.group(1) if generated else '?'} cases, no failures"
    )


# -- hostile bodies -------------------------------------------------------------------------------

URL = '"callbackUrl": "https://example.com/x"'
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000
HOSTILE = {
    **{
        f"{field}-{digits}-digits": f'{{{URL}, "{field}": {sign}1{"0" * (digits - 1)}}}'
        for field in ("maxRetries", "timeout", "maxWaitTime")
        for digits, sign in ((310, ""), (4300, ""), (4301, ""), (1000, "-"))
    },
    **{
        f"{field}-nested-{kind}": f'{{{URL}, "{field}": {deep}}}'
        for field in ("method", "headers", "body", "timeout", "delayUntil", "x")
        for kind, deep in (("array", DEEP_ARRAY), ("object", DEEP_OBJECT))
    },
    "top-level-array": DEEP_ARRAY,
    "top-level-object": DEEP_OBJECT,
    "tiny-timeout": f'{{{URL}, "timeout": 1e-320}}',
    "huge-float": f'{{{URL}, "maxWaitTime": 1e400}}',
    "nan": f'{{{URL}, "timeout": NaN}}',
    "negative-infinity": f'{{{URL}, "maxRetries": -Infinity}}',
    "lone-surrogate-key": f'{{{URL}, "headers": {{"\\udc00": "x"}}}}',
    "huge-header-count": f'{{{URL}, "headers": {json.dumps({f"x-{i}": "v" for i in range(5000)})}}}',
    "control-header-value": f'{{{URL}, "headers": {{"X-A": "\\u0001"}}}}',
    "fullwidth-host": '{"callbackUrl": "http://\\uff11\\uff12\\uff17.0.0.1/"}',
    "ivpfuture-host": '{"callbackUrl": "http://[v1.x]/"}',
    "huge-ipv4-number": '{"callbackUrl": "http://' + "9" * 2000 + '/"}',
}


@pytest.fixture
def pro_key(conn):
    return make_team(conn, "fuzz", "pro")[1]


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bodies_are_json_4xx_without_an_error_log(app, pro_key, raw, caplog):
    response = app.test_client().post(
        "/v1/tasks",
        data=raw,
        headers={"Authorization": f"Bearer {pro_key}", "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:500]
    assert set(response.get_json()) == {"error"}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
