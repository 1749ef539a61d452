// The Redis store's server-side scripts (internal). Each operation is ONE script call: the
// prelude (shared helpers) followed by the operation's body. They mirror src/stores/txn_ops.cpp
// exactly; the conformance suite keeps them in agreement.
//
// Calling convention: KEYS[1] = "{ns}:lv" (the hash tag of the namespace; every key a script
// touches starts with "{ns}:", so one script touches one Redis Cluster slot).
// ARGV[1] = now (ms), ARGV[2] = stream cap, ARGV[3] = TTL of settled request records (ms),
// then the operation's arguments.
//
// Loading: the store loads all of them as ONE Redis function library (FUNCTION LOAD; the
// prelude runs once per load, each call runs only its operation: FCALL <lib>_<op>), named after
// the SHA-1 of its text so versions coexist. On servers without functions (Redis < 7) each
// operation is sent as EVAL/EVALSHA of prelude + body. See library() in redis.cpp.
//
// Key layout 2 (see docs/redis.md): counter buckets are hashes updated with HINCRBY, plans travel
// as flat argument lists (no JSON decoding on the hot path) and are stored once per plan under
// "{ns}:p:<sha1 of the plan>" for the later settle/grow/expire of a hold.
//
// The hot scripts are written for the Lua interpreter's cost model: few redis.call, no string
// building in loops, keys precomputed by the client, numbers formatted once.
//
// Numbers: Lua numbers are doubles. Every amount, limit and counter a script reads must be
// below 2^53 in magnitude (checked: BUDGET_OVERFLOW otherwise, raised before any write), sums
// are checked to stay below 2^53, and comparisons (room, over-limit) are exact (direct below
// 2^50, an exact split sum above), so every result is exact. Numbers are written with
// string.format('%d') or passed through as the client's decimal text, never tostring, never
// INCRBYFLOAT.
#pragma once

