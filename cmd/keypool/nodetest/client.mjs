// Drives a running keypool proxy with the official openai Node client.
// TestNodeClient (cmd/keypool/node_test.go) builds the proxy, starts it
// in front of the simulator and runs this script; it starts nothing
// itself. Exit code 0 means every check passed.
//
// Environment: KEYPOOL_URL (the proxy, http://host:port), KEYPOOL_TOKEN (a
// client token it accepts), STREAM_CHUNKS (how many content chunks the
// simulator streams).
import OpenAI from 'openai';

const proxyURL = process.env.KEYPOOL_URL;
const token = process.env.KEYPOOL_TOKEN;
const chunks = Number(process.env.STREAM_CHUNKS);
if (!proxyURL || !token || !(chunks > 0)) {
  console.error('set KEYPOOL_URL, KEYPOOL_TOKEN and STREAM_CHUNKS');
  process.exit(2);
}

const TOTAL = 200;
const CONCURRENCY = 40;
const MODEL = 'deepseek-chat';
const expectedStream = Array.from({ length: chunks }, (_, i) => `tok${i} `).join('');

// keypool retries on other keys; the client's own retries would hide
// failures from this test.
const client = new OpenAI({ baseURL: `${proxyURL}/v1`, apiKey: token, maxRetries: 0, timeout: 60_000 });

const failures = [];
const fail = (msg) => failures.push(msg);

async function streamText(stream) {
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, usage };
}

// One request; every fifth streams.
async function one(i) {
  const messages = [{ role: 'user', content: `request ${i}` }];
  if (i % 5 !== 0) {
    const r = await client.chat.completions.create({ model: MODEL, messages });
    const content = r.choices[0]?.message?.content;
    if (content !== 'Hello from the simulator.') throw new Error(`answer ${JSON.stringify(content)}`);
    if (!(r.usage?.total_tokens > 0)) throw new Error('no usage in the answer');
    return 'json';
  }
  const stream = await client.chat.completions.create({
    model: MODEL, messages, stream: true, stream_options: { include_usage: true },
  });
  const { text, usage } = await streamText(stream);
  if (text !== expectedStream) throw new Error(`stream ${JSON.stringify(text)}, want ${JSON.stringify(expectedStream)}`);
  if (!(usage?.total_tokens > 0)) throw new Error('no usage in the stream');
  return 'stream';
}

async function health() {
  const r = await fetch(`${proxyURL}/healthz`);
  return r.json();
}

// 200 requests, 40 at a time.
const counts = { json: 0, stream: 0 };
let next = 0;
await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
  while (next < TOTAL) {
    const i = next++;
    try {
      counts[await one(i)]++;
    } catch (e) {
      fail(`request ${i}: ${e}`);
    }
  }
}));
if (counts.json + counts.stream !== TOTAL) fail(`${counts.json} + ${counts.stream} answers, want ${TOTAL}`);

// A stream aborted after its first chunk frees its key's slot at once,
// long before the simulator would have finished it.
{
  const ac = new AbortController();
  const stream = await client.chat.completions.create(
    { model: MODEL, messages: [{ role: 'user', content: 'abort me' }], stream: true },
    { signal: ac.signal },
  );
  let seen = 0;
  try {
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) {
        seen++;
        ac.abort(); // the SDK then ends the iteration without an error
      }
    }
  } catch (e) {
    if (!(e instanceof OpenAI.APIUserAbortError || e?.name === 'AbortError')) fail(`aborted stream threw ${e}`);
  }
  if (!ac.signal.aborted || seen !== 1) fail(`abort: ${seen} chunks seen after aborting, want 1`);
  const deadline = Date.now() + 10_000;
  let h = await health();
  while (h.in_flight !== 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
    h = await health();
  }
  if (h.in_flight !== 0) fail(`after the abort /healthz says ${JSON.stringify(h)}`);
}

// A bad token gets OpenAI's 401, which the client reports as such.
{
  const bad = new OpenAI({ baseURL: `${proxyURL}/v1`, apiKey: 'not-a-valid-token', maxRetries: 0 });
  try {
    await bad.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
    fail('a bad token was accepted');
  } catch (e) {
    if (!(e instanceof OpenAI.AuthenticationError) || e.status !== 401 || e.code !== 'invalid_api_key') {
      fail(`bad token: ${e?.constructor?.name} status=${e?.status} code=${e?.code}`);
    }
  }
}

const h = await health();
if (h.status !== 'ok' || h.in_flight !== 0) fail(`final /healthz ${JSON.stringify(h)}`);

console.log(JSON.stringify({ requests: TOTAL, ...counts, failures: failures.length }));
if (failures.length > 0) {
  for (const f of failures.slice(0, 20)) console.error(`FAIL ${f}`);
  process.exit(1);
}
