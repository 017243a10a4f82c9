"""A tiny HTTP app with no Weft code: run it under `weft run`.

GET /            says which service and instance answered
GET /call/NAME   calls service NAME (http://NAME/) and returns its answer;
                 urllib sends the call to $http_proxy, which `weft run` points
                 at this instance's sidecar, so NAME is found in the mesh.
"""
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8000"))  # weft run passes the port to listen on
ME = {
    "service": os.environ.get("WEFT_SERVICE", "?"),
    "instance": os.environ.get("WEFT_INSTANCE_ID", "?"),
    "lang": "python",
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/call/"):
            name = self.path[len("/call/"):]
            req = urllib.request.Request("http://%s/" % name)
            # Keep the trace going: forward the trace headers of the request we serve.
            for h in ("traceparent", "tracestate"):
                if self.headers.get(h):
                    req.add_header(h, self.headers[h])
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    body = json.dumps({"from": ME, "answer": json.loads(resp.read())})
                    code = 200
            except urllib.error.HTTPError as e:  # the mesh says why, in JSON
                body, code = e.read().decode(), e.code
            except Exception as e:  # noqa: BLE001 - an example: say what failed
                body, code = json.dumps({"error": str(e)}), 502
        else:
            body, code = json.dumps(ME), 200
        data = (body + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet: the sidecar logs and counts requests
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