namespace budget::detail::redis_lua {

inline constexpr const char* kPrelude = R"LUA(
-- redis.call, string.format, math.floor: bound by init (a library cannot read them while it loads)
local call, sfmt, floor
local LIM = 9007199254740992
local L50 = 1125899906842624
local T26 = 67108864
local FOREVER = '9223372036854775807'
-- The call's context, set by init() at the start of every call (calls never overlap).
local KEYS, ARGV, B, NOWS, NOW, MAXLEN, RTTL, EV, LASTSEQ, BK, SWEPT
local function init(keys, args)
  call, sfmt, floor = redis.call, string.format, math.floor
  KEYS, ARGV = keys, args
  B = string.sub(keys[1], 1, -3)
  NOWS = args[1]
  NOW = tonumber(NOWS)
  MAXLEN = tonumber(args[2])
  RTTL = tonumber(args[3])
  EV, LASTSEQ, BK, SWEPT = 0, 0, {}, 0
end

local function ovf(what)
  error({err = 'BUDGET_OVERFLOW ' .. what .. ' reached 2^53, the exact range of the Redis store'})
end
local function fmt(x) return sfmt('%d', x) end
local function num(s)
  if not s or s == '' then return 0 end
  local x = tonumber(s)
  if not x then error({err = 'BUDGET_CORRUPT not a number: ' .. tostring(s)}) end
  if x >= LIM or x <= -LIM then ovf('a counter or amount') end
  return x
end
local function add(a, b)
  local s = a + b
  if s >= LIM or s <= -LIM then ovf('a sum') end
  return s
end
-- Sign of the exact sum of integers (each below 2^53 in magnitude).
local function sgn(...)
  local h, l = 0, 0
  for i = 1, select('#', ...) do
    local x = select(i, ...)
    local xh = floor(x / T26)
    h = h + xh
    l = l + (x - xh * T26)
  end
  local c = floor(l / T26)
  h = h + c
  l = l - c * T26
  if h > 0 then return 1 elseif h < 0 then return -1 elseif l > 0 then return 1 end
  return 0
end

-- Plans. The flat form (built once per plan by the client, stored under {ns}:p:<id>):
--   nw, nc, window keys joined by '\n', then per window: bucket key, series index key ('' for a
--   single-bucket window: total, custom), start, end, read_from, rolling ('1'/'0'), then per
--   check: window*8 + metric*2 + grantable, limit.
local function plan_at(a, o)
  local nw, nc = tonumber(a[o]), tonumber(a[o + 1])
  local p = {w = {}, c = {}, wk = a[o + 2], n = 3 + nw * 6 + nc * 2}
  local k = o + 3
  for i = 1, nw do
    p.w[i] = {ck = a[k], xk = a[k + 1], ss = a[k + 2], start = tonumber(a[k + 2]), es = a[k + 3],
              e = tonumber(a[k + 3]), rfs = a[k + 4], rf = tonumber(a[k + 4]), roll = a[k + 5] == '1'}
    k = k + 6
  end
  for i = 1, nc do
    local code = tonumber(a[k])
    p.c[i] = {w = floor(code / 8) + 1, m = floor(code / 2) % 4 + 1, g = code % 2 == 1, lim = tonumber(a[k + 1])}
    k = k + 2
  end
  return p
end
-- Parsed plans by namespace and plan id (the SHA-1 of the plan's JSON: a plan never changes
-- under its id). Kept across calls while the function library stays loaded (not with plain
-- EVAL scripts, where the prelude runs on every call); read-only; bounded.
local PLANS, NPLANS = {}, 0
local function remember(k, p)
  if NPLANS >= 4096 then PLANS, NPLANS = {}, 0 end
  PLANS[k] = p
  NPLANS = NPLANS + 1
  return p
end
local function plan_arg(id, o)
  local k = B .. id
  return PLANS[k] or remember(k, plan_at(ARGV, o))
end
-- The same from the JSON copy kept in a request record (a plan key that expired): slow path.
local function plan_json(text)
  local j = cjson.decode(text)
  local p = {w = {}, c = {}}
  local wk = {}
  for i, w in ipairs(j.w) do
    local ser = w[1] .. '|' .. w[2]
    local e = w[4]
    local single = e >= LIM or string.sub(w[2], 1, 7) == 'custom:'
    local ss = fmt(w[3])
    wk[i] = ser .. '|' .. ss
    p.w[i] = {ck = B .. 'b:' .. wk[i], xk = single and '' or (B .. 'x:' .. ser), ss = ss, start = w[3],
              es = e >= LIM and FOREVER or fmt(e), e = e, rfs = fmt(w[5]), rf = w[5],
              roll = string.sub(w[2], 1, 8) == 'rolling:'}
  end
  p.wk = table.concat(wk, '\n')
  for i, c in ipairs(j.c) do p.c[i] = {w = c[1] + 1, m = c[2] + 1, lim = c[3], g = c[4]} end
  return p
end

-- current_view (txn_ops.cpp): the plan's windows as they stand at NOW; a rolling window
-- slides forward, a calendar window stays the one the reservation was charged to.
local function current_view(p)
  local v = {w = {}, c = p.c, wk = p.wk}
  for i, w in ipairs(p.w) do
    v.w[i] = w
    if w.roll and w.e > w.start then
      local g = w.e - w.start
      local q = floor(NOW / g)
      local r = NOW - q * g
      if r < 0 then q = q - 1 elseif r >= g then q = q + 1 end
      local cur = q * g
      if cur > w.start then
        local ss = fmt(cur)
        local rf = w.rf + (cur - w.start)
        v.w[i] = {ck = string.sub(w.ck, 1, #w.ck - #w.ss) .. ss, xk = w.xk, ss = ss, start = cur,
                  es = fmt(cur + g), e = cur + g, rfs = fmt(rf), rf = rf, roll = true}
      end
    end
  end
  return v
end

-- Counter buckets: "{ns}:b:<scope>|<window>|<start>" hash: e = end, 1..9 = spent, held, granted
-- x cost, tokens, requests (absent = 0), n = '1' once a later bucket of the series exists.
-- "{ns}:x:<scope>|<window>" indexes the bucket starts of a series (zset) for calendar and
-- rolling windows.
-- Numbers passed to redis.call are formatted with %.14g (slow, and inexact past 1e14): the
-- scripts pass strings.
local FNAME = {'1', '2', '3', '4', '5', '6', '7', '8', '9'}
local FIELD = {['1'] = 1, ['2'] = 2, ['3'] = 3, ['4'] = 4, ['5'] = 5, ['6'] = 6, ['7'] = 7, ['8'] = 8, ['9'] = 9}
local function getb(k)
  local b = BK[k]
  if b then return b end
  local v = call('HGETALL', k)  -- a bucket holds few fields: cheaper than HMGET of all eleven
  b = {0, 0, 0, 0, 0, 0, 0, 0, 0, ex = false, nx = false}
  for i = 1, #v, 2 do
    local f = v[i]
    local m = FIELD[f]
    if m then b[m] = num(v[i + 1]) elseif f == 'e' then b.ex = true elseif f == 'n' then b.nx = true end
  end
  BK[k] = b
  return b
end
local function prefix_of(w) return string.sub(w.ck, 1, #w.ck - #w.ss) end
-- Per window: counters summed over every bucket of the series starting at or after read_from.
-- A window read from its own bucket (calendar) whose bucket exists and has no later bucket
-- (no n) is that bucket alone; otherwise the series index names the buckets.
local function sums(p)
  local out = {}
  for i, w in ipairs(p.w) do
    local b = (w.xk == '' or w.rf == w.start) and getb(w.ck)
    if b and (w.xk == '' or (b.ex and not b.nx)) then
      out[i] = b
    else
      local starts = call('ZRANGEBYSCORE', w.xk, w.rfs, '+inf')
      if #starts == 1 and starts[1] == w.ss then
        out[i] = getb(w.ck)
      else
        local pre = prefix_of(w)
        local acc = {0, 0, 0, 0, 0, 0, 0, 0, 0}
        for _, s in ipairs(starts) do
          local c = getb(s == w.ss and w.ck or pre .. s)
          for m = 1, 9 do acc[m] = add(acc[m], c[m]) end
        end
        out[i] = acc
      end
    end
  end
  return out
end
local function states(p, S)
  local st = {}
  for i, c in ipairs(p.c) do
    local b = S[c.w]
    st[i] = {b[c.m], b[3 + c.m], b[6 + c.m]}
  end
  return st
end
local function flat_states(st)
  local out = {}
  for i, s in ipairs(st) do out[#out + 1] = s[1]; out[#out + 1] = s[2]; out[#out + 1] = s[3] end
  return out
end
-- has_room (src/store.hpp): spent + held + need <= limit (+ granted); need 0 needs some room.
local function room(c, s, need)
  local a, h, l = s[1], s[2], c.lim
  local g = c.g and s[3] or 0
  if a < L50 and a > -L50 and h < L50 and h > -L50 and g < L50 and g > -L50 and l < L50 and l > -L50 and
     need < L50 and need > -L50 then
    local u = a + h - l - g
    if need == 0 then return u < 0 end
    return u + need <= 0
  end
  if need == 0 then return sgn(a, h, -l, -g) < 0 end
  return sgn(a, h, need, -l, -g) <= 0
end
local function over(c, s)
  local a, h, l = s[1], s[2], c.lim
  local g = c.g and s[3] or 0
  if a < L50 and a > -L50 and h < L50 and h > -L50 and g < L50 and g > -L50 and l < L50 and l > -L50 then
    return a + h - l - g > 0
  end
  return sgn(a, h, -l, -g) > 0
end
local function first_failing(p, st, need)
  for i, c in ipairs(p.c) do
    if not room(c, st[i], need[c.m]) then return i end
  end
  return 0
end
-- Adds d = {sc st sr hc ht hr gc gt gr} to the current bucket of every window of p. All new
-- values are computed and checked before anything is written. A bucket's TTL and its index
-- entry are set when it is created (its expiry is a fixed time: 2 end - read_from + 1 h).
-- One bucket is created (rare: once per window and series): end, TTL, index, and the n marks.
local function create_bucket(w, nz, vals)
  local ck = w.ck
  local args = {ck, 'e', w.es}
  for _, m in ipairs(nz) do args[#args + 1] = FNAME[m]; args[#args + 1] = vals[m] end
  if w.e >= LIM then
    call('HSET', unpack(args))
    return false
  end
  local later = false
  local ttl = (w.e - NOW) + (w.e - w.rf) + 3600000
  if ttl < 60000 then ttl = 60000 end
  if w.xk ~= '' then
    if w.rf == w.start then
      -- Readers of a bucket trust it alone unless it is marked n: mark every earlier bucket
      -- still alive, and this one when a later bucket exists already (a clock running ahead).
      local pre = prefix_of(w)
      for _, s in ipairs(call('ZRANGEBYSCORE', w.xk, '-inf', '(' .. w.ss)) do
        local k = pre .. s
        if BK[k] then BK[k].nx = true end
        if call('EXISTS', k) == 1 then call('HSET', k, 'n', '1') end
      end
      if #call('ZRANGEBYSCORE', w.xk, '(' .. w.ss, '+inf', 'LIMIT', '0', '1') > 0 then
        args[#args + 1] = 'n'
        args[#args + 1] = '1'
        later = true
      end
    end
    if call('ZADD', w.xk, w.ss, w.ss) == 1 then
      -- Forget buckets whose keys have surely expired (see the TTL above). Never trim at
      -- read_from: an older plan (a hold growing later, a host whose clock is behind)
      -- still reads buckets before this one.
      call('ZREMRANGEBYSCORE', w.xk, '-inf', '(' .. fmt(w.rf - (w.e - w.rf) - 3600000))
      -- The index lives at least as long as its newest bucket.
      if call('PTTL', w.xk) < ttl then call('PEXPIRE', w.xk, fmt(ttl)) end
    end
  end
  call('HSET', unpack(args))
  call('PEXPIRE', ck, fmt(ttl))
  return later
end
local function add_all(p, d)
  local nz, ds = {}, {}
  for m = 1, 9 do
    if d[m] ~= 0 then nz[#nz + 1] = m; ds[m] = fmt(d[m]) end
  end
  local nn = #nz
  local bs, news = {}, {}
  for i, w in ipairs(p.w) do
    local b = getb(w.ck)
    bs[i] = b
    for j = 1, nn do
      local m = nz[j]
      news[(i - 1) * 9 + m] = add(b[m], d[m])
    end
  end
  -- Checked: now write, and update the cached buckets in place (callers copied what they read).
  for i, w in ipairs(p.w) do
    local b = bs[i]
    local o = (i - 1) * 9
    local created = not b.ex
    for j = 1, nn do
      local m = nz[j]
      b[m] = news[o + m]
    end
    b.ex = true
    if created then
      b.nx = create_bucket(w, nz, ds)
    elseif nn == 1 then
      local m = nz[1]
      call('HINCRBY', w.ck, FNAME[m], ds[m])
    elseif nn > 1 then
      local args = {w.ck}
      for j = 1, nn do
        local m = nz[j]
        args[2 * j] = FNAME[m]
        args[2 * j + 1] = fmt(b[m])
      end
      call('HSET', unpack(args))
    end
  end
end

-- Request records: "{ns}:r:<id>" hash, absent fields = '' (0, or -1 for fc). States: 0 held,
-- 1 committed, 2 released, 3 expired, 4 denied, 5 recorded, 6 granted, 7 adjusted.
-- flags: 1 over_hold, 2 over_limit, 4 after_expiry. p = the plan (JSON, for the client and as a
-- fallback), pi = the id of its flat copy {ns}:p:<pi>.
local RF = {'st', 'sub', 'p', 'h1', 'h2', 'h3', 'u1', 'u2', 'u3', 'x1', 'x2', 'x3', 'ca', 'ea', 'fl', 'm', 'pr',
            'pv', 'fp', 'fc', 'f1', 'f2', 'f3'}
local EMPTY = {__index = function() return '' end}
local function getrec(id)
  local k = B .. 'r:' .. id
  local a = call('HGETALL', k)
  if #a == 0 then return nil, k end
  local r = {}
  for i = 1, #a, 2 do r[a[i]] = a[i + 1] end
  r._id = id
  r._k = k
  return setmetatable(r, EMPTY), k
end
local function flat(r)
  local out = {}
  for _, f in ipairs(RF) do out[#out + 1] = f; out[#out + 1] = r[f] end
  return out
end
-- Writes the changed fields; a settled record expires after RTTL and leaves the deadline index.
local function settle_rec(r, fields, was_held)
  call('HSET', r._k, unpack(fields))
  if RTTL > 0 then call('PEXPIRE', r._k, ARGV[3]) end
  if was_held then call('ZREM', B .. 'dl', r._id) end
end
local function plan_of(r)
  local q = rawget(r, '_plan')
  if q then return q end
  local p
  if r.pi ~= '' then
    local k = B .. r.pi
    p = PLANS[k]
    if not p then
      local a = call('LRANGE', B .. 'p:' .. r.pi, '0', '-1')
      if #a > 0 then p = remember(k, plan_at(a, 1)) end
    end
  end
  if not p then p = plan_json(r.p) end
  rawset(r, '_plan', p)
  return p
end
-- Keeps the flat plan (ARGV[o..]) under {ns}:p:<id> for the hold's later operations. A plan
-- cached by the library remembers until when its key surely exists (an hour of margin for
-- clocks), so the usual reserve does not look. A key gone before that (evicted, flushed) only
-- sends plan_of to the JSON copy in the record.
local function keep_plan(id, p, o)
  if p.kept and NOW < p.kept then return end
  local k = B .. 'p:' .. id
  local left = call('PTTL', k)
  if left == -2 then
    left = (RTTL > 86400000 and RTTL or 86400000) + 86400000
    call('RPUSH', k, unpack(ARGV, o, o + p.n - 1))
    call('PEXPIRE', k, fmt(left))
  end
  p.kept = left >= 0 and NOW + left - 3600000 or LIM
end

-- The ledger: one stream entry per event, id "<seq>-0", in the same script as the change.
-- a = the 9 amounts {sc st sr hc ht hr gc gt gr} (or their text); empty optional fields are
-- left out.
local function emit(ty, id, sub, wk, a, usage, md, model, prov, pv)
  local seq = call('INCR', B .. 'seq')
  LASTSEQ = seq
  if type(a) == 'table' then
    a = sfmt('%d %d %d %d %d %d %d %d %d', a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])
  end
  local args = {B .. 'ledger', fmt(seq) .. '-0', 't', NOWS, 'y', ty, 'i', id, 's', sub, 'a', a, 'w', wk}
  local n = 14
  if model ~= '' then args[n + 1] = 'm'; args[n + 2] = model; n = n + 2 end
  if prov ~= '' then args[n + 1] = 'p'; args[n + 2] = prov; n = n + 2 end
  if pv ~= '' then args[n + 1] = 'v'; args[n + 2] = pv; n = n + 2 end
  if usage ~= '' then args[n + 1] = 'u'; args[n + 2] = usage; n = n + 2 end
  if md ~= '' then args[n + 1] = 'd'; args[n + 2] = md; n = n + 2 end
  call('XADD', unpack(args))
  EV = EV + 1
end
-- The stream is capped by the drain (kDrained), the only one that can let events go.
local function finish() end

-- txn_expire: an expired hold is charged what was consumed, on a limited metric no more than
-- the hold (expiry_charge in store.hpp); the rest is released.
local function expire_rec(r)
  if r.st ~= '0' then return end
  local p = plan_of(r)
  local h = {num(r.h1), num(r.h2), num(r.h3)}
  local u = {num(r.u1), num(r.u2), h[3]}  -- the request counts, as expiry_charge says
  for _, c in ipairs(p.c) do
    if u[c.m] > h[c.m] then u[c.m] = h[c.m] end
  end
  local u1, u2, u3 = u[1], u[2], u[3]
  local d = {u1, u2, u3, -h[1], -h[2], -h[3], 0, 0, 0}
  add_all(p, d)
  r.st = '3'
  r.x1, r.x2, r.x3 = fmt(u1), fmt(u2), fmt(u3)
  settle_rec(r, {'st', '3', 'x1', r.x1, 'x2', r.x2, 'x3', r.x3}, true)
  emit('expire', r._id, r.sub, p.wk, d, '', '', r.m, r.pr, r.pv)
end
local function sweep(max)
  local ids = call('ZRANGEBYSCORE', B .. 'dl', '-inf', NOWS, 'LIMIT', '0', max)
  local n = 0
  for _, id in ipairs(ids) do
    local r = getrec(id)
    if r and r.st == '0' then
      if num(r.ea) <= NOW then expire_rec(r); n = n + 1 end
    else
      call('ZREM', B .. 'dl', id)
    end
  end
  SWEPT = SWEPT + n
  return n
end
-- The reply of an operation that swept first: its last element is how many holds the sweep
-- expired (the client reads alerts for their spend back from the ledger).
local function reply(t)
  t[#t + 1] = SWEPT
  return t
end
local function lv() return call('GET', KEYS[1]) or '1' end
)LUA";

// ARGV[4] id, [5] subject, [6] plan JSON, [7] plan id, [8] limits version, [9..11] amount,
// [12] expires_at, [13] model, [14] provider, [15] metadata, [16] fingerprint, [17] dry run
// ("1"), [18..] the flat plan.
inline constexpr const char* kReserve = R"LUA(
local id = ARGV[4]
local dry = ARGV[17] == '1'
local rk
if not dry then
  sweep('4')
  local r
  r, rk = getrec(id)
  if r then
    local s = r.st
    if s == '5' or s == '6' or s == '7' or r.fp ~= ARGV[16] then finish(); return reply({'C'}) end
    finish()
    return reply({'R', s, r.p, r.h1, r.h2, r.h3, r.ea, r.fc == '' and '-1' or r.fc, r.f1, r.f2, r.f3})
  end
end
if lv() ~= ARGV[8] then finish(); return reply({'S'}) end
local p = plan_arg(ARGV[7], 18)
local need = {num(ARGV[9]), num(ARGV[10]), num(ARGV[11])}
local st = states(p, sums(p))
local f = first_failing(p, st, need)
if f > 0 then
  local s = st[f]
  if not dry then
    call('HSET', rk, 'st', '4', 'sub', ARGV[5], 'p', ARGV[6], 'ca', NOWS, 'ea', ARGV[12], 'm', ARGV[13],
         'pr', ARGV[14], 'fp', ARGV[16], 'fc', fmt(f - 1), 'f1', fmt(s[1]), 'f2', fmt(s[2]), 'f3', fmt(s[3]))
    if RTTL > 0 then call('PEXPIRE', rk, ARGV[3]) end
    emit('deny', id, ARGV[5], p.wk, '0 0 0 0 0 0 0 0 0', '', ARGV[15], ARGV[13], ARGV[14], '')
    finish()
  end
  return reply({'D', f - 1, s[1], s[2], s[3]})
end
if dry then return reply({'A'}) end
local d = {0, 0, 0, need[1], need[2], need[3], 0, 0, 0}
add_all(p, d)
keep_plan(ARGV[7], p, 18)
call('HSET', rk, 'st', '0', 'sub', ARGV[5], 'p', ARGV[6], 'pi', ARGV[7], 'h1', ARGV[9], 'h2', ARGV[10],
     'h3', ARGV[11], 'ca', NOWS, 'ea', ARGV[12], 'm', ARGV[13], 'pr', ARGV[14], 'fp', ARGV[16])
call('ZADD', B .. 'dl', ARGV[12], id)
emit('reserve', id, ARGV[5], p.wk, '0 0 0 ' .. ARGV[9] .. ' ' .. ARGV[10] .. ' ' .. ARGV[11] .. ' 0 0 0', '', ARGV[15],
     ARGV[13], ARGV[14], '')
finish()
return reply({'A'})
)LUA";

// ARGV[4] id, [5..7] delta, [8..10] consumed.
inline constexpr const char* kGrow = R"LUA(
local r = getrec(ARGV[4])
if not r then return {'N'} end
if r.st == '0' and num(r.ea) <= NOW then expire_rec(r) end
if r.st ~= '0' then finish(); return {'OK', 2, r.st, r.h1, r.h2, r.h3, -1, 0, 0, 0, ''} end
local p = plan_of(r)
local delta = {num(ARGV[5]), num(ARGV[6]), num(ARGV[7])}
local cons = {num(ARGV[8]), num(ARGV[9]), num(ARGV[10])}
local status, fc, fs = 0, -1, {0, 0, 0}
local nz = delta[1] ~= 0 or delta[2] ~= 0 or delta[3] ~= 0
local fields = {}
if nz then
  local st = states(p, sums(p))
  local f = first_failing(p, st, delta)
  if f > 0 then
    status, fc, fs = 1, f - 1, st[f]
    if num(r.u1) == cons[1] and num(r.u2) == cons[2] and num(r.u3) == cons[3] then
      return {'OK', 1, r.st, r.h1, r.h2, r.h3, fc, fs[1], fs[2], fs[3], r.p}
    end
  else
    local h1, h2, h3 = add(num(r.h1), delta[1]), add(num(r.h2), delta[2]), add(num(r.h3), delta[3])
    add_all(p, {0, 0, 0, delta[1], delta[2], delta[3], 0, 0, 0})
    r.h1, r.h2, r.h3 = fmt(h1), fmt(h2), fmt(h3)
    fields = {'h1', r.h1, 'h2', r.h2, 'h3', r.h3}
  end
end
local ev = {0, 0, 0, 0, 0, 0, 0, 0, 0}
if status == 0 and nz then ev[4], ev[5], ev[6] = delta[1], delta[2], delta[3] end
r.u1, r.u2, r.u3 = fmt(cons[1]), fmt(cons[2]), fmt(cons[3])
local n = #fields
fields[n + 1] = 'u1'; fields[n + 2] = r.u1; fields[n + 3] = 'u2'; fields[n + 4] = r.u2
fields[n + 5] = 'u3'; fields[n + 6] = r.u3
call('HSET', r._k, unpack(fields))
emit('consume', r._id, r.sub, p.wk, ev, '', '{"consumed":' .. r.u1 .. ',"consumed_tokens":' .. r.u2 .. '}', r.m, r.pr,
     r.pv)
finish()
return {'OK', status, r.st, r.h1, r.h2, r.h3, fc, fs[1], fs[2], fs[3], status == 1 and r.p or ''}
)LUA";

// ARGV[4] id, [5] 'c' commit | 'r' release, [6..8] charge, [9] usage, [10] model,
// [11] provider, [12] price version, [13] metadata, [14] fingerprint.
inline constexpr const char* kSettle = R"LUA(
local r = getrec(ARGV[4])
if not r then return {'N'} end
local commit = ARGV[5] == 'c'
local s = r.st
local none = {0, 0, 0, 0, 0, 0, 0, 0, 0}
if s == '1' then
  if not commit then return {'C', s, 'release it'} end
  if r.fp ~= ARGV[14] then return {'C', s, 'commit it again with a different amount'} end
  return {'OK', 1, none, {}, flat(r)}
elseif s == '2' then
  if commit then return {'C', s, 'commit it'} end
  return {'OK', 1, none, {}, flat(r)}
elseif s == '3' then
  if not commit then return {'OK', 1, none, {}, flat(r)} end
elseif s == '5' and commit and r.fp == ARGV[14] then
  return {'OK', 1, none, {}, flat(r)}  -- a fail-open commit, written as a record: a replay
elseif s ~= '0' then
  return {'C', s, commit and 'commit it' or 'release it'}
end
local p = plan_of(r)
local view = current_view(p)
local S = sums(view)
local before = states(view, S)
local h = {num(r.h1), num(r.h2), num(r.h3)}
local ch = {num(ARGV[6]), num(ARGV[7]), num(ARGV[8])}
local dsp, dh, rel = {0, 0, 0}, {0, 0, 0}, {0, 0, 0}
local fl = num(r.fl)
local oh, ae = fl % 2 == 1, floor(fl / 4) % 2 == 1
local em, ep, ev = r.m, r.pr, r.pv
local usage = ''
local fields
if s == '3' then
  local x = {num(r.x1), num(r.x2), num(r.x3)}
  for m = 1, 3 do dsp[m] = add(ch[m], -x[m]) end
  ae = true
else
  for m = 1, 3 do dh[m] = -h[m]; rel[m] = h[m] end
  if commit then
    for m = 1, 3 do
      dsp[m] = ch[m]
      rel[m] = h[m] - ch[m]
      if rel[m] < 0 then rel[m] = 0 end
    end
  end
end
if commit then
  r.st = '1'
  oh = ch[1] > h[1] or ch[2] > h[2]
  r.x1, r.x2, r.x3 = ARGV[6], ARGV[7], ARGV[8]
  r.fp = ARGV[14]
  if ARGV[10] ~= '' then r.m = ARGV[10] end
  if ARGV[11] ~= '' then r.pr = ARGV[11] end
  r.pv = ARGV[12]
  usage = ARGV[9]
  em, ep, ev = r.m, r.pr, r.pv
  fields = {'st', '1', 'x1', r.x1, 'x2', r.x2, 'x3', r.x3, 'fp', r.fp, 'm', r.m, 'pr', r.pr, 'pv', r.pv}
else
  r.st = '2'
  fields = {'st', '2'}
end
local d = {dsp[1], dsp[2], dsp[3], dh[1], dh[2], dh[3], 0, 0, 0}
-- After: the reservation's buckets inside today's view move by d, the others do not (what
-- txn_settle computes); every sum is checked before anything is written.
local SA = {}
for i, w in ipairs(view.w) do
  if p.w[i].start >= w.rf then
    local b = S[i]
    SA[i] = {add(b[1], d[1]), add(b[2], d[2]), add(b[3], d[3]), add(b[4], d[4]), add(b[5], d[5]), add(b[6], d[6]),
             b[7], b[8], b[9]}
  else
    SA[i] = S[i]
  end
end
local after = states(view, SA)
local ol = false
if commit then
  for i, c in ipairs(view.c) do
    if over(c, after[i]) then ol = true end
  end
end
add_all(p, d)
r.fl = fmt((oh and 1 or 0) + (ol and 2 or 0) + (ae and 4 or 0))
fields[#fields + 1] = 'fl'
fields[#fields + 1] = r.fl
settle_rec(r, fields, s == '0')
emit(commit and 'commit' or 'release', r._id, r.sub, p.wk, d, usage, ARGV[13], em, ep, ev)
finish()
return {'OK', 0, {rel[1], rel[2], rel[3]}, flat_states(before), flat(r), flat_states(after)}
)LUA";

// ARGV[4] id, [5] event type, [6] target state, [7] subject, [8] plan JSON, [9] limits version,
// [10..12] spent, [13..15] granted, [16] usage, [17] model, [18] provider, [19] price version,
// [20] metadata, [21] fingerprint, [22..] the flat plan.
inline constexpr const char* kDirect = R"LUA(
local id = ARGV[4]
sweep('4')
local r, rk = getrec(id)
if r then
  finish()
  if r.st ~= ARGV[6] or r.fp ~= ARGV[21] then return reply({'C'}) end
  return reply({'OK', 1, {}, flat(r)})
end
if lv() ~= ARGV[9] then finish(); return reply({'S'}) end
local p = plan_at(ARGV, 22)
local before = states(p, sums(p))
local sp = {num(ARGV[10]), num(ARGV[11]), num(ARGV[12])}
local gr = {num(ARGV[13]), num(ARGV[14]), num(ARGV[15])}
local d = {sp[1], sp[2], sp[3], 0, 0, 0, gr[1], gr[2], gr[3]}
local ol = false
if ARGV[5] ~= 'grant' then
  for i, c in ipairs(p.c) do
    local b = before[i]
    local g = b[3]
    if c.g then g = add(g, gr[c.m]) end
    if over(c, {add(b[1], sp[c.m]), b[2], g}) then ol = true end
  end
end
add_all(p, d)
local rec = {st = ARGV[6], sub = ARGV[7], p = ARGV[8], x1 = ARGV[10], x2 = ARGV[11], x3 = ARGV[12], ca = NOWS,
             m = ARGV[17], pr = ARGV[18], pv = ARGV[19], fp = ARGV[21], fl = ol and '2' or '0'}
local fields = {}
for k, v in pairs(rec) do fields[#fields + 1] = k; fields[#fields + 1] = v end
call('HSET', rk, unpack(fields))
if RTTL > 0 then call('PEXPIRE', rk, ARGV[3]) end
emit(ARGV[5], id, ARGV[7], p.wk, d, ARGV[16], ARGV[20], ARGV[17], ARGV[18], ARGV[19])
finish()
return reply({'OK', 0, flat_states(before), flat(setmetatable(rec, EMPTY))})
)LUA";

// ARGV[4] max.
inline constexpr const char* kExpire = R"LUA(
local n = sweep(ARGV[4])
finish()
return n
)LUA";

// ARGV[4..] the flat plan.
inline constexpr const char* kRead = R"LUA(
local p = plan_at(ARGV, 4)
return flat_states(states(p, sums(p)))
)LUA";

// ARGV[4..] bucket keys: their hashes (HGETALL each), for scan_counters.
inline constexpr const char* kBuckets = R"LUA(
local out = {}
for i = 4, #ARGV do out[#out + 1] = call('HGETALL', ARGV[i]) end
return out
)LUA";

// The key layout guard, run by the limit scripts (a process loads the limits when it starts):
// a namespace written by key layout 1 (counters as strings, no "{ns}:layout") is refused.
inline constexpr const char* kLayout = R"LUA(
local function layout()
  local l = call('GET', B .. 'layout')
  if l == '2' then return end
  if l or call('EXISTS', B .. 'seq') == 1 then
    error({err = 'BUDGET_LAYOUT the namespace ' .. B .. ' was written with Redis key layout ' .. (l or '1') ..
                 '; this version uses layout 2 (see docs/redis.md: upgrading)'})
  end
  call('SET', B .. 'layout', '2')
end
layout()
)LUA";

// The read-only form of the guard (load_limits_ro, a no-writes function that also runs when
// Redis is out of memory): a namespace not marked yet is left to the writing form.
inline constexpr const char* kLayoutRead = R"LUA(
local l = call('GET', B .. 'layout')
if l ~= '2' then
  if l or call('EXISTS', B .. 'seq') == 1 then
    error({err = 'BUDGET_LAYOUT the namespace ' .. B .. ' was written with Redis key layout ' .. (l or '1') ..
                 '; this version uses layout 2 (see docs/redis.md: upgrading)'})
  end
  error({err = 'BUDGET_UNMARKED the namespace has no key layout mark yet'})
end
)LUA";

inline constexpr const char* kLoadLimits = R"LUA(
return {lv(), call('HGETALL', B .. 'limits')}
)LUA";

// ARGV[4] key, [5] encoded limit. Putting a limit exactly as it is keeps the version (plans made
// with it stay valid: a process starting with the same limits does not make others' plans stale).
inline constexpr const char* kPutLimit = R"LUA(
if call('HGET', B .. 'limits', ARGV[4]) == ARGV[5] and call('EXISTS', B .. 'lv') == 1 then return tonumber(lv()) end
if call('EXISTS', B .. 'lv') == 0 then call('SET', B .. 'lv', '1') end
call('HSET', B .. 'limits', ARGV[4], ARGV[5])
return call('INCR', B .. 'lv')
)LUA";

// ARGV[4] key.
inline constexpr const char* kRemoveLimit = R"LUA(
local n = call('HDEL', B .. 'limits', ARGV[4])
if n == 1 then
  if call('EXISTS', B .. 'lv') == 0 then call('SET', B .. 'lv', '1') end
  call('INCR', B .. 'lv')
end
return {n, lv()}
)LUA";

// ARGV[4] the last seq copied to the ledger sink: advances the drained watermark, then caps the
// stream to about MAXLEN entries, never trimming an event the drain has not copied.
inline constexpr const char* kDrained = R"LUA(
local d = tonumber(call('GET', B .. 'drained') or '0')
if tonumber(ARGV[4]) > d then
  call('SET', B .. 'drained', ARGV[4])
  d = tonumber(ARGV[4])
end
local L = B .. 'ledger'
if MAXLEN > 0 and call('XLEN', L) > MAXLEN then
  local minid = tonumber(call('GET', B .. 'seq') or '0') - MAXLEN + 1
  if d + 1 < minid then minid = d + 1 end
  if minid > 1 then call('XTRIM', L, 'MINID', '~', fmt(minid)) end
end
return 1
)LUA";

}  // namespace budget::detail::redis_lua
