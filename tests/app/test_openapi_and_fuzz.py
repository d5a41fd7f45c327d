"""The OpenAPI document declares every refusal, and no malformed input gets a 5xx (or an undeclared 4xx)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.main import app as reference_app
from tests.app.live import LiveApp
from tests.app.media import jpeg_bytes, png_bomb

ID = "0123456789abcdef0123456789abcdef"

# (method, path template) -> the statuses each route must declare
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("post", "/images"): {"202", "400", "413", "415", "422", "503"},
    ("get", "/images/{image_id}"): {"200", "404"},
    ("get", "/images/{image_id}/thumbnail"): {"200", "400", "404", "422"},
    ("post", "/projects"): {"201", "400", "413", "415", "422"},
    ("post", "/projects/{project_id}/process"): {"202", "404", "409", "503"},
    ("get", "/projects/{project_id}"): {"200", "404"},
    ("post", "/notifications"): {"202", "400", "422", "503"},
    ("get", "/notifications/{notification_id}"): {"200", "404"},
    ("get", "/tasks/{task_id}"): {"200", "404"},
    ("get", "/tasks"): {"200", "401", "403"},
    ("delete", "/tasks/{task_id}"): {"200", "401", "403", "404"},
    ("get", "/health"): {"200"},
}


def test_every_route_declares_its_refusals_with_examples() -> None:
    document = reference_app.openapi()
    routes = {
        (method, path): operation for path, item in document["paths"].items() for method, operation in item.items()
    }
    assert set(EXPECTED) <= set(routes), f"routes missing from the document: {set(EXPECTED) - set(routes)}"
    for key, statuses in EXPECTED.items():
        responses = routes[key]["responses"]
        assert statuses <= set(responses), f"{key} does not declare {statuses - set(responses)}"
        for status in statuses & {"400", "404", "409", "413", "415", "503"}:
            if key[1].startswith("/tasks"):
                continue  # the taskservice router's own declarations
            example = responses[status]["content"]["application/json"]["example"]
            assert example["detail"], f"{key} {status} has no example"


@dataclass
class Case:
    method: str
    template: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.url[:80]} {str(self.options)[:120]}"


def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"fuzz") -> bytes:
    body = b""
    for headers, content in parts:
        body += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def cases(seed: int = 20240601) -> Iterator[Case]:
    rng = random.Random(seed)
    junk = [rng.randbytes(rng.randint(0, 4000)) for _ in range(6)]
    upload_routes = [("/images", "/images"), ("/projects", "/projects")]
    content_types = [
        None,
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=fuzz",
        'multipart/form-data; boundary="unterminated',
        "application/json",
        "text/plain; charset=utf-9",
        "image/png",
        "\u00ff/\u00fe",
    ]
    for url, template in upload_routes:
        for content_type in content_types:
            for body in junk[:3]:
                raw_headers = {} if content_type is None else {"content-type": content_type.encode("latin-1")}
                yield Case("post", template, url, {"content": body, "headers": raw_headers})
        part_headers = [
            b'Content-Disposition: form-data; name="file"; filename="../../etc/passwd"\r\nContent-Type: image/png',
            b'Content-Disposition: form-data; name="file"; filename="\xff\xfe\x00.jpg"\r\nContent-Type: image/jpeg',
            b'Content-Disposition: form-data; name="file"\r\nContent-Type: image/jpeg',  # no filename: a text field
            b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: ',
            b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: text/csv; charset=bogus',
            b"Content-Disposition: garbage",
            b'Content-Disposition: form-data; name="file"; filename="' + b"n" * 10_000 + b'"',
        ]
        payloads = [b"", b"\x00" * 100, jpeg_bytes(64, 48), png_bomb(20_000, 20_000), b"a,b\n" * 100, *junk[3:]]
        for part_header in part_headers:
            for payload in payloads:
                body = _multipart([(part_header, payload)])
                yield Case(
                    "post",
                    template,
                    url,
                    {"content": body, "headers": {"content-type": "multipart/form-data; boundary=fuzz"}},
                )
    for size in ["abc", "-1", "0", "1e3", "300.0", "99999999999999999999999999", "", "%00", "300&size=600"]:
        yield Case("get", "/images/{image_id}/thumbnail", f"/images/{ID}/thumbnail?size={size}")
    weird_ids = ["%00", "%ff", "..", "%2e%2e%2f%2e%2e", "a" * 3000, "%F0%9F%92%A5", "' OR 1=1 --", ID.upper(), ID[:-1]]
    for weird in weird_ids:
        yield Case("get", "/images/{image_id}", f"/images/{weird}")
        yield Case("get", "/projects/{project_id}", f"/projects/{weird}")
        yield Case("post", "/projects/{project_id}/process", f"/projects/{weird}/process")
        yield Case("get", "/notifications/{notification_id}", f"/notifications/{weird}")
        yield Case("get", "/tasks/{task_id}", f"/tasks/{weird}")
    notification_bodies: list[bytes] = [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"{" * 5000,
        b'{"to": 1, "subject": [], "body": {}}',
        b'{"to": "a@b.co", "subject": "\\ud800", "body": "\\udfff"}',
        b'{"to": "a@b.co", "subject": "hi", "body": "x", "send_at": "2030-02-30T00:00:00Z"}',
        b'{"to": "a@b.co", "subject": "hi", "body": "x", "send_at": 1e308}',
        b'{"to": "a@b.co", "subject": "hi", "body": "x", "send_at": "9999-12-31T23:59:59.999999+23:59"}',
        b'{"to": "a@b.co", "subject": "hi", "body": "x", "send_at": "-0001-01-01T00:00:00Z"}',
        json.dumps({"to": "a@b.co", "subject": "s" * 10_000, "body": "x"}).encode(),
        json.dumps({"to": "a@" + "b" * 300 + ".co", "subject": "hi", "body": "x"}).encode(),
        b"\xff\xfe\x00{",
    ]
    for body in notification_bodies:
        for content_type in ("application/json", "text/plain", None):
            headers = {} if content_type is None else {"content-type": content_type}
            yield Case("post", "/notifications", "/notifications", {"content": body, "headers": headers})
    for status in ["bogus", "SUCCEEDED", ""]:
        yield Case("get", "/tasks", f"/tasks?status={status}&limit=-5", {"headers": {"authorization": b"Bearer \xff"}})
    for authorization in ["Bearer", "Basic Zm9vOmJhcg==", "Bearer " + "t" * 5000, "bearer test-admin-token"]:
        yield Case("delete", "/tasks/{task_id}", f"/tasks/{ID}", {"headers": {"authorization": authorization}})


def test_no_malformed_input_gets_a_5xx_or_an_undeclared_refusal(live: LiveApp) -> None:
    with live.client() as client:
        document = client.get("/openapi.json").json()
        problems: list[str] = []
        total = 0
        for case in cases():
            total += 1
            try:
                response = client.request(case.method, case.url, **case.options)
            except httpx.HTTPError as exc:
                problems.append(f"{case}: connection failed ({exc!r})")
                continue
            status = response.status_code
            if status >= 500:
                problems.append(f"{case}: {status} {response.text[:200]}")
            elif 400 <= status < 500:
                declared = document["paths"][case.template][case.method]["responses"]
                if str(status) not in declared:
                    problems.append(f"{case}: {status} is not declared for {case.template}")
                try:
                    detail = response.json().get("detail")
                except ValueError:
                    detail = None
                if not detail:
                    problems.append(f"{case}: {status} without a detail")
        assert total > 200
        assert not problems, f"{len(problems)} of {total} malformed requests misbehaved:\n" + "\n".join(problems)


@pytest.mark.parametrize("method", ["put", "patch"])
def test_unsupported_methods_are_405(live: LiveApp, method: str) -> None:
    with live.client() as client:
        assert client.request(method, "/images").status_code == 405
