// A rewardhooks webhook receiver in Node.js, with the Standard Webhooks library.
//
//   npm install standardwebhooks
//   WEBHOOK_SECRET=whsec_... node receiver.cjs 9000
//
// `--check` reads a sample webhook (JSON from `rewardhooks sample-webhook`) on
// stdin and verifies it; `make examples` runs that.
const http = require("http");
const { Webhook } = require("standardwebhooks");

const seen = new Set(); // use a bounded or persistent store in production

// Returns the event if the signature and timestamp are valid; throws otherwise.
function verify(secret, headers, body) {
  return new Webhook(secret.replace(/^whsec_/, "")).verify(body, headers);
}

if (process.argv.includes("--check")) {
  let input = "";
  process.stdin.on("data", (chunk) => (input += chunk));
  process.stdin.on("end", () => {
    const sample = JSON.parse(input);
    const event = verify(sample.secret, sample.headers, sample.body);
    let tamperedVerified = true;
    try {
      verify(sample.secret, sample.headers, sample.body.replace(event.id, event.id + "x"));
    } catch (e) {
      tamperedVerified = false;
    }
    if (tamperedVerified) {
      console.error("a tampered body verified");
      process.exit(1);
    }
    console.log("node: verified", event.type, event.id);
  });
} else {
  const port = Number(process.argv[2] || 9000);
  http
    .createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        let event;
        try {
          event = verify(process.env.WEBHOOK_SECRET, req.headers, body);
        } catch (e) {
          res.writeHead(401).end();
          return;
        }
        if (!seen.has(req.headers["webhook-id"])) { // deliveries are at least once
          seen.add(req.headers["webhook-id"]);
          console.log(event.type, event.id, JSON.stringify(event.data)); // queue real work
        }
        res.writeHead(204).end();
      });
    })
    .listen(port, "127.0.0.1");
}
