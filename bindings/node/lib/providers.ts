// Usage extraction from the providers' own JSON (synchronous: pure computation).
import { jsonText } from './errors';
import { native, type NativeStreamUsageHandle } from './native';
import type { Usage } from './types';

/** `openai-chat` (alias `openai`), `openai-responses`, `anthropic`, `gemini` (alias `google`). */
export type ApiFormat = 'openai-chat' | 'openai' | 'openai-responses' | 'anthropic' | 'gemini' | 'google';

function text(body: string | Uint8Array | object): string | Uint8Array {
  return typeof body === 'string' || body instanceof Uint8Array ? body : jsonText(body, 'response body');
}

/** Token estimate of text: ceil(ASCII bytes / 4) + 1 per non-ASCII code point (errs high). */
export function estimateTokens(text: string): number {
  return native.estimateTokens(text);
}

/**
 * Usage of a complete (non-streamed) response: JSON text, bytes, or the parsed object.
 * Malformed JSON: InvalidArgumentError. A body without usage: an estimate, complete=false.
 */
export function usageFromResponse(format: ApiFormat, body: string | Uint8Array | object): Usage {
  return native.usageFromResponse(format, text(body));
}

/** Accumulates one streamed response: raw SSE bytes (`feed`) or parsed events (`feedEvent`). */
export class StreamUsage {
  private readonly n: NativeStreamUsageHandle;
  constructor(format: ApiFormat, options: { inputTokensEstimate?: number } = {}) {
    this.n = new native.NativeStreamUsage(format, options.inputTokensEstimate);
  }
  /** Raw body bytes as they arrive (SSE split anywhere). */
  feed(bytes: string | Uint8Array): void {
    this.n.feed(bytes);
  }
  /** One event: its JSON payload text or the parsed object (as the SDKs yield it). */
  feedEvent(event: string | object): void {
    this.n.feedEvent(typeof event === 'string' ? event : jsonText(event, 'event'));
  }
  /** End of stream; returns the final usage (complete=false when the provider sent none). */
  finish(): Usage {
    return this.n.finish();
  }
  /** Final numbers once seen, else the best estimate so far (complete=false). */
  get usage(): Usage {
    return this.n.usage();
  }
  get hasFinalUsage(): boolean {
    return this.n.hasFinalUsage();
  }
  get estimatedOutputTokens(): number {
    return this.n.estimatedOutputTokens();
  }
  get events(): number {
    return this.n.events();
  }
}
