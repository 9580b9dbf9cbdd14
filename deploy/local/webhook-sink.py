#!/usr/bin/env python3
"""A provider's webhook for the demo: prints what would be sent (one line per call) and answers
200. `omni journeys dispatch --webhook email=http://127.0.0.1:8090/email ...` calls it."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        print(
            f"would send {body.get('template')} by {self.path.strip('/')} to {body.get('customer_id')}"
            f"{' about ' + body['entry_key'] if body.get('entry_key') else ''}"
            f" (journey {body.get('journey_id')}, step {body.get('step')},"
            f" Idempotency-Key {self.headers.get('idempotency-key')})",
            flush=True,
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8090), Sink).serve_forever()
