// One call through an official SDK against spend-cap; prints one JSON line.
//
//   node sdk_check.mjs MODE [maxRetries]
//
// MODE:
//   openai                     chat.completions.create (plain JSON)
//   anthropic                  messages.create (plain JSON)
//   openai-stream              chat.completions.create({stream: true}) without stream_options:
//                              iterates the chunks; reports the usage of the final chunk (which
//                              only arrives if the gateway injected include_usage)
//   openai-responses-stream    responses.stream(...): reports finalResponse().usage
//   anthropic-stream           messages.stream(...): reports finalMessage().usage
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
  } else if (sdk === 'openai-stream') {
    const client = new OpenAI({ ...opts, baseURL: baseUrl + '/v1' });
    try {
      const stream = await client.chat.completions.create({
        model: process.env.SPEND_CAP_MODEL || 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'Say hello.' }],
        max_completion_tokens: 100,
        stream: true,
      });
      let content = '';
      let usage = null;
      let chunks = 0;
      for await (const chunk of stream) {
        chunks += 1;
        if (chunk.choices.length && chunk.choices[0].delta.content) content += chunk.choices[0].delta.content;
        if (chunk.usage) usage = chunk.usage;
      }
      out({ ok: true, chunks, content, usage, maxRetries: client.maxRetries });
    } catch (e) {
      if (!(e instanceof OpenAI.APIError)) throw e;
      out({ ok: false, name: e.constructor.name, status: e.status, code: e.code, type: e.type, error: e.error });
    }
  } else if (sdk === 'openai-responses-stream') {
    const client = new OpenAI({ ...opts, baseURL: baseUrl + '/v1' });
    try {
      const stream = client.responses.stream({
        model: process.env.SPEND_CAP_MODEL || 'gpt-4o-mini',
        input: 'Say hello.',
        max_output_tokens: 100,
      });
      const types = [];
      let text = '';
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'response.output_text.delta') text += event.delta;
      }
      const r = await stream.finalResponse();
      out({ ok: true, id: r.id, status: r.status, text, outputText: r.output_text, usage: r.usage,
            events: types });
    } catch (e) {
      if (!(e instanceof OpenAI.APIError)) throw e;
      out({ ok: false, name: e.constructor.name, status: e.status, code: e.code, type: e.type, error: e.error });
    }
  } else if (sdk === 'anthropic-stream') {
    const client = new Anthropic({ ...opts, baseURL: baseUrl });
    try {
      const stream = client.messages.stream({
        model: process.env.SPEND_CAP_MODEL || 'claude-sonnet-4-5',
        max_tokens: 100,
        messages: [{ role: 'user', content: 'Say hello.' }],
      });
      let text = '';
      stream.on('text', (t) => { text += t; });
      const m = await stream.finalMessage();
      out({ ok: true, id: m.id, type: m.type, text, stopReason: m.stop_reason, usage: m.usage });
    } catch (e) {
      if (!(e instanceof Anthropic.APIError)) throw e;
      out({ ok: false, name: e.constructor.name, status: e.status, error: e.error });
    }
  } else {
    throw new Error('usage: node sdk_check.mjs openai|anthropic|openai-stream|openai-responses-stream|anthropic-stream [maxRetries]');
  }
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(2);
});
