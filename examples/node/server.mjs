// @ts-check
// Runs the guarded proxy:  UPSTREAM_URL=https://api.openai.com/v1 UPSTREAM_KEY=sk-... \
//   BUDGET_STORE=sqlite:budget.db node server.mjs
// Callers name themselves with the x-user-id / x-tenant-id headers (authenticate them in a
// real deployment!).
import express from 'express';
import { pathToFileURL } from 'node:url';
import { BudgetManager, PricingEngine } from 'libbudget';
import { chatCompletionsProxy } from './budget-middleware.mjs';

/**
 * @param {{ manager: BudgetManager, upstream: string, upstreamKey?: string }} o
 */
export function createApp(o) {
  const app = express();
  app.use(express.json({ limit: '4mb' }));
  app.post('/v1/chat/completions', chatCompletionsProxy({
    manager: o.manager, upstream: o.upstream, upstreamKey: o.upstreamKey,
    subject: (req) => {
      const s = [];
      const tenant = req.get('x-tenant-id');
      const user = req.get('x-user-id');
      if (tenant) s.push(`tenant:${tenant}`);
      if (user) s.push(`user:${user}`);
      return s;
    },
  }));
  return app;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const manager = await BudgetManager.open({
    store: process.env.BUDGET_STORE ?? 'sqlite:budget.db',
    pricing: PricingEngine.bundled(),
    limits: [
      { scope: 'user:*', window: 'day', amount: process.env.USER_DAILY_LIMIT ?? '1.00' },
      { scope: 'user:*', window: 'minute', amount: 60, metric: 'requests' },
      { scope: 'global', window: 'month', amount: process.env.GLOBAL_MONTHLY_LIMIT ?? '500' },
    ],
  });
  const port = Number(process.env.PORT ?? 8080);
  createApp({ manager, upstream: process.env.UPSTREAM_URL ?? 'https://api.openai.com/v1', upstreamKey: process.env.UPSTREAM_KEY })
    .listen(port, '127.0.0.1', () => console.log(`guarded proxy on http://127.0.0.1:${port}/v1/chat/completions`));
}
