// A tiny HTTP app with no Weft code: run it under `weft run`.
//
//   GET /            says which service and instance answered
//   GET /call/NAME   calls service NAME and returns its answer. Node's http
//                    module does not read http_proxy by itself, so the call is
//                    sent to the proxy `weft run` puts in $http_proxy (this
//                    instance's sidecar) with the full URL, as any proxy client does.
"use strict";
const http = require("http");

const port = Number(process.env.PORT || 8000); // weft run passes the port to listen on
const me = { service: process.env.WEFT_SERVICE, instance: process.env.WEFT_INSTANCE_ID, lang: "node" };
const proxy = new URL(process.env.http_proxy || process.env.HTTP_PROXY || "http://127.0.0.1:15001");

function reply(res, code, body) {
  const data = JSON.stringify(body) + "\n";
  res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) });
  res.end(data);
}

http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/") return reply(res, 200, me);
  const m = /^\/call\/([a-z0-9.-]+)$/.exec(req.url);
  if (req.method !== "GET" || !m) return reply(res, 404, { error: "not found" });
  const headers = { Host: m[1] };
  // Keep the trace going: forward the trace headers of the request we serve.
  for (const h of ["traceparent", "tracestate"]) if (req.headers[h]) headers[h] = req.headers[h];
  const call = http.get({ host: proxy.hostname, port: proxy.port, path: `http://${m[1]}/`, headers, timeout: 10000 }, (up) => {
    let body = "";
    up.on("data", (c) => (body += c));
    up.on("end", () => {
      try {
        const answer = JSON.parse(body);
        reply(res, up.statusCode, up.statusCode === 200 ? { from: me, answer } : answer); // the mesh says why, in JSON
      } catch (e) {
        reply(res, 502, { error: String(e) });
      }
    });
  });
  call.on("error", (e) => reply(res, 502, { error: String(e) }));
}).listen(port, "127.0.0.1");
