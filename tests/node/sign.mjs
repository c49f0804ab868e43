// Signs a body with a sender's own npm library and prints the request headers as JSON.
//   node sign.mjs github|stripe|svix|standardwebhooks SECRET BODYFILE [MSGID] [UNIX_TS]
import fs from 'node:fs';

const [lib, secret, file, msgId, ts] = process.argv.slice(2);
const body = fs.readFileSync(file, 'utf8');
const t = ts ? Number(ts) : Math.floor(Date.now() / 1000);
let headers;
switch (lib) {
  case 'github': {
    const { sign } = await import('@octokit/webhooks-methods');
    headers = { 'X-Hub-Signature-256': await sign(secret, body) };
    break;
  }
  case 'stripe': {
    const Stripe = (await import('stripe')).default;
    const stripe = new Stripe('sk_test_unused');
    headers = { 'Stripe-Signature': stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp: t }) };
    break;
  }
  case 'svix': {
    const { Webhook } = await import('svix');
    const sig = new Webhook(secret).sign(msgId, new Date(t * 1000), body);
    headers = { 'svix-id': msgId, 'svix-timestamp': String(t), 'svix-signature': sig };
    break;
  }
  case 'standardwebhooks': {
    const { Webhook } = await import('standardwebhooks');
    const sig = new Webhook(secret).sign(msgId, new Date(t * 1000), body);
    headers = { 'webhook-id': msgId, 'webhook-timestamp': String(t), 'webhook-signature': sig };
    break;
  }
  default:
    console.error(`unknown library ${lib}`);
    process.exit(2);
}
console.log(JSON.stringify(headers));
