"""The wire: one HL7 v2 message over MLLP and its ACK (python-hl7's asyncio MLLP streams), one FHIR
transaction Bundle over HTTP and the server's answer. No Django, no database: lis.delivery decides
what an answer means for the message.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import hl7
from hl7.mllp import open_hl7_connection


class Unreachable(Exception):
    """No connection (refused, host unknown, TLS failure, time-out while connecting): the LIS is away."""


class NoAnswer(Exception):
    """Connected and sent, but no (complete) answer within the time-out."""


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1: AA, AE, AR (or CA, CE, CR)
    control_id: str  # MSA-2: the control ID of the message it acknowledges
    text: str  # MSA-3 and the ERR segments' texts
    raw: str


async def _exchange(host: str, port: int, payload: str, *, timeout: float, tls: bool) -> str:
    kwargs = {"ssl": ssl.create_default_context(), "server_hostname": host} if tls else {}
    try:
        reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, encoding="utf-8", **kwargs), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        raise Unreachable(f"cannot connect to {host}:{port} ({type(exc).__name__}: {exc})") from exc
    try:
        writer.writeblock(payload.encode("utf-8"))
        await writer.drain()
        try:
            block = await asyncio.wait_for(reader.readblock(), timeout)
        except asyncio.TimeoutError:
            raise NoAnswer(f"no answer within {timeout:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            raise NoAnswer(f"the connection ended without a complete answer ({type(exc).__name__})") from exc
        return block.decode("utf-8", "replace")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


def mllp_send(*, host: str, port: int, payload: str, timeout: float, tls: bool = False) -> str:
    """Send ``payload`` framed 0x0B ... 0x1C 0x0D and return the first framed answer's text."""
    coro = _exchange(host, port, payload, timeout=timeout, tls=tls)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case (a Celery worker): no event loop in this thread
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:  # called from inside an event loop: run beside it
        return pool.submit(asyncio.run, coro).result()


def ack_parse(text: str) -> Ack:
    """MSA-1, MSA-2 and the error text of an ACK; ValueError when it is no ACK at all."""
    try:
        msg = hl7.parse(text)
        msa = msg.segment("MSA")
    except Exception as exc:  # noqa: BLE001 - python-hl7 raises several kinds on garbage
        raise ValueError(f"the answer is not an HL7 ACK ({type(exc).__name__})") from exc
    code = str(msa(1)).strip() if len(msa) > 1 else ""
    control_id = str(msa(2)).strip() if len(msa) > 2 else ""
    texts = [str(msa(3)).strip()] if len(msa) > 3 and str(msa(3)).strip() else []
    for err in (segment for segment in msg if str(segment[0]) == "ERR"):
        for index in (8, 7, 3):  # user message, diagnostic information, HL7 error code
            if len(err) > index and str(err(index)).strip():
                texts.append(str(err(index)).strip())
                break
    return Ack(code=code, control_id=control_id, text=" | ".join(t for t in texts if t), raw=text)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: str


def fhir_post(*, base_url: str, token: str, bundle: str, timeout: float) -> HttpAnswer:
    """POST the transaction Bundle to the server's base URL: its answer (any status); Unreachable when no
    connection was made, NoAnswer when the answer did not come in time."""
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base_url.rstrip("/") + "/", data=bundle.encode("utf-8"), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - a configured https/http URL
            return HttpAnswer(status=response.status, body=response.read(200_000).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return HttpAnswer(status=exc.code, body=exc.read(200_000).decode("utf-8", "replace"))
    except urllib.error.URLError as exc:  # no connection (refused, unknown host, TLS, connect time-out)
        raise Unreachable(f"cannot connect to {base_url} ({exc.reason})") from exc
    except (TimeoutError, OSError) as exc:  # connected, but the answer did not come (in time)
        raise NoAnswer(f"no answer from {base_url} within {timeout:g} s ({type(exc).__name__})") from exc


def operation_outcome_text(body: str) -> str:
    """The issues of an OperationOutcome as one line (the body itself when it is none)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:2000]
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return body[:2000]
    parts = []
    for issue in data.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code") or ""
        parts.append(f"{issue.get('severity', 'error')}: {text}")
    return "; ".join(parts) or body[:2000]
