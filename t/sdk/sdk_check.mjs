// One call through an official SDK against spend-cap; prints one JSON line.
//
//   node sdk_check.mjs openai|anthropic [maxRetries]
//
// Environment:
//   SPEND_CAP_URL      NGINX base URL, e.g. http://127.0.0.1:8080 (no /v1)
//   SPEND_CAP_SECRET   the API key secret
//   SPEND_CAP_HEADERS  optional JSON object of extra request headers (x-fake-* controls)
//   SPEND_CAP_MODEL    optional model name
//   SPEND_CAP_AUTH_HEADER=x-api-key  send the secret as x-api-key, not the SDK's default
//
// Output: {"ok":true,...} for a successful call, {"ok":false,...} for an APIError
// (status, code, type, body); exit 0 either way. Anything else exits 2.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const [sdk, retriesArg] = process.argv.slice(2);
const baseUrl = process.env.SPEND_CAP_URL;
const secret = process.env.SPEND_CAP_SECRET;
const headers = JSON.parse(process.env.SPEND_CAP_HEADERS || '{}');
const opts = { apiKey: secret, defaultHeaders: headers, timeout: 20000 };
if (process.env.SPEND_CAP_AUTH_HEADER === 'x-api-key') {
  // the secret in x-api-key instead of the SDK's own Authorization header
  opts.apiKey = null;
  opts.defaultHeaders = { ...headers, 'x-api-key': secret };
}
if (retriesArg !== undefined && retriesArg !== 'default') opts.maxRetries = Number(retriesArg);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  if (sdk === 'openai') {
    const client = new OpenAI({ ...opts, baseURL: baseUrl + '/v1' });
    try {
      const r = await client.chat.completions.create({
        model: process.env.SPEND_CAP_MODEL || 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'Say hello.' }],
        max_completion_tokens: 100,
      });
      out({ ok: true, id: r.id, object: r.object, content: r.choices[0].message.content, usage: r.usage,
            maxRetries: client.maxRetries });
    } catch (e) {
      if (!(e instanceof OpenAI.APIError)) throw e;
      out({ ok: false, name: e.constructor.name, status: e.status, code: e.code, type: e.type,
            param: e.param, error: e.error, maxRetries: client.maxRetries,
            retryAfter: e.headers ? e.headers.get('retry-after') : null });
    }
  } else if (sdk === 'anthropic') {
    const client = new Anthropic({ ...opts, baseURL: baseUrl });
    try {
      const r = await client.messages.create({
        model: process.env.SPEND_CAP_MODEL || 'claude-sonnet-4-5',
        max_tokens: 100,
        messages: [{ role: 'user', content: 'Say hello.' }],
      });
      out({ ok: true, id: r.id, type: r.type, content: r.content, usage: r.usage, maxRetries: client.maxRetries });
    } catch (e) {
      if (!(e instanceof Anthropic.APIError)) throw e;
      out({ ok: false, name: e.constructor.name, status: e.status, error: e.error, type: e.type ?? null,
            maxRetries: client.maxRetries,
            retryAfter: e.headers ? e.headers.get('retry-after') : null });
    }
  } else {
    throw new Error('usage: node sdk_check.mjs openai|anthropic [maxRetries]');
  }
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(2);
});
