"""Real peers on 127.0.0.1 for the LIS interface's tests.

* :class:`MllpLis`: python-hl7's asyncio MLLP server in a thread, answering every message with AA, AE,
  AR, an ACK for another control ID, or nothing (``mode``); it can be stopped and started again on the
  same port (the LIS going down and coming back) and keeps every message it received, in order.
* :class:`FhirServer`: a small HTTP server that validates each transaction Bundle with fhir.resources
  (R4B, the Bundle and every resource in it), applies its conditional create / update on the
  identifiers, and can answer 400 with an OperationOutcome, 500, or stall, on demand.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import hl7
from hl7.mllp import start_hl7_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MllpLis:
    def __init__(self, port: int | None = None, ssl_context=None):
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.mode = "AA"
        self.reason = "Unknown filler order number"
        self.received: list[hl7.Message] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = None
        self._writers: set = set()

    # the peer's behaviour
    async def _handle(self, reader, writer):
        self._writers.add(writer)
        try:
            while True:
                try:
                    msg = await reader.readmessage()
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self.received.append(msg)
                mode = self.mode
                if mode == "silent":
                    continue  # no answer: the sender times out
                control = str(msg.segment("MSH")(10))
                ack = str(msg.create_ack("AA", message_id=f"ACK{len(self.received)}")).rstrip("\r")
                head = ack.split("\r")[0]
                if mode == "AA":
                    body = f"MSA|AA|{control}"
                elif mode == "wrong":
                    body = "MSA|AA|SOMEONE-ELSE"
                else:
                    body = f"MSA|{mode}|{control}|{self.reason}\rERR|||207^Application internal error^HL70357|E||||{self.reason}"
                writer.writeblock(f"{head}\r{body}\r".encode())
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    def _call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "MllpLis":
        async def go():
            self._server = await start_hl7_server(self._handle, "127.0.0.1", self.port, encoding="utf-8",
                                                  reuse_address=True, ssl=self.ssl_context)
        self._call(go())
        return self

    def stop(self) -> None:
        async def go():
            if self._server is not None:
                self._server.close()
                for writer in list(self._writers):
                    writer.close()
                await self._server.wait_closed()
                self._server = None
        self._call(go())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # what it received
    def control_ids(self) -> list[str]:
        return [str(m.segment("MSH")(10)) for m in self.received]

    def filler_orders(self) -> list[str]:
        """OBR-3.1 of each message received (accession/vN), in order."""
        return [str(m.segment("OBR")(3)).split("^")[0] for m in self.received]


class FhirServer:
    def __init__(self):
        self.mode = "ok"
        self.stall_s = 5.0
        self.bundles: list[dict] = []
        self.store: dict[str, dict] = {}  # conditional URL -> resource
        self.creates: dict[str, int] = {}
        self.invalid: list[str] = []
        self.tokens: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.tokens.append(self.headers.get("Authorization", ""))
                if server.mode == "stall":
                    time.sleep(server.stall_s)
                if server.mode == "500":
                    return self._answer(500, {"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "transient", "diagnostics": "database unavailable"}]})
                bundle = json.loads(body)
                problem = server.validate(bundle)
                if problem or server.mode == "400":
                    return self._answer(400, {"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "invalid",
                         "diagnostics": problem or "Specimen accession not known to this server"}]})
                server.bundles.append(bundle)
                self._answer(200, server.apply(bundle))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def validate(self, bundle: dict) -> str:
        from fhir.resources.R4B import get_fhir_model_class
        from fhir.resources.R4B.bundle import Bundle

        try:
            Bundle.model_validate(bundle)
            for entry in bundle["entry"]:
                get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
        except Exception as exc:  # noqa: BLE001 - any validation failure is the answer's text
            self.invalid.append(str(exc))
            return f"invalid Bundle: {exc}"[:500]
        if bundle.get("type") != "transaction":
            return "not a transaction Bundle"
        return ""

    def apply(self, bundle: dict) -> dict:
        out = []
        for entry in bundle["entry"]:
            request, resource = entry["request"], entry["resource"]
            kind = resource["resourceType"]
            key = (f"{kind}?{request['ifNoneExist']}" if request["method"] == "POST" else request["url"])
            status = "200 OK"
            if key not in self.store:
                self.creates[kind] = self.creates.get(kind, 0) + 1
                status = "201 Created"
            if request["method"] == "PUT" or key not in self.store:
                self.store[key] = resource
            out.append({"response": {"status": status}})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}

    def reports(self) -> list[dict]:
        return [r for r in self.store.values() if r["resourceType"] == "DiagnosticReport"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def conditional_identifier(url: str) -> str:
    return parse_qs(urlparse(url).query)["identifier"][0]
