"""Bad input against the live server (both backends): a clear 4xx with ``detail``, never a 5xx, nothing stored."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.app import flows
from tests.app.live import UPLOAD_LIMIT_BYTES, LiveApp
from tests.app.media import jpeg_bytes, png_bomb, png_bytes, truncated_png

pytestmark = pytest.mark.slow


@pytest.fixture
def client(live: LiveApp) -> Iterator[httpx.Client]:
    """A client; the test fails if anything was stored while it ran."""
    before = live.stored()
    with live.client() as client:
        yield client
    assert live.stored() == before, "a refused request left something behind"


def refused(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in str(detail), detail
    return str(detail)


@pytest.mark.parametrize(
    ("name", "data", "kind", "fragment"),
    [
        ("notes.jpg", b"hello, I am text", "image/jpeg", "not an image"),
        ("half.png", truncated_png(), "image/png", "damaged or truncated"),
        ("empty.jpg", b"", "image/jpeg", "empty"),
        ("bomb.png", png_bomb(30_000, 30_000), "image/png", "decompression bomb"),
        ("big.png", png_bomb(8_000, 8_000), "image/png", "decompression bomb"),  # past APP_MAX_IMAGE_PIXELS only
    ],
    ids=["text", "truncated", "empty", "bomb", "over-pixel-limit"],
)
def test_upload_that_is_not_a_usable_image_is_400(
    client: httpx.Client, name: str, data: bytes, kind: str, fragment: str
) -> None:
    refused(client.post("/images", files={"file": (name, data, kind)}), 400, fragment)


def test_upload_over_the_size_limit_is_413(client: httpx.Client) -> None:
    too_big = jpeg_bytes() + b"\0" * UPLOAD_LIMIT_BYTES
    refused(client.post("/images", files={"file": ("big.jpg", too_big, "image/jpeg")}), 413, "APP_MAX_UPLOAD_BYTES")


def _status_of_unfinished_upload(live: LiveApp, headers: bytes, body: bytes) -> bytes:
    """Send a request whose body never ends; return the status line the server answers with anyway."""
    url = httpx.URL(live.base_url)
    with socket.create_connection((url.host, url.port or 80), timeout=10) as connection:
        connection.sendall(b"POST /images HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n" + body)
        answer = b""
        while b"\r\n" not in answer:  # a server still waiting for the body times this out
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_upload_is_refused_while_streaming_once_it_passes_the_limit(live: LiveApp) -> None:
    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    body = chunk(part) + b"".join(chunk(b"\0" * 65536) for _ in range(UPLOAD_LIMIT_BYTES // 65536 + 2))
    headers = b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n"
    # The body is never finished: only a server that counts bytes as they arrive can answer.
    assert b" 413 " in _status_of_unfinished_upload(live, headers, body)


def test_upload_declaring_a_length_over_the_limit_is_refused_before_reading(live: LiveApp) -> None:
    headers = f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * UPLOAD_LIMIT_BYTES}\r\n"
    assert b" 413 " in _status_of_unfinished_upload(live, headers.encode(), b"--b\r\n")


def test_upload_that_is_not_multipart_is_415(client: httpx.Client) -> None:
    refused(client.post("/images", json={"file": "cat.jpg"}), 415, "multipart/form-data")
    refused(client.post("/projects", content=b"date,region\n", headers={"content-type": "text/csv"}), 415)


def test_file_declared_with_the_wrong_type_is_415(client: httpx.Client) -> None:
    refused(client.post("/images", files={"file": ("a.csv", b"a,b\n1,2\n", "text/csv")}), 415, "text/csv")
    refused(client.post("/projects", files={"file": ("a.png", png_bytes(), "image/png")}), 415, "image/png")


def test_missing_file_field_is_422(client: httpx.Client) -> None:
    response = client.post("/images", files={"picture": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_two_files_in_one_upload_is_400(client: httpx.Client) -> None:
    files = [("file", ("a.jpg", jpeg_bytes(), "image/jpeg")), ("file", ("b.jpg", jpeg_bytes(), "image/jpeg"))]
    refused(client.post("/images", files=files), 400)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"date,region,product\n2024-01-01,north,pen\n", "lacks column(s) units, unit_price"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ],
    ids=["empty", "missing-columns", "binary"],
)
def test_csv_refused_at_upload_is_400(client: httpx.Client, data: bytes, fragment: str) -> None:
    refused(client.post("/projects", files={"file": ("x.csv", data, "text/csv")}), 400, fragment)


@pytest.mark.parametrize(
    ("send_at", "fragment"),
    [
        ("2030-01-01T09:00:00", "time zone"),
        ((datetime.now(UTC) + timedelta(days=31)).isoformat(), "within 30 days"),
        ((datetime.now(UTC) - timedelta(days=31)).isoformat(), "within 30 days"),
        ("9999-12-31T23:59:59-14:00", "within 30 days"),
        ("0001-01-01T00:00:00+14:00", "within 30 days"),
    ],
    ids=["naive", "31-days-ahead", "31-days-ago", "year-9999", "year-1"],
)
def test_send_at_naive_or_absurd_is_400(client: httpx.Client, send_at: str, fragment: str) -> None:
    payload = {"to": "ada@example.com", "subject": "Hi", "body": ".", "send_at": send_at}
    refused(client.post("/notifications", json=payload), 400, fragment)


@pytest.mark.parametrize(
    "payload",
    [
        {"to": "not-an-address", "subject": "Hi", "body": "."},
        {"to": "ada@example.com", "subject": "", "body": "."},
        {"to": "ada@example.com", "subject": "line\nbreak", "body": "."},
        {"to": "ada@example.com", "subject": "Hi", "body": "nul\u0000byte"},
        {"to": "ada@example.com", "subject": "Hi", "body": ".", "sendAt": "2030-01-01T00:00:00Z"},
        {"to": "ada@example.com", "subject": "Hi", "body": ".", "send_at": "tomorrow"},
    ],
    ids=["address", "empty-subject", "header-injection", "nul", "unknown-field", "unparsable-send_at"],
)
def test_malformed_notification_is_422(client: httpx.Client, payload: dict[str, str]) -> None:
    assert client.post("/notifications", json=payload).status_code == 422


def test_past_send_at_is_sent_now(live: LiveApp) -> None:
    with live.client() as client:
        accepted = flows.post_notification(client, "ada@example.com", datetime.now(UTC) - timedelta(minutes=5))
        assert accepted["status"] == "queued"
        assert flows.wait_for_notification(client, accepted["id"])["status"] == "sent"


@pytest.mark.parametrize(
    "path",
    [
        "/images/0123456789abcdef0123456789abcdef",
        "/images/0123456789abcdef0123456789abcdef/thumbnail",
        "/images/%00",
        "/images/" + "x" * 5000,
        "/projects/0123456789abcdef0123456789abcdef",
        "/projects/%27%3B%20DROP%20TABLE%20projects%3B--",
        "/notifications/0123456789abcdef0123456789abcdef",
        "/notifications/%F0%9F%92%A5",
        "/tasks/0123456789abcdef0123456789abcdef",
    ],
)
def test_unknown_ids_are_404(client: httpx.Client, path: str) -> None:
    refused(client.get(path), 404)


def test_processing_an_unknown_project_is_404(client: httpx.Client) -> None:
    refused(client.post("/projects/0123456789abcdef0123456789abcdef/process"), 404, "no project")
