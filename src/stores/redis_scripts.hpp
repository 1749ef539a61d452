// The Redis store's server-side scripts (internal). Each operation is ONE script call: the
// prelude (shared helpers) followed by the operation's body. They mirror src/stores/txn_ops.cpp
// exactly; the conformance suite keeps them in agreement.
//
// Calling convention: KEYS[1] = "{ns}:lv" (the hash tag of the namespace; every key a script
// touches starts with "{ns}:", so one script touches one Redis Cluster slot).
// ARGV[1] = now (ms), ARGV[2] = stream cap, ARGV[3] = TTL of settled request records (ms),
// then the operation's arguments.
//
// Numbers: Lua numbers are doubles. Every amount, limit and counter a script reads must be
// below 2^53 in magnitude (checked: BUDGET_OVERFLOW otherwise, raised before any write), sums
// are checked to stay below 2^53, and comparisons (room, over-limit) use an exact split sum,
// so every result is exact. Numbers are written with string.format('%d'), never tostring.
#pragma once

namespace budget::detail::redis_lua {

inline constexpr const char* kPrelude = R"LUA(
local B = string.sub(KEYS[1], 1, -3)
local NOW = tonumber(ARGV[1])
local MAXLEN = tonumber(ARGV[2])
local RTTL = tonumber(ARGV[3])
local LIM = 9007199254740992
local T26 = 67108864
local FOREVER = '9223372036854775807'
local EV = 0
local LASTSEQ = 0

local function ovf(what)
  error({err = 'BUDGET_OVERFLOW ' .. what .. ' reached 2^53, the exact range of the Redis store'})
end
local function fmt(x) return string.format('%d', x) end
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
    local xh = math.floor(x / T26)
    h = h + xh
    l = l + (x - xh * T26)
  end
  local c = math.floor(l / T26)
  h = h + c
  l = l - c * T26
  if h > 0 then return 1 elseif h < 0 then return -1 elseif l > 0 then return 1 end
  return 0
end

-- Plans (JSON written by the C++ side): windows [scope, window, start, end, read_from],
-- checks [window, metric, limit, grantable, ...].
local function decode_plan(text)
  local j = cjson.decode(text)
  local p = {w = {}, c = {}}
  for i, w in ipairs(j.w) do
    local e = w[4]
    local win = w[2]
    p.w[i] = {key = w[1] .. '|' .. win .. '|' .. fmt(w[3]), series = w[1] .. '|' .. win, win = win, start = w[3], rf = w[5],
              e = e, estr = (e >= LIM) and FOREVER or fmt(e),
              single = (e >= LIM) or string.sub(win, 1, 7) == 'custom:'}
  end
  for i, c in ipairs(j.c) do p.c[i] = {w = c[1] + 1, m = c[2] + 1, lim = c[3], g = c[4]} end
  return p
end

-- current_view (txn_ops.cpp): the plan's windows as they stand at NOW; a rolling window
-- slides forward, a calendar window stays the one the reservation was charged to.
local function current_view(p)
  local v = {w = {}, c = p.c}
  for i, w in ipairs(p.w) do
    v.w[i] = w
    if string.sub(w.win, 1, 8) == 'rolling:' and w.e > w.start then
      local g = w.e - w.start
      local q = math.floor(NOW / g)
      local r = NOW - q * g
      if r < 0 then q = q - 1 elseif r >= g then q = q + 1 end
      local cur = q * g
      if cur > w.start then
        v.w[i] = {key = w.series .. '|' .. fmt(cur), series = w.series, win = w.win, start = cur,
                  rf = w.rf + (cur - w.start), e = cur + g, estr = fmt(cur + g), single = w.single}
      end
    end
  end
  return v
end

-- Counter buckets: "{ns}:c:<scope>|<window>|<start>" = "end sc st sr hc ht hr gc gt gr";
-- "{ns}:x:<scope>|<window>" indexes the bucket starts of a series (zset).
local BK = {}
local function parse_bucket(v)
  local t = {0, 0, 0, 0, 0, 0, 0, 0, 0}
  if not v then return t end
  local i = 0
  for x in string.gmatch(v, '%S+') do
    if i > 0 then t[i] = num(x) end
    i = i + 1
  end
  return t
end
local function load(keys)
  local miss, seen = {}, {}
  for _, k in ipairs(keys) do
    if not BK[k] and not seen[k] then miss[#miss + 1] = k; seen[k] = true end
  end
  if #miss == 0 then return end
  local rk = {}
  for i, k in ipairs(miss) do rk[i] = B .. 'c:' .. k end
  local vals = redis.call('MGET', unpack(rk))
  for i, k in ipairs(miss) do BK[k] = parse_bucket(vals[i]) end
end
-- Per window: counters summed over every bucket of the series starting at or after read_from.
local function sums(p)
  local keys, ranges = {}, {}
  for i, w in ipairs(p.w) do
    if w.single then
      keys[#keys + 1] = w.key
    else
      local starts = redis.call('ZRANGEBYSCORE', B .. 'x:' .. w.series, fmt(w.rf), '+inf')
      local ks = {}
      for _, s in ipairs(starts) do ks[#ks + 1] = w.series .. '|' .. s; keys[#keys + 1] = ks[#ks] end
      ranges[i] = ks
    end
  end
  load(keys)
  local out = {}
  for i, w in ipairs(p.w) do
    if w.single then
      out[i] = BK[w.key]
    else
      local acc = {0, 0, 0, 0, 0, 0, 0, 0, 0}
      for _, k in ipairs(ranges[i]) do
        local b = BK[k]
        for m = 1, 9 do acc[m] = add(acc[m], b[m]) end
      end
      out[i] = acc
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
-- has_room (src/stores/common.cpp): spent + held + need <= limit (+ granted); need 0 needs some room.
local function room(c, s, need)
  local g = c.g and s[3] or 0
  if need == 0 then return sgn(s[1], s[2], -c.lim, -g) < 0 end
  return sgn(s[1], s[2], need, -c.lim, -g) <= 0
end
local function over(c, s)
  local g = c.g and s[3] or 0
  return sgn(s[1], s[2], -c.lim, -g) > 0
end
local function first_failing(p, st, need)
  for i, c in ipairs(p.c) do
    if not room(c, st[i], need[c.m]) then return i end
  end
  return 0
end
-- Adds d = {sc st sr hc ht hr gc gt gr} to the current bucket of every window of p. All new
-- values are computed and checked before anything is written.
local function add_all(p, d)
  local keys = {}
  for i, w in ipairs(p.w) do keys[i] = w.key end
  load(keys)
  local news = {}
  for i, w in ipairs(p.w) do
    local b, n = BK[w.key], {}
    for m = 1, 9 do n[m] = add(b[m], d[m]) end
    news[i] = n
  end
  for i, w in ipairs(p.w) do
    local n = news[i]
    BK[w.key] = n
    local parts = {w.estr}
    for m = 1, 9 do parts[m + 1] = fmt(n[m]) end
    local ck = B .. 'c:' .. w.key
    if w.e >= LIM then
      redis.call('SET', ck, table.concat(parts, ' '))
    else
      local ttl = (w.e - NOW) + (w.e - w.rf) + 3600000
      if ttl < 60000 then ttl = 60000 end
      redis.call('SET', ck, table.concat(parts, ' '), 'PX', fmt(ttl))
      if not w.single then
        local xk = B .. 'x:' .. w.series
        if redis.call('ZADD', xk, fmt(w.start), fmt(w.start)) == 1 then
          -- Forget buckets whose keys have surely expired (see the TTL above). Never trim at
          -- read_from: an older plan (a hold growing later, a host whose clock is behind)
          -- still reads buckets before this one.
          redis.call('ZREMRANGEBYSCORE', xk, '-inf', '(' .. fmt(w.rf - (w.e - w.rf) - 3600000))
          -- A new bucket: the index lives at least as long as it. (An existing bucket was
          -- indexed with a TTL covering it already.)
          if redis.call('PTTL', xk) < ttl then redis.call('PEXPIRE', xk, fmt(ttl)) end
        end
      end
    end
  end
end

-- Request records: "{ns}:r:<id>" hash. States: 0 held, 1 committed, 2 released, 3 expired,
-- 4 denied, 5 recorded, 6 granted, 7 adjusted. flags: 1 over_hold, 2 over_limit, 4 after_expiry.
local RF = {'st', 'sub', 'p', 'h1', 'h2', 'h3', 'u1', 'u2', 'u3', 'x1', 'x2', 'x3', 'ca', 'ea', 'fl', 'm', 'pr',
            'pv', 'fp', 'fc', 'f1', 'f2', 'f3'}
local function getrec(id)
  local a = redis.call('HGETALL', B .. 'r:' .. id)
  if #a == 0 then return nil end
  local r = {id = id}
  for i = 1, #a, 2 do r[a[i]] = a[i + 1] end
  for _, f in ipairs(RF) do if not r[f] then r[f] = '' end end
  return r
end
local function newrec(id, sub, ptext)
  return {id = id, st = '0', sub = sub, p = ptext, h1 = '0', h2 = '0', h3 = '0', u1 = '0', u2 = '0', u3 = '0',
          x1 = '0', x2 = '0', x3 = '0', ca = fmt(NOW), ea = '0', fl = '0', m = '', pr = '', pv = '', fp = '',
          fc = '-1', f1 = '0', f2 = '0', f3 = '0'}
end
local function flat(r)
  local out = {}
  for _, f in ipairs(RF) do out[#out + 1] = f; out[#out + 1] = r[f] end
  return out
end
local function put_rec(r, was_held)
  local args = {}
  for _, f in ipairs(RF) do args[#args + 1] = f; args[#args + 1] = r[f] end
  local k = B .. 'r:' .. r.id
  redis.call('HSET', k, unpack(args))
  if r.st == '0' then
    redis.call('ZADD', B .. 'dl', r.ea, r.id)
  else
    if RTTL > 0 then redis.call('PEXPIRE', k, fmt(RTTL)) end
    if was_held then redis.call('ZREM', B .. 'dl', r.id) end
  end
end
local function plan_of(r)
  if not r._plan then r._plan = decode_plan(r.p) end
  return r._plan
end
local function triple(r, f) return {num(r[f .. '1']), num(r[f .. '2']), num(r[f .. '3'])} end
local function set_triple(r, f, t) r[f .. '1'] = fmt(t[1]); r[f .. '2'] = fmt(t[2]); r[f .. '3'] = fmt(t[3]) end

-- The ledger: one stream entry per event, id "<seq>-0", in the same script as the change.
local function emit(ty, r, p, a, usage, md, model, prov, pv)
  local seq = redis.call('INCR', B .. 'seq')
  LASTSEQ = seq
  local wk = {}
  for i, w in ipairs(p.w) do wk[i] = w.key end
  local am = {}
  for i = 1, 9 do am[i] = fmt(a[i]) end
  redis.call('XADD', B .. 'ledger', fmt(seq) .. '-0', 't', fmt(NOW), 'y', ty, 'i', r.id, 's', r.sub, 'm', model,
             'p', prov, 'v', pv, 'u', usage, 'a', table.concat(am, ' '), 'w', table.concat(wk, '\n'), 'd', md)
  EV = EV + 1
end
-- Caps the stream, never trimming an event the drain has not copied.
local function finish()
  if EV == 0 or MAXLEN <= 0 then return end
  local L = B .. 'ledger'
  if redis.call('XLEN', L) <= MAXLEN then return end
  local d = tonumber(redis.call('GET', B .. 'drained') or '0')
  local minid = LASTSEQ - MAXLEN + 1
  if d + 1 < minid then minid = d + 1 end
  if minid > 1 then redis.call('XTRIM', L, 'MINID', '~', fmt(minid)) end
end

-- txn_expire: an expired hold is charged what was consumed; the rest is released.
local function expire_rec(r)
  if r.st ~= '0' then return end
  local p = plan_of(r)
  local h, u = triple(r, 'h'), triple(r, 'u')
  local d = {u[1], u[2], u[3], -h[1], -h[2], -h[3], 0, 0, 0}
  add_all(p, d)
  r.st = '3'
  set_triple(r, 'x', u)
  emit('expire', r, p, d, '', '', r.m, r.pr, r.pv)
  put_rec(r, true)
end
local function sweep(max)
  local ids = redis.call('ZRANGEBYSCORE', B .. 'dl', '-inf', fmt(NOW), 'LIMIT', 0, max)
  local n = 0
  for _, id in ipairs(ids) do
    local r = getrec(id)
    if r and r.st == '0' then
      if num(r.ea) <= NOW then expire_rec(r); n = n + 1 end
    else
      redis.call('ZREM', B .. 'dl', id)
    end
  end
  return n
end
local function lv() return redis.call('GET', B .. 'lv') or '1' end
)LUA";

// ARGV[4] id, [5] subject, [6] plan, [7] limits version, [8..10] amount, [11] expires_at,
// [12] model, [13] provider, [14] metadata, [15] fingerprint, [16] dry run ("1").
inline constexpr const char* kReserve = R"LUA(
local id = ARGV[4]
local dry = ARGV[16] == '1'
if not dry then
  sweep(4)
  local r = getrec(id)
  if r then
    local s = r.st
    if s == '5' or s == '6' or s == '7' or r.fp ~= ARGV[15] then finish(); return {'C'} end
    finish()
    return {'R', s, r.p, r.h1, r.h2, r.h3, r.ea, r.fc, r.f1, r.f2, r.f3}
  end
end
if lv() ~= ARGV[7] then finish(); return {'S'} end
local p = decode_plan(ARGV[6])
local need = {num(ARGV[8]), num(ARGV[9]), num(ARGV[10])}
local st = states(p, sums(p))
local f = first_failing(p, st, need)
if f > 0 then
  if not dry then
    local r = newrec(id, ARGV[5], ARGV[6])
    r.st = '4'; r.ea = ARGV[11]; r.m = ARGV[12]; r.pr = ARGV[13]; r.fp = ARGV[15]
    r.fc = fmt(f - 1); r.f1 = fmt(st[f][1]); r.f2 = fmt(st[f][2]); r.f3 = fmt(st[f][3])
    emit('deny', r, p, {0, 0, 0, 0, 0, 0, 0, 0, 0}, '', ARGV[14], r.m, r.pr, r.pv)
    put_rec(r, false)
    finish()
  end
  return {'D', f - 1, st[f][1], st[f][2], st[f][3]}
end
if dry then return {'A'} end
local d = {0, 0, 0, need[1], need[2], need[3], 0, 0, 0}
add_all(p, d)
local r = newrec(id, ARGV[5], ARGV[6])
r.ea = ARGV[11]; r.m = ARGV[12]; r.pr = ARGV[13]; r.fp = ARGV[15]
set_triple(r, 'h', need)
emit('reserve', r, p, d, '', ARGV[14], r.m, r.pr, r.pv)
put_rec(r, false)
finish()
return {'A'}
)LUA";

// ARGV[4] id, [5..7] delta, [8..10] consumed.
inline constexpr const char* kGrow = R"LUA(
local r = getrec(ARGV[4])
if not r then return {'N'} end
local p = plan_of(r)
if r.st == '0' and num(r.ea) <= NOW then expire_rec(r) end
if r.st ~= '0' then finish(); return {'OK', 2, r.st, r.h1, r.h2, r.h3, -1, 0, 0, 0, ''} end
local delta = {num(ARGV[5]), num(ARGV[6]), num(ARGV[7])}
local cons = {num(ARGV[8]), num(ARGV[9]), num(ARGV[10])}
local status, fc, fs = 0, -1, {0, 0, 0}
local nz = delta[1] ~= 0 or delta[2] ~= 0 or delta[3] ~= 0
if nz then
  local st = states(p, sums(p))
  local f = first_failing(p, st, delta)
  if f > 0 then
    status, fc, fs = 1, f - 1, st[f]
    local u = triple(r, 'u')
    if u[1] == cons[1] and u[2] == cons[2] and u[3] == cons[3] then
      return {'OK', 1, r.st, r.h1, r.h2, r.h3, fc, fs[1], fs[2], fs[3], r.p}
    end
  else
    add_all(p, {0, 0, 0, delta[1], delta[2], delta[3], 0, 0, 0})
    local h = triple(r, 'h')
    set_triple(r, 'h', {add(h[1], delta[1]), add(h[2], delta[2]), add(h[3], delta[3])})
  end
end
local ev = {0, 0, 0, 0, 0, 0, 0, 0, 0}
if status == 0 and nz then ev[4], ev[5], ev[6] = delta[1], delta[2], delta[3] end
set_triple(r, 'u', cons)
emit('consume', r, p, ev, '', '{"consumed":' .. r.u1 .. ',"consumed_tokens":' .. r.u2 .. '}', r.m, r.pr, r.pv)
put_rec(r, false)
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
elseif s ~= '0' then
  return {'C', s, commit and 'commit it' or 'release it'}
end
local p = plan_of(r)
local view = current_view(p)
local before = states(view, sums(view))
local h = triple(r, 'h')
local ch = {num(ARGV[6]), num(ARGV[7]), num(ARGV[8])}
local dsp, dh, rel = {0, 0, 0}, {0, 0, 0}, {0, 0, 0}
local fl = num(r.fl)
local oh, ae = fl % 2 == 1, math.floor(fl / 4) % 2 == 1
local em, ep, ev = r.m, r.pr, r.pv
local usage = ''
if s == '3' then
  local x = triple(r, 'x')
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
  set_triple(r, 'x', ch)
  r.fp = ARGV[14]
  if ARGV[10] ~= '' then r.m = ARGV[10] end
  if ARGV[11] ~= '' then r.pr = ARGV[11] end
  r.pv = ARGV[12]
  usage = ARGV[9]
  em, ep, ev = r.m, r.pr, r.pv
else
  r.st = '2'
end
local d = {dsp[1], dsp[2], dsp[3], dh[1], dh[2], dh[3], 0, 0, 0}
add_all(p, d)
local after = states(view, sums(view))
local ol = false
if commit then
  for i, c in ipairs(view.c) do
    if over(c, after[i]) then ol = true end
  end
end
r.fl = fmt((oh and 1 or 0) + (ol and 2 or 0) + (ae and 4 or 0))
emit(commit and 'commit' or 'release', r, p, d, usage, ARGV[13], em, ep, ev)
put_rec(r, s == '0')
finish()
return {'OK', 0, {rel[1], rel[2], rel[3]}, flat_states(before), flat(r), flat_states(after)}
)LUA";

// ARGV[4] id, [5] event type, [6] target state, [7] subject, [8] plan, [9] limits version,
// [10..12] spent, [13..15] granted, [16] usage, [17] model, [18] provider, [19] price version,
// [20] metadata, [21] fingerprint.
inline constexpr const char* kDirect = R"LUA(
local id = ARGV[4]
sweep(4)
local r = getrec(id)
if r then
  finish()
  if r.st ~= ARGV[6] or r.fp ~= ARGV[21] then return {'C'} end
  return {'OK', 1, {}, flat(r)}
end
if lv() ~= ARGV[9] then finish(); return {'S'} end
local p = decode_plan(ARGV[8])
local before = states(p, sums(p))
local sp = {num(ARGV[10]), num(ARGV[11]), num(ARGV[12])}
local gr = {num(ARGV[13]), num(ARGV[14]), num(ARGV[15])}
local d = {sp[1], sp[2], sp[3], 0, 0, 0, gr[1], gr[2], gr[3]}
add_all(p, d)
r = newrec(id, ARGV[7], ARGV[8])
r.st = ARGV[6]
set_triple(r, 'x', sp)
r.m = ARGV[17]; r.pr = ARGV[18]; r.pv = ARGV[19]; r.fp = ARGV[21]
if ARGV[5] ~= 'grant' then
  local ol = false
  for i, c in ipairs(p.c) do
    local b = before[i]
    local g = b[3]
    if c.g then g = add(g, gr[c.m]) end
    if over(c, {add(b[1], sp[c.m]), b[2], g}) then ol = true end
  end
  if ol then r.fl = '2' end
end
emit(ARGV[5], r, p, d, ARGV[16], ARGV[20], r.m, r.pr, r.pv)
put_rec(r, false)
finish()
return {'OK', 0, flat_states(before), flat(r)}
)LUA";

// ARGV[4] max.
inline constexpr const char* kExpire = R"LUA(
local n = sweep(tonumber(ARGV[4]))
finish()
return n
)LUA";

// ARGV[4] plan.
inline constexpr const char* kRead = R"LUA(
local p = decode_plan(ARGV[4])
return flat_states(states(p, sums(p)))
)LUA";

