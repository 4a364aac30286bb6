"""A rewardhooks webhook receiver in Python, with the Standard Webhooks library.

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python3 receiver.py 9000

`--check` reads a sample webhook (JSON from `rewardhooks sample-webhook`) on
stdin and verifies it; `make examples` runs that.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

seen = set()  # use a bounded or persistent store in production


def verify(secret: str, headers: dict, body: bytes) -> dict:
    """Returns the event if the signature and timestamp are valid; raises otherwise."""
    return Webhook(secret).verify(body, headers)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = verify(os.environ["WEBHOOK_SECRET"], headers, body)
        except Exception:
            self.send_response(401)
            self.end_headers()
            return
        if headers["webhook-id"] not in seen:  # deliveries are at least once
            seen.add(headers["webhook-id"])
            print(event["type"], event["id"], json.dumps(event["data"]))  # queue real work
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    if "--check" in sys.argv:
        sample = json.load(sys.stdin)
        event = verify(sample["secret"], sample["headers"], sample["body"].encode())
        tampered = sample["body"].replace(event["id"], event["id"] + "x")
        try:
            verify(sample["secret"], sample["headers"], tampered.encode())
            sys.exit("a tampered body verified")
        except Exception:
            pass
        print("python: verified", event["type"], event["id"])
    else:
        port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
        HTTPServer(("127.0.0.1", port), Handler).serve_forever()
