// Verifies deliveries with the official standardwebhooks library: reads
// {"secret": S, "deliveries": [{"headers": {...}, "body": "..."}]} on stdin,
// prints {"verified": N, "errors": [...]} (spend-cap-relay's tests).
import { Webhook } from "standardwebhooks";

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const { secret, deliveries } = JSON.parse(input);
  const wh = new Webhook(secret);
  let verified = 0;
  const errors = [];
  for (const d of deliveries) {
    try {
      wh.verify(d.body, {
        "webhook-id": d.headers["webhook-id"],
        "webhook-timestamp": d.headers["webhook-timestamp"],
        "webhook-signature": d.headers["webhook-signature"],
      });
      verified++;
    } catch (e) {
      errors.push(String(e && e.message ? e.message : e));
    }
  }
  process.stdout.write(JSON.stringify({ verified, errors }));
});