inline constexpr const char* kLoadLimits = R"LUA(
return {lv(), redis.call('HGETALL', B .. 'limits')}
)LUA";

// ARGV[4] key, [5] encoded limit.
inline constexpr const char* kPutLimit = R"LUA(
if redis.call('EXISTS', B .. 'lv') == 0 then redis.call('SET', B .. 'lv', '1') end
redis.call('HSET', B .. 'limits', ARGV[4], ARGV[5])
return redis.call('INCR', B .. 'lv')
)LUA";

// ARGV[4] key.
inline constexpr const char* kRemoveLimit = R"LUA(
local n = redis.call('HDEL', B .. 'limits', ARGV[4])
if n == 1 then
  if redis.call('EXISTS', B .. 'lv') == 0 then redis.call('SET', B .. 'lv', '1') end
  redis.call('INCR', B .. 'lv')
end
return {n, lv()}
)LUA";

// ARGV[4] the last seq copied to the ledger sink: advances the drained watermark.
inline constexpr const char* kDrained = R"LUA(
local d = tonumber(redis.call('GET', B .. 'drained') or '0')
if tonumber(ARGV[4]) > d then redis.call('SET', B .. 'drained', ARGV[4]) end
return 1
)LUA";

}  // namespace budget::detail::redis_lua
