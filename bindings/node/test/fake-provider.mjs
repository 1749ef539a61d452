// @ts-check
// A fake LLM provider on a loopback port: OpenAI Chat Completions and Anthropic Messages,
// streaming realistic Server-Sent Events paced chunk by chunk, so the real `openai` and
// `@anthropic-ai/sdk` clients can be driven end to end. Bounded: every stream has a fixed
// number of chunks and stops writing as soon as the client goes away.
import * as http from 'node:http';

/**
 * @typedef {object} Scenario
 * @property {number} [chunks]        content deltas to stream
 * @property {string} [text]          text of each delta
 * @property {number} [promptTokens]  reported input tokens
 * @property {number} [cachedTokens]  of which cache reads
 * @property {number} [tokensPerChunk] reported output tokens per delta
 * @property {number} [failAfter]     destroy the connection after this many deltas
 * @property {number} [status]        answer with this HTTP error instead of a stream
 * @property {boolean} [omitUsage]    never send usage (as a provider that ignores include_usage)
 * @property {number} [delayMs]       pause between deltas (0 = next tick)
 */

export async function startFakeProvider() {
  const state = {
    /** @type {{ url: string, body: any }[]} */ requests: [],
    aborted: 0,
    completed: 0,
    /** @type {Scenario} */ scenario: {},
  };
  /** @type {Set<import('node:net').Socket>} */
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    let raw = '';
    for await (const c of req) raw += c;
    let body;
    try {
      body = JSON.parse(raw || '{}');
    } catch {
      res.writeHead(400).end();
      return;
    }
    state.requests.push({ url: req.url ?? '', body });
    const sc = { chunks: 5, text: 'Hello', promptTokens: 50, cachedTokens: 0, tokensPerChunk: 4, delayMs: 1, ...state.scenario };
    const anthropic = (req.url ?? '').startsWith('/v1/messages');
    if (sc.status && sc.status !== 200) {
      res.writeHead(sc.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(anthropic
        ? { type: 'error', error: { type: 'api_error', message: 'fake upstream failure' } }
        : { error: { message: 'fake upstream failure', type: 'server_error', code: null } }));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    let gone = false;
    res.on('close', () => {
      if (!res.writableEnded) {
        gone = true;
        state.aborted++;
      }
    });
    /** @param {string} s */
    const write = (s) => new Promise((r) => res.write(s, () => r(undefined)));
    const pause = () => new Promise((r) => (sc.delayMs > 0 ? setTimeout(r, sc.delayMs) : setImmediate(r)));
    const outTokens = sc.chunks * sc.tokensPerChunk;
    const model = body.model ?? 'unknown';

    if (!anthropic) {
      const includeUsage = !sc.omitUsage && body.stream_options?.include_usage === true;
      const base = { id: 'chatcmpl-fake1', object: 'chat.completion.chunk', created: 1773144000, model, system_fingerprint: 'fp_fake' };
      /** @param {object} delta @param {string|null} finish */
      const chunk = (delta, finish) => `data: ${JSON.stringify({ ...base,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...(includeUsage ? { usage: null } : {}) })}\n\n`;
      await write(chunk({ role: 'assistant', content: '', refusal: null }, null));
      for (let i = 0; i < sc.chunks && !gone; i++) {
        if (sc.failAfter !== undefined && i === sc.failAfter) {
          res.destroy();
          return;
        }
        await write(chunk({ content: sc.text }, null));
        await pause();
      }
      if (gone) return;
      await write(chunk({}, 'stop'));
      if (includeUsage) {
        await write(`data: ${JSON.stringify({ ...base, choices: [], usage: {
          prompt_tokens: sc.promptTokens, completion_tokens: outTokens, total_tokens: sc.promptTokens + outTokens,
          prompt_tokens_details: { cached_tokens: sc.cachedTokens, audio_tokens: 0 },
          completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
        } })}\n\n`);
      }
      await write('data: [DONE]\n\n');
    } else {
      /** @param {string} type @param {object} data */
      const ev = (type, data) => write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
      await ev('message_start', { message: { id: 'msg_fake1', type: 'message', role: 'assistant', content: [], model,
        stop_reason: null, stop_sequence: null,
        usage: sc.omitUsage ? undefined : { input_tokens: sc.promptTokens - sc.cachedTokens, cache_creation_input_tokens: 0,
          cache_read_input_tokens: sc.cachedTokens, output_tokens: 1 } } });
      await ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
      await ev('ping', {});
      for (let i = 0; i < sc.chunks && !gone; i++) {
        if (sc.failAfter !== undefined && i === sc.failAfter) {
          res.destroy();
          return;
        }
        await ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: sc.text } });
        await pause();
      }
      if (gone) return;
      await ev('content_block_stop', { index: 0 });
      await ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null },
        usage: sc.omitUsage ? undefined : { output_tokens: outTokens } });
      await ev('message_stop', {});
    }
    state.completed++;
    res.end();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${addr.port}`,
    state,
    /** @param {Scenario} sc */
    reset(sc) {
      state.scenario = sc;
      state.requests = [];
      state.aborted = 0;
      state.completed = 0;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r(undefined)));
    },
  };
}
