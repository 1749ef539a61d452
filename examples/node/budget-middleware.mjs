// @ts-check
// Express middleware that guards an OpenAI-compatible /v1/chat/completions proxy with
// libbudget:
//  * before the upstream call: reserve the priced estimate (prompt + max output tokens) on
//    the caller's subject; a hard cap answers 402 with `x-should-retry: false`, a temporary
//    lack of headroom (held by in-flight requests, or a rate limit) answers 429 with
//    `Retry-After`; both with an OpenAI-shaped error body;
//  * streamed answers: the upstream SSE bytes are metered as they pass (StreamUsage.feed),
//    each chunk's running cost is consumed, and the stream is cut when the answer is Stop;
//  * at the end: commit the provider's usage (stream_options.include_usage is forced), or,
//    when the client went away or upstream failed, the estimate so far marked incomplete.
import { BudgetExceededError, BudgetError, StreamUsage, estimateTokens } from 'libbudget';

/** @typedef {import('libbudget').BudgetManager} BudgetManager */
/** @typedef {import('libbudget').Denial} Denial */

/**
 * An OpenAI-shaped error response.
 * @param {import('express').Response} res @param {number} status
 * @param {{ message: string, type: string, code: string }} err
 */
export function sendError(res, status, err) {
  res.status(status).json({ error: { message: err.message, type: err.type, param: null, code: err.code } });
}

/**
 * 402 for a hard cap, 429 + Retry-After when a retry may succeed.
 * @param {import('express').Response} res @param {Denial} denial @param {Date} now
 */
export function sendDenial(res, denial, now) {
  if (denial.reason === 'store_unavailable') {
    res.set('Retry-After', '1');
    return sendError(res, 503, { message: 'budget store unavailable', type: 'server_error', code: 'budget_store_unavailable' });
  }
  if (denial.hard) {
    res.set('x-should-retry', 'false');
    return sendError(res, 402, {
      message: `Budget exceeded for ${denial.scope} (${denial.window} limit). ${denial.message}`.trim(),
      type: 'insufficient_quota', code: 'budget_exceeded',
    });
  }
  const retry = denial.resetsAt ? Math.max(1, Math.ceil((denial.resetsAt.getTime() - now.getTime()) / 1000)) : 1;
  // In-flight holds free up within seconds; cap the hint for long windows.
  res.set('Retry-After', String(denial.metric === 'cost' ? Math.min(retry, 5) : retry));
  return sendError(res, 429, {
    message: `Budget headroom for ${denial.scope} (${denial.window}) is held by in-flight requests or rate-limited; retry later.`,
    type: 'rate_limit_exceeded', code: denial.metric === 'cost' ? 'budget_headroom' : 'rate_limit_exceeded',
  });
}

/**
 * @param {{
 *   manager: BudgetManager,
 *   subject: (req: import('express').Request) => string[],
 *   upstream: string,                 // e.g. "https://api.openai.com/v1"
 *   upstreamKey?: string,
 *   defaultMaxTokens?: number,
 * }} options
 * @returns {import('express').RequestHandler}
 */
export function chatCompletionsProxy(options) {
  const { manager } = options;
  const pricing = manager.pricing;
  if (!pricing) throw new Error('the BudgetManager needs a pricing engine');
  return async (req, res) => {
    const body = req.body;
    if (!body || typeof body !== 'object' || typeof body.model !== 'string' || !Array.isArray(body.messages)) {
      return sendError(res, 400, { message: 'model and messages are required', type: 'invalid_request_error', code: 'invalid_request' });
    }
    const model = body.model;
    const inputTokens = estimateTokens(JSON.stringify(body.messages));
    const maxOut = body.max_completion_tokens ?? body.max_tokens ?? options.defaultMaxTokens ?? 1024;
    let decision;
    try {
      decision = await manager.reserve(options.subject(req), { model, usage: { inputTokens, outputTokens: maxOut } },
        { provider: 'openai', metadata: { route: 'chat.completions' } });
    } catch (e) {
      if (e instanceof BudgetError && e.code === 'UNKNOWN_MODEL') {
        return sendError(res, 400, { message: `unknown model ${model}`, type: 'invalid_request_error', code: 'model_not_found' });
      }
      if (e instanceof BudgetError && e.code === 'INVALID_ARGUMENT') {
        // the request's values (max_tokens, the caller's ids) are not acceptable: the client's mistake
        return sendError(res, 400, { message: e.message, type: 'invalid_request_error', code: 'invalid_request' });
      }
      throw e;
    }
    if (!decision.allowed) return sendDenial(res, decision.denial, manager.now());
    const reservation = /** @type {import('libbudget').Reservation} */ (decision.reservation);
    const stream = body.stream === true;
    const upstreamBody = stream ? { ...body, stream_options: { ...(body.stream_options ?? {}), include_usage: true } } : body;
    const controller = new AbortController();
    let settled = false;
    /** @param {import('libbudget').Usage | null} usage */
    const settle = async (usage) => {
      if (settled) return;
      settled = true;
      if (usage) await manager.commit(reservation, { model, usage, provider: 'openai' });
      else await manager.release(reservation);
    };
    res.on('close', () => { if (!res.writableFinished) controller.abort(); });

    let upstream;
    try {
      upstream = await fetch(`${options.upstream}/chat/completions`, {
        method: 'POST', signal: controller.signal,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${options.upstreamKey ?? 'none'}` },
        body: JSON.stringify(upstreamBody),
      });
    } catch {
      await settle(null);
      return sendError(res, 502, { message: 'upstream unreachable', type: 'server_error', code: 'upstream_error' });
    }
    if (!upstream.ok || !upstream.body) {
      await settle(null);
      res.status(upstream.status).type('application/json').send(await upstream.text());
      return;
    }
    if (!stream) {
      const text = await upstream.text();
      const { usageFromResponse } = await import('libbudget');
      let usage;
      try {
        usage = usageFromResponse('openai-chat', text);
      } catch {
        // The call was made (and billed upstream) but its usage cannot be read: charge what was
        // held rather than leave the hold to its TTL or charge nothing.
        settled = true;
        await manager.commit(reservation, reservation.held);
        return sendError(res, 502, { message: 'upstream answered malformed JSON', type: 'server_error', code: 'upstream_error' });
      }
      await settle(usage);
      res.status(200).type('application/json').send(text);
      return;
    }
    res.status(200).set({ 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    const meter = new StreamUsage('openai-chat', { inputTokensEstimate: inputTokens });
    let consumed = 0n;
    let bytes = 0;
    try {
      for await (const piece of upstream.body) {
        meter.feed(piece);
        bytes += piece.length;
        const running = pricing.cost(model, meter.usage);
        if (running > consumed) {
          const r = await manager.consume(reservation, running - consumed);
          consumed = running;
          if (r.verdict === 'stop') {
            controller.abort();
            const err = new BudgetExceededError(/** @type {Denial} */ (r.denial), reservation.requestId);
            res.write(`data: ${JSON.stringify({ error: { message: `stream stopped: ${err.message}`, type: 'insufficient_quota', param: null, code: 'budget_exceeded' } })}\n\n`);
            break;
          }
        }
        res.write(piece);
      }
      const usage = controller.signal.aborted ? { ...meter.usage, complete: false } : meter.finish();
      await settle(bytes > 0 ? usage : null);
    } catch {
      await settle(bytes > 0 ? { ...meter.usage, complete: false } : null);
    } finally {
      res.end();
    }
  };
}
